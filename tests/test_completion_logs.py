"""The completions table shows NFT's r, r̂ and r − r̂; dynamic-sampling rounds keep only the rows they train on."""

from __future__ import annotations

import math
from collections import defaultdict, deque
from types import SimpleNamespace

import pandas as pd
import pytest

from tests.conftest import first_char_parity_reward, tiny_args
from trl_nft import NFTConfig, NFTTrainer
from trl_nft.completion_logs import R_COLUMN, R_HAT_COLUMN, LogRound


def test_table_holds_correctness_group_rate_and_their_difference(model, prompt_dataset, tokenizer, tmp_path):
    group_size = 4
    args = tiny_args(NFTConfig, tmp_path, log_completions=True, num_generations=group_size)
    trainer = NFTTrainer(model=model, reward_funcs=first_char_parity_reward, args=args, train_dataset=prompt_dataset,
                         processing_class=tokenizer)
    trainer.train()

    table = pd.read_parquet(tmp_path / "completions" / "completions_00001.parquet")
    rewards = table["first_char_parity_reward"].tolist()
    assert len(table) == args.generation_batch_size
    assert table[R_COLUMN].tolist() == rewards  # a 0/1 verifier: the label is the reward
    for start in range(0, len(table), group_size):
        group_mean = sum(rewards[start : start + group_size]) / group_size
        assert table[R_HAT_COLUMN].iloc[start : start + group_size].tolist() == pytest.approx([group_mean] * group_size)
    assert table["advantage"].tolist() == pytest.approx((table[R_COLUMN] - table[R_HAT_COLUMN]).tolist())


def fake_trainer(maxlen: int):
    """An object with TRL's `_logs` layout (deques bounded like TRL's, sized to the generation batch)."""
    logs = {
        "images": deque(maxlen=maxlen),
        "prompt": deque(maxlen=maxlen),
        "completion": deque(maxlen=maxlen),
        "rewards": defaultdict(lambda: deque(maxlen=maxlen)),
        "advantages": deque(maxlen=maxlen),
        "extra": defaultdict(lambda: deque(maxlen=maxlen)),
    }
    return SimpleNamespace(_logs=logs)


def log_rows(trainer, tag: str, count: int):
    """What one round of TRL's logging plus `record_labels` appends: every column, one entry per row."""
    logs = trainer._logs
    logs["prompt"].extend(f"{tag}-p{i}" for i in range(count))
    logs["completion"].extend(f"{tag}-c{i}" for i in range(count))
    logs["rewards"]["accuracy"].extend(float(i % 2) for i in range(count))
    logs["advantages"].extend(float(i) for i in range(count))
    logs["extra"][R_COLUMN].extend(float(i % 2) for i in range(count))


def test_rounds_keep_only_the_rows_marked_and_never_evict_kept_rows():
    trainer = fake_trainer(maxlen=8)  # a generation batch of 8 completions
    with LogRound(trainer) as first:
        log_rows(trainer, "round1", 8)
        first.keep([0, 1, 2, 3])
    with LogRound(trainer) as refill:  # a 3x refill round: 24 rows, more than the table holds
        log_rows(trainer, "round2", 24)
        refill.keep(range(20, 24))
    logs = trainer._logs
    assert list(logs["prompt"]) == [f"round1-p{i}" for i in range(4)] + [f"round2-p{i}" for i in range(20, 24)]
    assert list(logs["advantages"]) == [0.0, 1.0, 2.0, 3.0, 20.0, 21.0, 22.0, 23.0]
    assert list(logs["rewards"]["accuracy"]) == [0.0, 1.0, 0.0, 1.0] * 2
    assert len(logs["extra"][R_COLUMN]) == 8
    assert isinstance(logs["prompt"], deque) and logs["prompt"].maxlen == 8  # TRL's bounded deques are back
    assert len(logs["images"]) == 0  # not logged for text prompts, so not padded either


def test_a_failed_round_logs_nothing():
    trainer = fake_trainer(maxlen=8)
    with pytest.raises(RuntimeError), LogRound(trainer) as round_log:
        log_rows(trainer, "round1", 8)
        round_log.keep([0, 1])
        raise RuntimeError("generation failed")
    assert len(trainer._logs["prompt"]) == 0 and isinstance(trainer._logs["prompt"], deque)


def test_unscorable_completions_show_nan():
    import torch

    from trl_nft.completion_logs import record_labels
    from trl_nft.labels import correctness_from_rewards

    rewards = torch.tensor([[1.0], [0.0], [float("nan")], [1.0]])
    labels = correctness_from_rewards(rewards, torch.ones(1), 4, reward_func_names=["verifier"])
    logs = fake_trainer(maxlen=4)._logs
    logs["advantages"].extend([9.0] * 4)  # GRPO's values, to be replaced
    record_labels(logs, labels, rewards, group_size=4)
    r, r_hat, advantage = list(logs["extra"][R_COLUMN]), list(logs["extra"][R_HAT_COLUMN]), list(logs["advantages"])
    assert r[:2] + r[3:] == [1.0, 0.0, 1.0] and math.isnan(r[2])
    assert r_hat == pytest.approx([2 / 3] * 4)
    assert advantage[0] == pytest.approx(1 / 3) and math.isnan(advantage[2]) and 9.0 not in advantage


def mostly_solved_reward(prompts, completions, **kwargs):
    """All-correct (degenerate) groups for prompts starting with 0, 1 or 2; the parity verifier for the others."""
    parity = first_char_parity_reward(completions)
    return [1.0 if prompt[0] in "012" else score for prompt, score in zip(prompts, parity)]


def test_dynamic_sampling_table_shows_only_trained_informative_groups(model, prompt_dataset, tokenizer, tmp_path):
    group_size = 4
    args = tiny_args(NFTConfig, tmp_path, log_completions=True, num_generations=group_size, dynamic_sampling=True,
                     max_generation_rounds=3)
    trainer = NFTTrainer(model=model, reward_funcs=mostly_solved_reward, args=args, train_dataset=prompt_dataset,
                         processing_class=tokenizer)
    trainer.train()

    table = pd.read_parquet(tmp_path / "completions" / "completions_00001.parquet")
    assert 0 < len(table) <= args.generation_batch_size and len(table) % group_size == 0
    assert ((table[R_HAT_COLUMN] > 0) & (table[R_HAT_COLUMN] < 1)).all()  # no all-right / all-wrong group shown
    assert table["advantage"].tolist() == pytest.approx((table[R_COLUMN] - table[R_HAT_COLUMN]).tolist())
