"""Dynamic sampling: every trained group is informative, the batch size is exact, the cap path degrades gracefully."""

from __future__ import annotations

import copy
import logging
import pickle

import pytest
import torch
from datasets import Dataset

from tests.conftest import tiny_args
from trl_nft import NFTConfig, NFTTrainer
from trl_nft.dynamic_sampling import prompt_stream, rows as dynamic_sampling


def half_degenerate_reward(prompts, completions, **kwargs):
    """Prompts starting with an even digit are always wrong (degenerate groups); the others get a parity verdict."""
    return [
        0.0 if int(p[0]) % 2 == 0 else float(bool(c) and ord(c[0]) % 2 == 0) for p, c in zip(prompts, completions)
    ]


def always_wrong(completions, **kwargs):
    return [0.0] * len(completions)


class RecordingNFTTrainer(NFTTrainer):
    """Keeps every batch handed to training (before TRL shuffles and splits it) and the prompts of every generation
    round, grouped by generation batch (single process: a round's inputs are all its rows)."""

    def _generate_and_label(self, inputs):
        if self.model.training:
            self.rounds = getattr(self, "rounds", []) + [[row["prompt"] for row in inputs[:: self.num_generations]]]
        return super()._generate_and_label(inputs)

    def _generate_and_score_completions(self, inputs):
        first_round = len(getattr(self, "rounds", []))
        batch = super()._generate_and_score_completions(inputs)
        self.recorded = getattr(self, "recorded", []) + [(len(inputs), batch)]
        self.batch_rounds = getattr(self, "batch_rounds", []) + [self.rounds[first_round:]]
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


@pytest.mark.parametrize("field, value", [
    ("max_generation_rounds", 0), ("dynamic_sampling_oversample", 0), ("dynamic_sampling_first_round_oversample", 0),
    ("dynamic_sampling_adaptive_margin", 0.9), ("dynamic_sampling_max_carry_age", -1),
])
def test_invalid_options_name_field_and_value(tmp_path, field, value):
    with pytest.raises(ValueError, match=f"{field}={value}"):
        tiny_args(NFTConfig, tmp_path, **{field: value})


# ------------------------------------------------------------------------------------ which prompts are drawn
def prompt_indices(dataset, prompts):
    index = {prompt: i for i, prompt in enumerate(dataset["prompt"])}
    return [index[prompt] for prompt in prompts]


def test_without_dynamic_sampling_trl_walks_the_same_order_as_the_prompt_stream(model, digits_dataset, tokenizer,
                                                                                 tmp_path):
    """The stream dynamic sampling draws from is TRL's own dataloader order, across an epoch boundary too."""
    args = tiny_args(NFTConfig, tmp_path, max_steps=16)  # 2 prompts per batch: epoch 0 is 15 batches
    trainer = RecordingNFTTrainer(model=model, reward_funcs=half_degenerate_reward, args=args,
                                  train_dataset=digits_dataset, processing_class=tokenizer)
    trainer.train()
    drawn = prompt_indices(digits_dataset, [p for rounds in trainer.batch_rounds for r in rounds for p in r])
    assert drawn == prompt_stream.epoch_order(30, seed=0, epoch=0) + prompt_stream.epoch_order(30, seed=0, epoch=1)[:2]


def test_rounds_draw_like_a_dataloader_even_when_generation_batches_share_a_step(model, digits_dataset, tokenizer,
                                                                                  tmp_path):
    """Issue 8 item 9: refills do not repeat prompts of the epoch nor of the batch's earlier rounds; two generation
    batches in one optimizer step (steps_per_generation < gradient_accumulation_steps) draw different prompts."""
    trainer = make(model, digits_dataset, tokenizer, tmp_path, half_degenerate_reward, max_steps=2,
                   gradient_accumulation_steps=2, steps_per_generation=1)
    trainer.train()
    assert len(trainer.batch_rounds) == 4 == trainer._dynamic_sampling_state["generation_batch"]
    for rounds in trainer.batch_rounds:
        prompts = [p for r in rounds for p in r]
        assert len(prompts) == len(set(prompts)), f"a prompt repeats within one generation batch: {rounds}"
    drawn = prompt_indices(digits_dataset, [p for rounds in trainer.batch_rounds for r in rounds for p in r])
    assert len(drawn) > 30  # the run crosses into a second epoch
    assert drawn[:30] == prompt_stream.epoch_order(30, seed=0, epoch=0)  # epoch 0: every prompt exactly once


