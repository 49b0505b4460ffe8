"""`keep_groups_together`: which completions each optimizer step trains, on one process (two: test_distributed.py),
and the parts of TRL's `_prepare_inputs` the mixin keeps."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from trl.trainer.utils import shuffle_sequence_dict

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


def test_owned_prepare_inputs_is_trls_apart_from_the_shuffle(model, prompt_dataset, tokenizer, tmp_path):
    """With TRL's row shuffle put back, the owned method buffers, slices and reuses exactly as TRL's does."""
    args = tiny_args(NFTConfig, tmp_path, per_device_train_batch_size=4, gradient_accumulation_steps=2,
                     steps_per_generation=4, num_iterations=2)
    trainer = NFTTrainer(model=model, reward_funcs=first_char_parity_reward, args=args, train_dataset=prompt_dataset,
                         processing_class=tokenizer)
    trainer.model.train()
    generated = {"completion_ids": torch.arange(16 * 3).view(16, 3), "prompts": [f"p{i}" for i in range(16)],
                 "num_items_in_batch": torch.tensor(40), "optional": None}
    trainer._generate_and_score_completions = lambda inputs: dict(generated)
    trainer._shuffle_whole_groups = shuffle_sequence_dict

    def micro_batches(keep):
        trainer.args.keep_groups_together = keep
        trainer._buffered_inputs, outputs = None, []
        torch.manual_seed(0)
        for step in range(16):  # two generation batches of 4 micro-steps x 2 passes
            trainer._step = step
            outputs.append(trainer._prepare_inputs([{"prompt": "x"}] * 16))
        return outputs

    owned, trls = micro_batches(True), micro_batches(False)
    for ours, theirs in zip(owned, trls):
        assert ours.keys() == theirs.keys()
        assert torch.equal(ours["completion_ids"], theirs["completion_ids"]) and ours["prompts"] == theirs["prompts"]
        assert ours["num_items_in_batch"] == 40 and ours["optional"] is None
    assert not torch.equal(owned[0]["completion_ids"], owned[8]["completion_ids"])  # regenerated and reshuffled
