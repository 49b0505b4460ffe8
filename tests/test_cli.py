"""`trl-nft` as a user meets it: the installed command, `--help`, recipes by name, errors for bad options."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from trl_nft import NFTConfig, cli, precision
from trl_nft.math_recipe import script as math_script
from trl_nft.math_recipe.script import ScriptArguments

CONSOLE_SCRIPT = Path(sys.executable).with_name("trl-nft")


def run_command(*args: str) -> subprocess.CompletedProcess:
    assert CONSOLE_SCRIPT.exists(), f"{CONSOLE_SCRIPT} is missing: `pip install -e .` installs the console script"
    return subprocess.run([str(CONSOLE_SCRIPT), *args], capture_output=True, text=True, timeout=300)


def nft_own_fields():
    own = NFTConfig.__dict__["__annotations__"]
    return [spec for spec in dataclasses.fields(NFTConfig) if spec.name in own]


def test_installed_command_lists_script_and_nft_options_first_with_their_help():
    result = run_command("train", "--help")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    lines = text.splitlines()
    assert lines[0].startswith("usage: trl-nft train")
    # Every option is listed with its help text, but the script's and NFT's own lead (TRL's dump buries them).
    assert text.index("--neg_weight") < text.index("--learning_rate") < text.index("--adam_beta1")
    assert "--neg_weight" in "\n".join(lines[:150])
    for spec in dataclasses.fields(NFTConfig):
        if spec.init:
            assert f"--{spec.name} " in text, spec.name
    flat = " ".join(text.split())
    for spec in list(dataclasses.fields(ScriptArguments)) + nft_own_fields():
        assert f"--{spec.name} " in text, spec.name
        first_words = " ".join(spec.metadata["help"].split()[:6])
        assert first_words in flat, f"help text of --{spec.name} is missing"
    # Script and NFT options come before the TRL ones, and the way to see all of them is named.
    assert text.index("--neg_weight") < text.index("--learning_rate")
    assert "--help-all" in text


def test_help_all_lists_every_trl_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.parse_train_args(["--help-all"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--gradient_checkpointing", "--vllm_gpu_memory_utilization", "--lora_alpha", "--neg_weight",
                   "--max_prompt_length"):
        assert option in text


def test_missing_model_is_named_plainly(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.parse_train_args(["--max_steps", "1", "--use_cpu", "true"])
    assert exit_info.value.code == 2
    assert "--model_name_or_path is required" in capsys.readouterr().err


def test_recipes_are_listed_and_resolved_by_name():
    listing = run_command("recipes").stdout
    packaged = sorted(path.stem for path in (Path(cli.__file__).parent / "math_recipe" / "recipes").glob("*.yaml"))
    assert len(packaged) >= 3 and all(name in listing for name in packaged)
    script_args, config, model_args = cli.parse_train_args(
        ["--recipe", "qwen2.5-math-7b", "--bf16", "false", "--use_vllm", "false", "--use_cpu", "true"]
    )
    assert model_args.model_name_or_path == "Qwen/Qwen2.5-Math-7B"
    assert config.num_generations == 16 and config.dynamic_sampling
    assert script_args.dataset_name == "dapo-math-17k"


def test_command_line_overrides_the_recipe():
    _, config, model_args = cli.parse_train_args(
        ["--recipe", "qwen2.5-math-7b", "--bf16", "false", "--use_vllm", "false", "--use_cpu", "true",
         "--model_name_or_path", "/models/mine", "--neg_weight", "0.5"]
    )
    assert model_args.model_name_or_path == "/models/mine" and config.neg_weight == 0.5


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--recipe", "qwen9-math"], "unknown recipe 'qwen9-math'"),
        (["--recipe", "qwen2.5-math-7b", "--config", "x.yaml"], "either --recipe or --config"),
    ],
)
def test_recipe_errors(argv, message):
    with pytest.raises(SystemExit, match=message):
        cli.parse_train_args(argv)


def test_unknown_option_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.parse_train_args(["--model_name_or_path", "m", "--neg_wieght", "0.5"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --neg_wieght 0.5" in capsys.readouterr().err


def test_example_script_shares_the_command_code(capsys):
    from tests.benchmarks.test_benchmarks import load_script

    example = load_script("examples/nft_math.py")
    assert example.build_trainer is math_script.build_trainer  # one copy of the script logic
    with pytest.raises(SystemExit):
        example.main(["--help"])
    text = capsys.readouterr().out
    assert text.startswith("usage: nft_math.py") and "--reward_funcs" in text and "--neg_weight" in text


def test_module_entry_for_accelerate_launch():
    # `accelerate launch -m trl_nft.cli train ...` runs this module as __main__.
    result = subprocess.run([sys.executable, "-m", "trl_nft.cli", "recipes"], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0 and "qwen2.5-math-7b" in result.stdout


def test_recipes_listing_shows_whole_descriptions_wrapped_and_how_they_launch():
    env = dict(os.environ, COLUMNS="80")
    listing = subprocess.run([str(CONSOLE_SCRIPT), "recipes"], capture_output=True, text=True, timeout=300,
                             env=env).stdout
    assert all(len(line) < 80 for line in listing.splitlines())
    flat = " ".join(listing.split())
    for name, path in cli.recipe_files().items():
        assert f"{name} {cli.recipe_summary(path)}" in flat  # every word of the description, in order
    assert "tensor parallelism 4 (multi-node launch, and vLLM server mode" in flat  # the 32B line, once cut
    assert "qwen2.5-math-7b" in flat and "Launch: zero3, 8 processes." in flat


def test_recipe_headers_show_trl_nft_commands():
    for name, path in cli.recipe_files().items():
        text = path.read_text()
        header = text[: text.index("\n" + next(line for line in text.splitlines() if not line.startswith("#")))]
        commands = [line.strip("# ") for line in header.splitlines() if line.startswith("#   ")]
        assert commands and all(command.startswith("trl-nft ") for command in commands), name
        assert f"trl-nft train --recipe {name}" in text
        assert "examples/" not in text and "accelerate launch --config_file" not in text, name


def test_overview_names_the_launch_options():
    text = run_command("--help").stdout
    assert "--accelerate_config" in text and "--num_processes" in text
    train_text = run_command("train", "--help").stdout
    assert "--accelerate_config NAME|FILE" in train_text and "zero3" in train_text
    assert "--num_processes N" in train_text


def test_no_user_facing_text_points_at_the_test_data_folder():
    """A path like ../shared/data exists only in this repository's test setup; users get hub names and commands."""
    user_facing = [*(REPO_ROOT / "trl_nft").rglob("*.py"), *(REPO_ROOT / "trl_nft").rglob("*.yaml"),
                   *(REPO_ROOT / "examples").glob("*.py"), *(REPO_ROOT / "docs").rglob("*.md"),
                   REPO_ROOT / "README.md"]
    offending = [str(path.relative_to(REPO_ROOT)) for path in user_facing
                 if path.is_file() and re.search(r"shared/data|\.\./shared", path.read_text(encoding="utf-8"))]
    assert not offending, f"these point at the test data folder: {offending}"


