"""A run stopped after a checkpoint and resumed logs exactly what the uninterrupted run logs for the later steps."""

from __future__ import annotations

import copy

import pytest
from datasets import Dataset

from tests.conftest import first_char_parity_reward, tiny_args
from trl_nft import NFTConfig, NFTTrainer

TIMING_KEYS = {"step_time", "train_runtime", "train_samples_per_second", "train_steps_per_second", "train_loss"}


def odd_prompts_only_reward(prompts, completions, **kwargs):
    """Prompts starting with an even digit are always wrong: dynamic sampling has to refill."""
    return [0.0 if int(p[0]) % 2 == 0 else r for p, r in zip(prompts, first_char_parity_reward(completions))]


def run(model, dataset, tokenizer, output_dir, reward, resume_from=None, **overrides):
    args = tiny_args(NFTConfig, output_dir, max_steps=4, save_strategy="steps", save_steps=2, optim="adamw_torch",
                     learning_rate=5e-2, per_device_train_batch_size=16, **overrides)
    trainer = NFTTrainer(model=model, reward_funcs=reward, args=args, train_dataset=dataset, processing_class=tokenizer)
    trainer.train(resume_from_checkpoint=resume_from)
    return {int(e["step"]): {k: v for k, v in e.items() if k not in TIMING_KEYS}
            for e in trainer.state.log_history if "loss" in e}


@pytest.mark.parametrize(
    "overrides",
    [dict(steps_per_generation=1), dict(steps_per_generation=2), dict(dynamic_sampling=True),
     dict(steps_per_generation=2, lr_scheduler_per_generation=True, lr_scheduler_type="constant_with_warmup",
          warmup_steps=2),
     dict(steps_per_generation=2, keep_groups_together=True)],
    ids=["on-policy", "steps_per_generation=2", "dynamic_sampling", "lr_scheduler_per_generation",
         "keep_groups_together"],
)
def test_resume_reproduces_the_uninterrupted_run(base_model, tokenizer, tmp_path, overrides):
    dataset = Dataset.from_dict({"prompt": [f"{a}+{b}=" for a in range(10) for b in range(3)]})
    reward = odd_prompts_only_reward if overrides.get("dynamic_sampling") else first_char_parity_reward
    full = run(copy.deepcopy(base_model), dataset, tokenizer, tmp_path / "full", reward, **overrides)
    # resuming must not reuse anything but the checkpoint: a fresh model object and a fresh trainer
    resumed = run(copy.deepcopy(base_model), dataset, tokenizer, tmp_path / "full", reward,
                  resume_from=str(tmp_path / "full" / "checkpoint-2"), **overrides)
    assert sorted(resumed) == [1, 2, 3, 4]  # steps 1-2 come back from the checkpoint's trainer state
    assert any(full[3][k] != full[1][k] for k in ("nft/ratio_max", "entropy", "loss"))  # the run did evolve
    if overrides.get("dynamic_sampling"):
        assert any(full[step]["dynamic_sampling/rounds"] > 1 for step in (3, 4))
    if overrides.get("lr_scheduler_per_generation"):  # generation batch 1 of a 2-batch warm-up: half the lr
        assert [full[step]["learning_rate"] for step in (1, 2, 3, 4)] == [0.0, 0.0, 2.5e-2, 2.5e-2]
    for step in (3, 4):
        assert resumed[step] == pytest.approx(full[step], rel=1e-5, abs=1e-7), step
