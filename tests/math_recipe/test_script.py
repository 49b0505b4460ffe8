"""The training script behind `trl-nft train` / `examples/nft_math.py`: rewards by name, quantisation flags, data
checks, the saved model card, and that verifier worker processes end with the run (normally or by a crash)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from trl_nft import cli
from trl_nft.math_recipe import script as math_script
from trl_nft.rewards.registry import REGISTERED_REWARDS, resolve_reward_funcs
from trl_nft.testing.tiny_models import save_tiny_model

CONSOLE_SCRIPT = Path(sys.executable).with_name("trl-nft")


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "model")  # character tokenizer, no chat template


@pytest.fixture(scope="module")
def problems_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "sums.jsonl"
    rows = [{"problem": f"What is {a} + {b}?", "answer": str(a + b)} for a in range(4) for b in range(2)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def tiny_options(model_dir, data_file, output_dir) -> list[str]:
    return ["--model_name_or_path", str(model_dir), "--dataset_name", str(data_file), "--prompt_format", "plain",
            "--output_dir", str(output_dir), "--use_cpu", "true", "--max_steps", "1",
            "--per_device_train_batch_size", "4", "--num_generations", "2", "--max_completion_length", "8",
            "--report_to", "none", "--save_strategy", "no", "--dtype", "float32", "--reward_workers", "1",
            "--disable_tqdm", "true", "--logging_steps", "1"]


# ------------------------------------------------------------------------------------------------ rewards
def test_unknown_reward_name_lists_the_registered_ones():
    with pytest.raises(ValueError, match=r"unknown reward function 'math_acuracy'.*math_accuracy_reward"):
        resolve_reward_funcs(["math_acuracy"])


def test_dotted_path_errors_name_the_path():
    with pytest.raises(ValueError, match=r"'no_such_pkg.reward'.*cannot import module 'no_such_pkg'"):
        resolve_reward_funcs(["no_such_pkg.reward"])
    with pytest.raises(ValueError, match=r"'tests.conftest.missing'.*no attribute 'missing'"):
        resolve_reward_funcs(["tests.conftest.missing"])


def test_rewards_by_name_and_path_with_weights(tiny_model_dir, problems_file, tmp_path):
    from tests.conftest import first_char_parity_reward

    argv = tiny_options(tiny_model_dir, problems_file, tmp_path) + [
        "--reward_funcs", "math_accuracy_reward", "tests.conftest.first_char_parity_reward",
        "--reward_weights", "0.75", "0.25", "--answer_format", "auto", "--reward_timeout", "2.5",
    ]
    trainer = math_script.build_trainer(*cli.parse_train_args(argv))
    math_reward, parity_reward = trainer.reward_funcs
    assert (math_reward.answer_format, math_reward.timeout, math_reward.num_workers) == ("auto", 2.5, 1)
    assert parity_reward is first_char_parity_reward
    assert trainer.reward_weights.tolist() == [0.75, 0.25]
    assert trainer.reward_func_names == ["math_accuracy_reward", "first_char_parity_reward"]


def test_every_registered_reward_resolves():
    functions = resolve_reward_funcs(list(REGISTERED_REWARDS), {"num_workers": 1})
    assert all(callable(function) for function in functions) and len(functions) == len(REGISTERED_REWARDS)


# ------------------------------------------------------------------------------------------ quantisation
class ModelLoadReached(Exception):
    """Raised in place of loading the model: the kwargs it would have been loaded with are attached."""


@pytest.mark.parametrize("flag, attribute", [("--load_in_4bit", "load_in_4bit"), ("--load_in_8bit", "load_in_8bit")])
def test_quantisation_flags_reach_the_model_kwargs(monkeypatch, tiny_model_dir, problems_file, tmp_path, flag,
                                                    attribute):
    import trl.trainer.grpo_trainer as grpo_trainer

    def capture(model_id, **kwargs):
        raise ModelLoadReached(model_id, kwargs)

    monkeypatch.setattr(grpo_trainer, "create_model_from_path", capture)
    argv = tiny_options(tiny_model_dir, problems_file, tmp_path) + [flag, "true", "--use_peft", "true",
                                                                    "--dtype", "bfloat16"]
    with pytest.raises(ModelLoadReached) as reached:
        math_script.build_trainer(*cli.parse_train_args(argv))
    model_id, kwargs = reached.value.args
    assert model_id == str(tiny_model_dir)
    quantization = kwargs["quantization_config"]
    assert getattr(quantization, attribute) is True
    if attribute == "load_in_4bit":
        assert str(quantization.bnb_4bit_compute_dtype) == "torch.bfloat16"  # follows --dtype, as in `trl grpo`
    assert kwargs["dtype"] == "bfloat16"


def test_no_quantisation_without_the_flags(monkeypatch, tiny_model_dir, problems_file, tmp_path):
    import trl.trainer.grpo_trainer as grpo_trainer

    monkeypatch.setattr(grpo_trainer, "create_model_from_path", lambda model_id, **kw: (_ for _ in ()).throw(
        ModelLoadReached(model_id, kw)))
    with pytest.raises(ModelLoadReached) as reached:
        math_script.build_trainer(*cli.parse_train_args(tiny_options(tiny_model_dir, problems_file, tmp_path)))
    assert "quantization_config" not in reached.value.args[1]


# ------------------------------------------------------------------------------------------- data checks
def test_chat_prompts_with_a_tokenizer_without_template_fail_before_training(tiny_model_dir, problems_file,
                                                                            tmp_path):
    argv = [arg for arg in tiny_options(tiny_model_dir, problems_file, tmp_path) if arg != "plain"]
    argv.remove("--prompt_format")  # the default, 'chat'
    expected = r"sums.jsonl: prompt_format='chat'.*no chat template.*--prompt_format plain"
    with pytest.raises(ValueError, match=expected):
        math_script.build_trainer(*cli.parse_train_args(argv))


def test_card_dataset_name():
    assert math_script.card_dataset_name("dapo-math-17k") == "BytedTsinghua-SIA/DAPO-Math-17k"
    assert math_script.card_dataset_name("someone/their-set") == "someone/their-set"
    assert math_script.card_dataset_name(str(REPO_ROOT / "README.md")) is None  # a local path is not a hub id


# ------------------------------------------------------------------------ end of a run: card and workers
def verifier_workers(marker: str) -> set[int]:
    """Live verifier worker processes started under the environment marker `marker` (read from /proc)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if b"_serve_worker" not in (entry / "cmdline").read_bytes():
                continue
            if f"NFT_TEST_MARKER={marker}".encode() not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:  # it ended while we looked
            continue
        if state != "Z":
            found.add(int(entry.name))
    return found