# ------------------------------------------------------------------------------------- bf16 on a CPU machine
NO_BF16 = "this machine has no GPU with bf16 support (NVIDIA Ampere or newer)"


def test_bf16_recipe_without_a_bf16_gpu_is_one_line_through_the_command():
    """The installed command, as a user runs it on a machine without a bf16 GPU: no traceback, exit code 2."""
    if precision.missing_bf16_support() is None:
        pytest.skip("this machine has a bf16 GPU: the recipe is fine here")
    result = subprocess.run([str(CONSOLE_SCRIPT), "train", "--recipe", "qwen2.5-math-7b"], capture_output=True,
                            text=True, timeout=300, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("trl-nft train: error: bf16: true in --recipe qwen2.5-math-7b needs a bf16 GPU")
    assert "trl-nft train --recipe qwen2.5-math-1.5b-single-gpu" in lines[0] and "--bf16 false" in lines[0]


@pytest.mark.parametrize(
    "argv, source",
    [
        (["--recipe", "qwen2.5-math-7b"], "bf16: true in --recipe qwen2.5-math-7b"),
        (["--model_name_or_path", "m", "--bf16", "true"], "--bf16 true"),
        (["--config=my.yaml"], "bf16: true in --config my.yaml"),
    ],
)
def test_bf16_error_names_where_bf16_came_from(argv, source, monkeypatch, capsys):
    monkeypatch.setattr(precision, "missing_bf16_support", lambda: NO_BF16)
    with pytest.raises(SystemExit) as exit_info:
        cli.exit_if_bf16_unsupported(ValueError("Your setup doesn't support bf16/gpu."), argv, "trl-nft train")
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith(f"trl-nft train: error: {source} needs a bf16 GPU, but {NO_BF16}.")


def test_other_errors_and_bf16_machines_keep_the_original_error(monkeypatch):
    monkeypatch.setattr(precision, "missing_bf16_support", lambda: NO_BF16)
    cli.exit_if_bf16_unsupported(ValueError("save_steps must be a multiple"), ["--recipe", "x"], "trl-nft train")
    monkeypatch.setattr(precision, "missing_bf16_support", lambda: None)
    cli.exit_if_bf16_unsupported(ValueError("doesn't support bf16/gpu"), ["--recipe", "x"], "trl-nft train")


@pytest.mark.parametrize("recipe", ["qwen2.5-math-7b", "qwen2.5-32b"])
def test_the_cpu_advice_turns_a_recipe_into_an_in_process_cpu_run(recipe, tmp_path, monkeypatch, capsys):
    """Follow the error's advice literally: the edited copy parses on a CPU and trains in this process."""
    import yaml

    monkeypatch.setattr(precision, "missing_bf16_support", lambda: NO_BF16)
    with pytest.raises(SystemExit):
        cli.exit_if_bf16_unsupported(ValueError("doesn't support bf16/gpu"), ["--recipe", recipe], "trl-nft train")
    advice = capsys.readouterr().err
    settings = yaml.safe_load(cli.resolve_recipe(recipe).read_text())
    for key, value in cli.CPU_RECIPE_EDITS.items():
        assert f"{key}: {value}" in advice
        settings[key] = yaml.safe_load(value)
    for key in cli.recipe_launch_keys(cli.resolve_recipe(recipe)):
        assert key in advice
        del settings[key]
    edited = tmp_path / "my_recipe.yaml"
    edited.write_text(yaml.safe_dump(settings))
    command = cli.parse_train_command(["--config", str(edited), "--model_name_or_path", "tiny"])
    assert command.launch_args == [] and command.training_args.use_cpu and not command.training_args.bf16


def test_yaml_no_is_the_strategy_no(tmp_path):
    """`eval_strategy: no` in an edited recipe: YAML reads the bare word as False; it means the strategy "no"."""
    config = tmp_path / "my_recipe.yaml"
    config.write_text("model_name_or_path: m\nuse_cpu: true\neval_strategy: no\nsave_strategy: no\nlogging_strategy: no\n")
    _, training_args, _ = cli.parse_train_args(["--config", str(config)])
    assert training_args.eval_strategy == "no" and training_args.save_strategy == "no"
    assert training_args.logging_strategy == "no"
