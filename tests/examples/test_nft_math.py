"""`examples/nft_math.py`: recipes parse, and 2 training steps run on a tiny local model with a few math500 problems."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, SHARED_DATA, free_port, import_optional
from trl_nft.testing.tiny_models import save_tiny_model

MATH500 = SHARED_DATA / "math_eval" / "math500.jsonl"
RECIPES = sorted((REPO_ROOT / "examples" / "recipes").glob("*.yaml"))
needs_shared = pytest.mark.skipif(not MATH500.exists(), reason="../shared/data/math_eval is not available")


def load_example():
    spec = importlib.util.spec_from_file_location("nft_math", REPO_ROOT / "examples" / "nft_math.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve string annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def tiny_cli(model_dir, output_dir):
    return [
        "--model_name_or_path", str(model_dir), "--dataset_name", str(MATH500), "--max_train_samples", "4",
        "--prompt_format", "plain", "--output_dir", str(output_dir), "--use_cpu", "true", "--max_steps", "2",
        "--per_device_train_batch_size", "4", "--num_generations", "2", "--max_completion_length", "8",
        "--report_to", "none", "--reward_workers", "1", "--save_strategy", "no", "--logging_steps", "1",
        "--dtype", "float32", "--learning_rate", "1e-3", "--disable_tqdm", "true",
    ]


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipes_parse_into_nft_configs(recipe):
    from trl_nft.cli import parse_train_args, parse_train_command

    assert load_example().parse_train_args is parse_train_args  # the example parses as the command does
    # CPU here: bf16 and vLLM are switched off on the command line, which overrides the recipe.
    command = parse_train_command(["--config", str(recipe), "--bf16", "false", "--use_vllm", "false",
                                   "--use_cpu", "true"])
    script_args, config, model_args = command.script_args, command.training_args, command.model_args
    assert model_args.model_name_or_path.startswith("Qwen/")
    assert config.learning_rate == 1e-6 and config.weight_decay == 0.1  # units and scales: tests/test_recipes.py
    assert config.beta == 0.0 and config.temperature == 1.0
    assert config.dynamic_sampling and config.max_generation_rounds == 10 and config.neg_weight == 1.0
    # the processes the recipe launches (its accelerate settings)
    gpus = int(command.launch_args[command.launch_args.index("--num_processes") + 1])
    assert gpus == {"qwen2.5-math-7b": 8, "qwen2.5-32b": 32}.get(recipe.stem, 1)
    if "7b" in recipe.stem or "32b" in recipe.stem:
        assert config.num_generations == 16
        assert config.generation_batch_size == 512 * 16  # 512 prompts per generation batch
        completions_per_step = config.per_device_train_batch_size * config.gradient_accumulation_steps * gpus
        assert config.generation_batch_size // completions_per_step == 16  # 16 optimizer steps per rollout batch


@needs_shared
def test_trains_two_steps_with_periodic_eval(tmp_path):
    model_dir = save_tiny_model(tmp_path / "tiny")
    example = load_example()
    trainer = example.main(tiny_cli(model_dir, tmp_path / "out") + [
        "--eval_dataset_name", str(MATH500), "--max_eval_samples", "2", "--eval_strategy", "steps",
        "--eval_steps", "1", "--per_device_eval_batch_size", "4", "--num_generations_eval", "2",
    ])
    history = trainer.state.log_history
    assert trainer.state.global_step == 2
    assert any("nft/correct_rate_mean" in e for e in history)
    assert any("eval_reward" in e for e in history)
    assert (tmp_path / "out" / "model.safetensors").exists()


@needs_shared
@pytest.mark.slow
def test_zero3_two_processes(tmp_path):
    import_optional("deepspeed")
    model_dir = save_tiny_model(tmp_path / "tiny")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
               str(REPO_ROOT / "examples" / "nft_math.py"), *tiny_cli(model_dir, tmp_path / "out"),
               "--deepspeed", str(REPO_ROOT / "tests" / "scripts" / "zero3_cpu.json"), "--bf16", "true",
               "--dynamic_sampling", "true", "--max_generation_rounds", "2"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT))
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert (tmp_path / "out" / "model.safetensors").exists(), sorted(p.name for p in (tmp_path / "out").iterdir())
    assert "'nft/correct_rate_mean'" in result.stdout + result.stderr