def run_and_watch_workers(command: list[str], log_dir: Path):
    """Run `command`; return its result (CompletedProcess), the verifier workers seen while it ran, and those alive
    after it ended.

    Output goes to files, not pipes: a leftover worker inherits the pipes and would make `subprocess.run` wait for
    it, hiding exactly what this looks for.
    """
    marker = uuid.uuid4().hex
    env = dict(os.environ, NFT_TEST_MARKER=marker, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT))
    seen: set[int] = set()
    done = threading.Event()

    def watch():
        while not done.is_set():
            seen.update(verifier_workers(marker))
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    stdout_path, stderr_path = log_dir / "stdout.txt", log_dir / "stderr.txt"
    try:
        with open(stdout_path, "w") as stdout, open(stderr_path, "w") as stderr:
            completed = subprocess.run(command, cwd=REPO_ROOT, env=env, stdout=stdout, stderr=stderr, timeout=600)
    finally:
        done.set()
        watcher.join()
    output = (stdout_path.read_text(), stderr_path.read_text())
    result = subprocess.CompletedProcess(command, completed.returncode, *output)
    deadline = time.monotonic() + 10  # an orphan would be reparented, not gone: give real exits a moment
    while verifier_workers(marker) and time.monotonic() < deadline:
        time.sleep(0.2)
    return result, seen, verifier_workers(marker)


