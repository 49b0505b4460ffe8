"""`trl-nft train` launches itself through accelerate as `trl grpo` does: launch options from the command line or the
recipe, TRL's named accelerate configs, no second launch from the launched processes, and 2 real CPU processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO_ROOT, free_port, import_optional
from trl_nft import cli, launcher

TRL_ZERO3 = str(resources.files("trl.accelerate_configs").joinpath("zero3.yaml"))
CONSOLE_SCRIPT = Path(sys.executable).with_name("trl-nft")
CPU = ["--bf16", "false", "--use_vllm", "false", "--use_cpu", "true"]


@pytest.fixture(autouse=True)
def not_launched(monkeypatch):
    """Each test starts as a process no launcher started (pytest itself may run under one)."""
    for name in (launcher.LAUNCHED_ENV, *launcher.LAUNCHER_ENV):
        monkeypatch.delenv(name, raising=False)


def write_yaml(path: Path, settings: dict) -> Path:
    path.write_text(yaml.safe_dump(settings))
    return path


# ------------------------------------------------------------------------------------------------ parsing
def test_command_line_launch_options_are_split_from_the_training_options():
    argv = ["--model_name_or_path", "m", "--accelerate_config", "zero3", "--num_processes", "8", "--neg_weight",
            "0.5", "--main_process_port=29600", *CPU]
    command = cli.parse_train_command(argv)
    assert command.launch_args == ["--config_file", TRL_ZERO3, "--num_processes", "8", "--main_process_port=29600"]
    assert command.script_argv == ["--model_name_or_path", "m", "--neg_weight", "0.5", *CPU]
    assert command.training_args.neg_weight == 0.5


def test_recipes_name_their_launch_and_the_command_line_overrides_it():
    seven_b = cli.parse_train_command(["--recipe", "qwen2.5-math-7b", *CPU])
    assert seven_b.launch_args == ["--config_file", TRL_ZERO3, "--num_processes", "8"]
    assert seven_b.script_argv == ["--recipe", "qwen2.5-math-7b", *CPU]  # the recipe travels; its launch keys are
    # ignored by the launched processes (see test_launched_processes_train_and_never_launch_again)
    on_four = cli.parse_train_command(["--recipe", "qwen2.5-math-7b", "--num_processes", "4", *CPU])
    assert on_four.launch_args == ["--config_file", TRL_ZERO3, "--num_processes", "4"]
    thirty_two_b = cli.parse_train_command(["--recipe", "qwen2.5-32b", "--machine_rank", "3", "--main_process_ip",
                                            "10.0.0.1", *CPU])
    assert thirty_two_b.launch_args == ["--config_file", TRL_ZERO3, "--num_machines", "4", "--num_processes", "32",
                                        "--main_process_port", "29500", "--machine_rank", "3", "--main_process_ip",
                                        "10.0.0.1"]
    single = cli.parse_train_command(["--recipe", "qwen2.5-math-1.5b-single-gpu", *CPU])
    assert single.launch_args[1].endswith("single_gpu.yaml") and single.launch_args[2:] == ["--num_processes", "1"]


def test_a_config_file_path_and_yaml_flags(tmp_path):
    own = write_yaml(tmp_path / "my_accelerate.yaml", {"distributed_type": "MULTI_GPU", "num_processes": 2})
    config = write_yaml(tmp_path / "run.yaml", {"model_name_or_path": "m", "accelerate_config": str(own),
                                                 "multi_gpu": True, "same_network": False})
    command = cli.parse_train_command(["--config", str(config), *CPU])
    assert command.launch_args == ["--config_file", str(own), "--multi_gpu"]  # true: the flag; false: left out


def test_without_launch_options_nothing_is_launched():
    assert cli.parse_train_command(["--model_name_or_path", "m", *CPU]).launch_args == []


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model_name_or_path", "m", "--neg_wieght", "0.5"], "unrecognized arguments: --neg_wieght 0.5"),
        (["--model_name_or_path", "m", "--accelerate_config", "zero9"],
         "error: --accelerate_config: Accelerate config zero9"),
        (["--model_name_or_path", "m", "--num_proc", "8"], "unrecognized arguments: --num_proc 8"),  # no prefixes
        (["--model_name_or_path", "m", "--num_gen", "8"], "unrecognized arguments: --num_gen 8"),  # of any option
    ],
)
def test_bad_command_line_options_are_named(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        cli.parse_train_command([*argv, *CPU])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_unknown_keys_in_a_config_file_are_named(tmp_path, capsys):
    config = write_yaml(tmp_path / "run.yaml", {"model_name_or_path": "m", "neg_wieght": 0.5})
    with pytest.raises(SystemExit):
        cli.parse_train_command(["--config", str(config), *CPU])
    assert "unknown keys in the --recipe / --config file: --neg_wieght 0.5" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- launching
@pytest.fixture
def captured_launch(monkeypatch):
    """Replaces accelerate's launcher and the training run by recorders."""
    import accelerate.commands.launch as accelerate_launch

    from trl_nft.math_recipe import script

    calls = {"launch": [], "run": []}
    monkeypatch.setattr(accelerate_launch, "launch_command",
                        lambda args: calls["launch"].append((args, os.environ.get(launcher.LAUNCHED_ENV))))
    monkeypatch.setattr(script, "run", lambda *args: calls["run"].append(args) or "trained")
    return calls


