"""Dynamic sampling: every trained group is informative, the batch size is exact, the cap path degrades gracefully."""

from __future__ import annotations

import logging

import pytest
import torch
from datasets import Dataset

from tests.conftest import tiny_args
from trl_nft import NFTConfig, NFTTrainer
from trl_nft import dynamic_sampling


def half_degenerate_reward(prompts, completions, **kwargs):
    """Prompts starting with an even digit are always wrong (degenerate groups); the others get a parity verdict."""
    return [
        0.0 if int(p[0]) % 2 == 0 else float(bool(c) and ord(c[0]) % 2 == 0) for p, c in zip(prompts, completions)
    ]


def always_wrong(completions, **kwargs):
    return [0.0] * len(completions)


class RecordingNFTTrainer(NFTTrainer):
    """Keeps every batch handed to training, before TRL shuffles and splits it."""

    def _generate_and_score_completions(self, inputs):
        batch = super()._generate_and_score_completions(inputs)
        self.recorded = getattr(self, "recorded", []) + [(len(inputs), batch)]
        return batch


@pytest.fixture(scope="module")
def digits_dataset():
    return Dataset.from_dict({"prompt": [f"{a}+{b}=" for a in range(10) for b in range(3)]})


def make(model, dataset, tokenizer, tmp_path, reward, **overrides):
    args = tiny_args(NFTConfig, tmp_path, dynamic_sampling=True, per_device_train_batch_size=16, **overrides)
    return RecordingNFTTrainer(model=model, reward_funcs=reward, args=args, train_dataset=dataset,
                               processing_class=tokenizer)


def test_every_trained_group_is_informative_and_the_batch_exact(model, digits_dataset, tokenizer, tmp_path):
    trainer = make(model, digits_dataset, tokenizer, tmp_path, half_degenerate_reward, max_steps=3)
    trainer.train()
    assert len(trainer.recorded) == 3
    for expected_rows, batch in trainer.recorded:
        assert batch["completion_ids"].size(0) == expected_rows == batch["correct"].numel()
        rates = batch["correct_rate"].view(-1, 4)
        assert ((rates > 0) & (rates < 1)).all(), rates
        # the rate each row carries is its own group's mean correctness: groups stayed row-aligned
        torch.testing.assert_close(rates[:, 0], batch["correct"].view(-1, 4).mean(dim=1))
        assert batch["num_items_in_batch"] == batch["completion_mask"].sum()
    history = [e for e in trainer.state.log_history if "dynamic_sampling/rounds" in e]
    assert history and all(e["dynamic_sampling/filled_frac"] == 1.0 for e in history)
    assert any(e["dynamic_sampling/rounds"] > 1 for e in history)  # the data forces refill rounds
    assert all(e["dynamic_sampling/informative_frac"] < 1.0 for e in history)


def test_round_cap_fills_with_zero_loss_groups_and_warns(model, digits_dataset, tokenizer, tmp_path, caplog):
    trainer = make(model, digits_dataset, tokenizer, tmp_path, always_wrong, max_generation_rounds=3, max_steps=2)
    start = [p.detach().clone() for p in trainer.model.parameters()]
    with caplog.at_level(logging.WARNING, logger="trl_nft.trainer"):
        trainer.train()
    assert "only 0 of 4 groups were informative after 3 generation rounds" in caplog.text
    history = [e for e in trainer.state.log_history if "dynamic_sampling/rounds" in e]
    assert [e["dynamic_sampling/rounds"] for e in history] == [3, 3]
    assert all(batch["completion_ids"].size(0) == rows for rows, batch in trainer.recorded)
    assert all(torch.equal(p.detach(), s) for p, s in zip(trainer.model.parameters(), start))


def test_off_by_default_with_paper_values(tmp_path):
    """Off, TRL behaviour is untouched: tests/test_equivalence.py runs with these defaults."""
    args = tiny_args(NFTConfig, tmp_path)
    assert args.dynamic_sampling is False and (args.max_generation_rounds, args.dynamic_sampling_oversample) == (10, 3)


def test_resume_draws_the_same_refill_prompts():
    first = dynamic_sampling.draw_prompt_indices(30, 12, seed=0, step=5, round_index=2)
    assert first == dynamic_sampling.draw_prompt_indices(30, 12, seed=0, step=5, round_index=2)
    assert first != dynamic_sampling.draw_prompt_indices(30, 12, seed=0, step=6, round_index=2)
    assert len(dynamic_sampling.draw_prompt_indices(5, 12, seed=0, step=0, round_index=1)) == 12


def test_concat_pads_prompts_left_and_completions_right():
    a = {"prompt_ids": torch.tensor([[5, 6]]), "completion_ids": torch.tensor([[7]]), "correct": torch.tensor([1.0])}
    b = {"prompt_ids": torch.tensor([[4, 5, 6]]), "completion_ids": torch.tensor([[8, 9]]),
         "correct": torch.tensor([0.0])}
    merged = dynamic_sampling.concat_batches([a, b], pad_token_id=0)
    assert merged["prompt_ids"].tolist() == [[0, 5, 6], [4, 5, 6]]
    assert merged["completion_ids"].tolist() == [[7, 0], [8, 9]]
    assert merged["correct"].tolist() == [1.0, 0.0]


def test_multimodal_batches_are_refused_by_name():
    with pytest.raises(ValueError, match="pixel_values"):
        dynamic_sampling.check_supported({"prompt_ids": torch.zeros(1, 1), "pixel_values": torch.zeros(1)})


@pytest.mark.parametrize("field, value", [("max_generation_rounds", 0), ("dynamic_sampling_oversample", 0)])
def test_invalid_options_name_field_and_value(tmp_path, field, value):
    with pytest.raises(ValueError, match=f"{field}={value}"):
        tiny_args(NFTConfig, tmp_path, **{field: value})