def test_official_first_round_generates_three_batches_of_prompts(model, digits_dataset, tokenizer, tmp_path):
    trainer = make(model, digits_dataset, tokenizer, tmp_path, half_degenerate_reward, max_steps=2,
                   dynamic_sampling_first_round_oversample=3)
    trainer.train()
    assert [len(rounds[0]) for rounds in trainer.batch_rounds] == [12, 12]  # 3 x 4 groups, like gen_batch_size 1536
    for expected_rows, batch in trainer.recorded:
        assert batch["completion_ids"].size(0) == expected_rows


def test_adaptive_rounds_fill_the_batch_with_less_generation(model, digits_dataset, tokenizer, tmp_path):
    generated = {}
    for adaptive in (False, True):
        trainer = make(copy.deepcopy(model), digits_dataset, tokenizer, tmp_path / str(adaptive),
                       half_degenerate_reward, max_steps=4, dynamic_sampling_adaptive=adaptive)
        trainer.train()
        for _, batch in trainer.recorded:
            rates = batch["correct_rate"].view(-1, 4)
            assert ((rates > 0) & (rates < 1)).all()
        generated[adaptive] = sum(len(r) for rounds in trainer.batch_rounds for r in rounds)
        if adaptive:  # after the first batch, a round is sized from the estimate (here about 0.4): ≤ 12 prompts
            assert all(len(rounds[0]) > 4 for rounds in trainer.batch_rounds[1:])
            assert any("dynamic_sampling/informative_estimate" in e for e in trainer.state.log_history)
    assert generated[True] < generated[False], generated


# ------------------------------------------------------------------------------------------ carried-over groups
def row_keys(rows):
    """One hashable key per row: its prompt and completion tokens."""
    columns = (rows["prompt_ids"], rows["prompt_mask"], rows["completion_ids"], rows["completion_mask"])
    return [(tuple(p[pm.bool()].tolist()), tuple(c[cm.bool()].tolist())) for p, pm, c, cm in zip(*columns)]


class CarryRecordingTrainer(RecordingNFTTrainer):
    """Also keeps, per generation batch, the carry buffer before and after it and the current policy's log-probs of
    the batch and of newly carried groups, taken right after the batch is built (before any update)."""

    def _generate_informative_batch(self, inputs):
        before = copy.deepcopy(self._dynamic_sampling_state["carry"]) if self._dynamic_sampling_state else []
        batch = super()._generate_informative_batch(inputs)
        new = [e for e in self._dynamic_sampling_state["carry"] if e["born_step"] == self.state.global_step]
        self.carry_log = getattr(self, "carry_log", []) + [{
            "before": before,
            "batch": batch,
            "now": self._policy_logps(batch),
            "new": [(e["rows"], self._policy_logps(e["rows"])) for e in new],
        }]
        return batch