def test_launch_options_start_accelerate_with_the_module_and_the_other_options(captured_launch):
    assert cli.main(["train", "--recipe", "qwen2.5-math-7b", "--num_processes", "2", *CPU]) == 0
    (args, marker), = captured_launch["launch"]
    assert not captured_launch["run"]  # this process only launches
    assert args.config_file == TRL_ZERO3 and args.num_processes == 2 and args.module
    assert args.training_script == "trl_nft.cli"
    assert args.training_script_args == ["train", "--recipe", "qwen2.5-math-7b", *CPU]
    assert marker == "1"  # the launched processes inherit the marker ...
    assert launcher.LAUNCHED_ENV not in os.environ  # ... and this process does not keep it


@pytest.mark.parametrize("environment, value, warned", [(launcher.LAUNCHED_ENV, "1", False),
                                                        ("ACCELERATE_MIXED_PRECISION", "no", True)])
def test_launched_processes_train_and_never_launch_again(captured_launch, monkeypatch, caplog, environment, value,
                                                         warned):
    monkeypatch.setenv(environment, value)
    assert cli.train(["--recipe", "qwen2.5-math-7b", *CPU]) == "trained"
    assert not captured_launch["launch"] and len(captured_launch["run"]) == 1
    # Started by the user's own launcher (accelerate launch / torchrun), the recipe's launch settings do not apply.
    assert ("launch options --config_file" in caplog.text) == warned


def test_torchrun_workers_count_as_launched(monkeypatch):
    assert launcher.launcher_in_charge() is None
    monkeypatch.setenv("LOCAL_RANK", "0")  # torchrun, deepspeed and accelerate's multi-process launchers set it
    assert launcher.launcher_in_charge() == "LOCAL_RANK"


def test_a_failed_launch_returns_its_exit_code(monkeypatch):
    import accelerate.commands.launch as accelerate_launch

    def fail(args):
        raise subprocess.CalledProcessError(returncode=3, cmd=["python"])

    monkeypatch.setattr(accelerate_launch, "launch_command", fail)
    assert cli.main(["train", "--model_name_or_path", "m", "--num_processes", "2", *CPU]) == 3


# ----------------------------------------------------------------------------------- two real processes
@pytest.mark.slow
def test_two_processes_through_the_command_with_zero3(tmp_path):
    """`trl-nft train --config run.yaml --num_processes 2 ...` where run.yaml says `accelerate_config: zero3` and
    `num_processes: 8`: accelerate starts 2 processes (the command line wins) with TRL's ZeRO-3 config, each trains
    in place, none launches again. About 1-2 minutes on 2 CPU cores."""
    import_optional("deepspeed")
    from trl_nft.testing.tiny_models import save_tiny_model

    model_dir = save_tiny_model(tmp_path / "tiny")
    data = tmp_path / "sums.jsonl"
    data.write_text("".join(json.dumps({"problem": f"What is {a} + {b}?", "answer": str(a + b)}) + "\n"
                            for a in range(4) for b in range(2)))
    config = write_yaml(tmp_path / "run.yaml", {"accelerate_config": "zero3", "num_processes": 8,
                                                 "reward_funcs": ["math_accuracy_reward",
                                                                  "tests.scripts.launch_probe.record_process"]})
    probe, output_dir = tmp_path / "probe", tmp_path / "out"
    probe.mkdir()
    command = [str(CONSOLE_SCRIPT), "train", "--config", str(config), "--num_processes", "2",
               "--main_process_port", str(free_port()), "--model_name_or_path", str(model_dir),
               "--dataset_name", str(data), "--prompt_format", "plain", "--output_dir", str(output_dir),
               "--use_cpu", "true", "--bf16", "true", "--dtype", "float32", "--max_steps", "1",
               "--per_device_train_batch_size", "4", "--num_generations", "2", "--max_completion_length", "8",
               "--report_to", "none", "--save_strategy", "no", "--reward_workers", "1", "--disable_tqdm", "true"]
    env = {name: value for name, value in os.environ.items()
           if name not in (launcher.LAUNCHED_ENV, *launcher.LAUNCHER_ENV)}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT), NFT_LAUNCH_PROBE_DIR=str(probe))
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-5000:]
    records = [json.loads(path.read_text()) for path in sorted(probe.glob("rank*.json"))]
    assert [(r["RANK"], r["WORLD_SIZE"]) for r in records] == [("0", "2"), ("1", "2")]
    assert len({r["pid"] for r in records}) == 2
    assert all(r["TRL_NFT_LAUNCHED"] == "1" and r["ACCELERATE_USE_DEEPSPEED"] == "true"
               and r["ACCELERATE_DEEPSPEED_ZERO_STAGE"] == "3" for r in records)  # TRL's zero3.yaml reached them
    assert log.count("launching: accelerate launch") == 1  # the two processes did not launch again
    assert (output_dir / "model.safetensors").exists()
