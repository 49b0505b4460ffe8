"""`keep_groups_together`: which completions each optimizer step trains, on one process (two: test_distributed.py)."""

from __future__ import annotations

import pytest
from datasets import Dataset

from tests.conftest import first_char_parity_reward, tiny_args
from tests.step_records import check_group_tags_are_groups, rows_per_group_and_step, step_recording, \
    steps_with_split_groups
from trl_nft import NFTConfig, NFTTrainer

RecordingTrainer = step_recording(NFTTrainer)


def half_degenerate_reward(prompts, completions, **kwargs):
    """Prompts starting with an even digit are always wrong (degenerate groups); the others get a parity verdict."""
    return [0.0 if int(p[0]) % 2 == 0 else float(bool(c) and ord(c[0]) % 2 == 0) for p, c in zip(prompts, completions)]


def train(model, tokenizer, tmp_path, dataset, reward=first_char_parity_reward, **overrides):
    settings = dict(per_device_train_batch_size=4, gradient_accumulation_steps=2, steps_per_generation=8,
                    max_steps=4, max_completion_length=4)
    args = tiny_args(NFTConfig, tmp_path, **{**settings, **overrides})
    trainer = RecordingTrainer(model=model, reward_funcs=reward, args=args, train_dataset=dataset,
                               processing_class=tokenizer)
    trainer.train()
    check_group_tags_are_groups(trainer.step_records)
    return trainer


@pytest.mark.parametrize("keep", [True, False])
def test_each_step_trains_whole_groups_with_gradient_accumulation(model, prompt_dataset, tokenizer, tmp_path, keep):
    trainer = train(model, tokenizer, tmp_path, prompt_dataset, keep_groups_together=keep)
    steps = rows_per_group_and_step(trainer.step_records)
    assert sorted(steps) == [0, 1, 2, 3] and all(sum(counts.values()) == 8 for counts in steps.values())
    split = steps_with_split_groups(trainer.step_records, rows_per_pass=4)
    if keep:
        assert split == {} and all(len(counts) == 2 for counts in steps.values())
    else:  # TRL's row shuffle: the control that shows the check can fail
        assert split


def test_whole_groups_with_several_passes(model, prompt_dataset, tokenizer, tmp_path):
    """num_iterations=2: steps 0-1 and 2-3 are two passes over one generation batch, each step whole groups."""
    trainer = train(model, tokenizer, tmp_path, prompt_dataset, keep_groups_together=True, num_iterations=2,
                    steps_per_generation=4)
    steps = rows_per_group_and_step(trainer.step_records)
    assert steps_with_split_groups(trainer.step_records, rows_per_pass=4) == {}
    assert set(steps[0]) | set(steps[1]) == set(steps[2]) | set(steps[3])  # the second pass trains the same groups
    assert len(set(steps[0]) | set(steps[1])) == 4


def test_whole_groups_with_dynamic_sampling_and_carried_groups(model, tokenizer, tmp_path):
    digits = Dataset.from_dict({"prompt": [f"{a}+{b}=" for a in range(10) for b in range(3)]})
    trainer = train(model, tokenizer, tmp_path, digits, reward=half_degenerate_reward, keep_groups_together=True,
                    dynamic_sampling=True, dynamic_sampling_carry_over=True, dynamic_sampling_adaptive=True,
                    dynamic_sampling_first_round_oversample=3, steps_per_generation=4, max_steps=6)
    assert trainer.generated_batches == 3
    assert any(entry.get("dynamic_sampling/carried_frac", 0) > 0 for entry in trainer.state.log_history)
    assert steps_with_split_groups(trainer.step_records, rows_per_pass=4) == {}
    assert all(len(counts) == 2 for counts in rows_per_group_and_step(trainer.step_records).values())