def test_carried_groups_are_trained_later_with_their_generating_policy_as_pi_old(model, digits_dataset, tokenizer,
                                                                               tmp_path):
    """On-policy TRL computes no π_old; a carried group must still get the log-probs of the policy that sampled it."""
    args = tiny_args(NFTConfig, tmp_path, dynamic_sampling=True, per_device_train_batch_size=16, max_steps=5,
                     dynamic_sampling_first_round_oversample=3, dynamic_sampling_carry_over=True)
    trainer = CarryRecordingTrainer(model=model, reward_funcs=half_degenerate_reward, args=args,
                                    train_dataset=digits_dataset, processing_class=tokenizer)
    trainer.train()
    stored_any, carried_batches = False, 0
    for record in trainer.carry_log:
        for rows, logps in record["new"]:  # stored π_old = the generating policy's log-probs
            mask = rows["completion_mask"].bool()
            torch.testing.assert_close(rows["old_per_token_logps"][mask], logps[mask])
            stored_any = True
        carried = {}
        for entry in record["before"]:
            for key, old in zip(row_keys(entry["rows"]), entry["rows"]["old_per_token_logps"]):
                carried.setdefault(key, []).append(old)
        batch, now = record["batch"], record["now"]
        in_batch = [key in carried for key in row_keys(batch)]
        if not any(in_batch):
            assert "old_per_token_logps" not in batch  # no carried rows: TRL's on-policy path, untouched
            continue
        carried_batches += 1
        mask = batch["completion_mask"].bool()
        for row, (key, is_carried) in enumerate(zip(row_keys(batch), in_batch)):
            old, tokens = batch["old_per_token_logps"][row], mask[row]
            if is_carried:
                assert any(torch.allclose(old[tokens], o[tokens]) for o in carried[key])
                assert not torch.allclose(old[tokens], now[row][tokens], atol=1e-4)  # the policy has moved since
            else:
                torch.testing.assert_close(old[tokens], now[row][tokens])  # fresh rows: π_old = current policy
    assert stored_any and carried_batches >= 1
    history = [e for e in trainer.state.log_history if "dynamic_sampling/carried_frac" in e]
    assert any(e["dynamic_sampling/carried_frac"] > 0 for e in history)
    state = pickle.loads(pickle.dumps(trainer._dynamic_sampling_state))
    assert all(t.device.type == "cpu" for entry in state["carry"] for t in entry["rows"].values())


def test_carried_groups_older_than_the_maximum_age_are_dropped_and_counted(model, digits_dataset, tokenizer,
                                                                           tmp_path):
    trainer = make(model, digits_dataset, tokenizer, tmp_path, half_degenerate_reward, max_steps=4,
                   dynamic_sampling_first_round_oversample=3, dynamic_sampling_carry_over=True,
                   dynamic_sampling_max_carry_age=0)
    trainer.train()
    history = [e for e in trainer.state.log_history if "dynamic_sampling/carried_frac" in e]
    assert all(e["dynamic_sampling/carried_frac"] == 0 for e in history)
    assert sum(e["dynamic_sampling/carry_expired"] for e in history) > 0
    assert trainer._dynamic_sampling_state["totals"]["expired_groups"] > 0


def test_a_resumed_run_draws_the_same_prompts_and_carries_the_same_groups(model, digits_dataset, tokenizer, tmp_path):
    """The stream cursor, the estimate and the carried groups travel in the checkpoint (`_dynamic_sampling_state`)."""
    options = dict(max_steps=4, save_strategy="steps", save_steps=2, dynamic_sampling_first_round_oversample=3,
                   dynamic_sampling_carry_over=True, dynamic_sampling_adaptive=True)
    full = make(copy.deepcopy(model), digits_dataset, tokenizer, tmp_path / "full", half_degenerate_reward, **options)
    full.train()
    resumed = make(copy.deepcopy(model), digits_dataset, tokenizer, tmp_path / "resumed", half_degenerate_reward,
                   **options)
    resumed.train(resume_from_checkpoint=str(tmp_path / "full" / "checkpoint-2"))
    assert any("old_per_token_logps" in batch for _, batch in full.recorded[2:])  # carried groups after the resume
    assert resumed.batch_rounds == full.batch_rounds[2:]
    for (_, expected), (_, batch) in zip(full.recorded[2:], resumed.recorded):
        torch.testing.assert_close(batch["completion_ids"], expected["completion_ids"])
        if "old_per_token_logps" in expected:
            torch.testing.assert_close(batch["old_per_token_logps"], expected["old_per_token_logps"])
    assert full._dynamic_sampling_state["totals"] == resumed._dynamic_sampling_state["totals"]