@pytest.mark.slow
def test_installed_command_trains_writes_an_nft_card_and_leaves_no_workers(tiny_model_dir, problems_file, tmp_path):
    """`trl-nft train` end to end in a fresh process (about 30-60 s on 2 busy cores)."""
    assert CONSOLE_SCRIPT.exists(), f"{CONSOLE_SCRIPT} is missing: `pip install -e .` installs the console script"
    output_dir = tmp_path / "run"
    result, seen, left = run_and_watch_workers(
        [str(CONSOLE_SCRIPT), "train", *tiny_options(tiny_model_dir, problems_file, output_dir)], tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert seen, "the verifier pool never started, so this test checked nothing"
    assert not left, f"verifier workers {sorted(left)} outlived the run"
    card = (output_dir / "README.md").read_text()
    assert "2505.18116" in card and "2402.03300" not in card and "DeepSeekMath" not in card
    assert "Bridging Supervised Learning and Reinforcement Learning in Math Reasoning" in card
    assert "- nft" in card and "- trl" in card  # tags in the YAML front matter
    assert (output_dir / "model.safetensors").exists()


@pytest.mark.slow
def test_a_crashed_run_leaves_no_workers(tiny_model_dir, problems_file, tmp_path):
    """A reward that raises after the verifier pool has started: the run fails, its workers end (about 30-60 s)."""
    command = [sys.executable, "-m", "trl_nft.cli", "train", *tiny_options(tiny_model_dir, problems_file, tmp_path),
               "--reward_funcs", "math_accuracy_reward", "tests.scripts.failing_reward.fail"]
    result, seen, left = run_and_watch_workers(command, tmp_path)
    assert result.returncode != 0 and "this reward fails on purpose" in result.stderr
    assert seen, "the verifier pool never started, so this test checked nothing"
    assert not left, f"verifier workers {sorted(left)} outlived the crashed run"


# ------------------------------------------------------------------------------------------- system prompt
def test_system_prompt_reaches_the_chat_template(tmp_path, problems_file):
    from trl_nft.testing.tiny_models import QWEN25_MATH_CHAT_TEMPLATE, build_char_tokenizer

    tokenizer = build_char_tokenizer()
    tokenizer.chat_template = QWEN25_MATH_CHAT_TEMPLATE  # a template with a default system turn, as Qwen2.5-Math's
    model_dir = save_tiny_model(tmp_path / "model", tokenizer=tokenizer)
    options = [arg for arg in tiny_options(model_dir, problems_file, tmp_path / "out") if arg != "plain"]
    options.remove("--prompt_format")

    def first_rendered_prompt(extra):
        trainer = math_script.build_trainer(*cli.parse_train_args(options + extra))
        prompt = trainer.train_dataset[0]["prompt"]
        return trainer.processing_class.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)

    own = first_rendered_prompt(["--system_prompt", "Answer in Latin."])
    assert own.startswith("<|im_start|>system\nAnswer in Latin.<|im_end|>\n<|im_start|>user\nWhat is 0 + 0?")
    assert own.count("<|im_start|>system") == 1
    default = first_rendered_prompt([])
    assert default.startswith("<|im_start|>system\nPlease reason step by step")  # the template's own default


# ------------------------------------------------------------------- the paper recipe's training verifier
@pytest.fixture(scope="module")
def dapo_file(tmp_path_factory):
    """Rows in DAPO-Math-17k's schema: its "Answer:" instructions around the problem, the gold in reward_model."""
    from trl_nft.math_recipe.data import DAPO_PREFIX, DAPO_SUFFIX

    def row(index: int) -> dict:
        problem = f"Find $x$ if $x - {index} = {index + 30}$."
        return {"data_source": "math_dapo", "prompt": [{"role": "user", "content": f"{DAPO_PREFIX}\n\n{problem}\n\n"
                f"{DAPO_SUFFIX}"}], "ability": "MATH",
                "reward_model": {"ground_truth": str(2 * index + 30), "style": "rule-lean"},
                "extra_info": {"index": str(index)}}

    path = tmp_path_factory.mktemp("dapo") / "dapo.jsonl"
    path.write_text("".join(json.dumps(row(i)) + "\n" for i in range(4)))
    return path


def test_7b_recipe_trains_with_the_official_verifier_on_dapo_rows(monkeypatch, qwen_tokenizer, dapo_file, tmp_path):
    """The 7B recipe as packaged (sizes and hardware aside) on a tiny Qwen2.5 model: one optimizer step, scored by
    `dapo_math_reward` with the trainer's own tokenizer and DAPO's ground-truth strings."""
    from trl_nft.rewards import DapoMathReward

    model_dir = save_tiny_model(tmp_path / "model", tokenizer=qwen_tokenizer)  # the real Qwen2.5 tokenizer
    seen = []
    official_call = DapoMathReward.__call__

    def recording_call(self, completions, **kwargs):
        rewards = official_call(self, completions, **kwargs)
        seen.append((self.tokenizer, kwargs["answer"], kwargs["completion_ids"], rewards))
        return rewards

    monkeypatch.setattr(DapoMathReward, "__call__", recording_call)
    argv = ["--recipe", "qwen2.5-math-7b", "--model_name_or_path", model_dir, "--dataset_name", str(dapo_file),
            "--output_dir", str(tmp_path / "out"), "--use_cpu", "true", "--use_vllm", "false", "--bf16", "false",
            "--dtype", "float32", "--max_steps", "1", "--per_device_train_batch_size", "4",
            "--gradient_accumulation_steps", "1", "--num_generations", "4", "--generation_batch_size", "4",
            "--max_completion_length", "6", "--max_generation_rounds", "1", "--save_strategy", "no",
            "--disable_tqdm", "true", "--logging_steps", "1"]
    script_args, config, model_args = cli.parse_train_args(argv)
    assert script_args.reward_funcs == ["dapo_math_reward"]
    trainer = math_script.build_trainer(script_args, config, model_args)
    (verifier,) = trainer.reward_funcs
    assert isinstance(verifier, DapoMathReward) and verifier.tokenizer is trainer.processing_class
    trainer.train()
    assert trainer.state.global_step == 1 and seen
    tokenizer, golds, completion_ids, rewards = seen[0]
    assert tokenizer is trainer.processing_class
    assert set(golds) <= {"30", "32", "34", "36"}  # DAPO's ground_truth strings, as the official run compares
    assert all(ids and isinstance(ids[0], int) for ids in completion_ids) and set(rewards) <= {0.0, 1.0}
    assert any("rewards/dapo_math_reward/mean" in entry for entry in trainer.state.log_history)


# ---------------------------------------------------------------------------------------------------- requeue
def test_resume_auto_starts_fresh_then_continues_from_the_newest_complete_checkpoint(tiny_model_dir, problems_file,
                                                                                     tmp_path, caplog):
    """What a requeue script runs: the same command every time, `--resume_from_checkpoint auto` (or the YAML key)."""
    output_dir = tmp_path / "run"
    options = tiny_options(tiny_model_dir, problems_file, output_dir)
    at = options.index("--max_steps")
    options = [*options[:at], *options[at + 2:], "--save_strategy", "steps", "--save_steps", "1"]
    with caplog.at_level(logging.WARNING, logger="trl_nft.checkpoints"):
        first = cli.train([*options, "--max_steps", "1", "--resume_from_checkpoint", "auto"])
    assert "no complete checkpoint" in caplog.text and first.state.global_step == 1
    (output_dir / "checkpoint-2").mkdir()  # a save killed early: a folder without files
    config = tmp_path / "requeue.yaml"
    config.write_text("resume_from_checkpoint: auto\nmax_steps: 2\n")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="trl_nft.checkpoints"):
        second = cli.train(["--config", str(config), *options])
    assert f"Ignoring incomplete checkpoint folder(s) {output_dir / 'checkpoint-2'}" in caplog.text
    assert f"resuming from {output_dir / 'checkpoint-1'}" in caplog.text
    assert second.state.global_step == 2
