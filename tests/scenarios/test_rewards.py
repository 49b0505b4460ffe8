"""Rewards as GRPOTrainer users set them up: several functions with weights, `None` outputs, async functions, and a
reward model (with the `reward_threshold` NFT needs for scores that are not correctness labels)."""

from __future__ import annotations

import asyncio
import math

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForSequenceClassification

from tests.conftest import first_char_parity_reward, tiny_args
from tests.scenarios.conftest import logged, trains
from trl_nft import NFTConfig, NFTTrainer


def starts_with_digit(completions, **kwargs):
    return [float(c[:1].isdigit()) for c in completions]


async def async_parity(completions, **kwargs):
    await asyncio.sleep(0)
    return first_char_parity_reward(completions)


def parity_unless_odd_prompt(prompts, completions, **kwargs):
    """None (no opinion) for prompts whose first operand is odd, as a task-specific verifier would."""
    return [None if int(p[0]) % 2 else reward for p, reward in zip(prompts, first_char_parity_reward(completions))]


def never_sure(completions, **kwargs):
    return [None] * len(completions)


def test_weighted_sync_async_and_none_rewards_become_the_labels(model, prompt_dataset, tokenizer, tmp_path):
    """Labels are the weighted sum of the rewards a completion got (None ones skipped); completions no function
    scored are left out (r = NaN in the completions table) — checked row by row against what the functions returned."""
    funcs = [parity_unless_odd_prompt, async_parity, starts_with_digit, never_sure]
    weights = [0.5, 0.25, 0.25, 1.0]
    args = tiny_args(NFTConfig, tmp_path, reward_weights=weights, per_device_train_batch_size=16, optim="adamw_torch",
                     log_completions=True, num_completions_to_print=0)
    trainer = NFTTrainer(model=model, reward_funcs=funcs, args=args, train_dataset=prompt_dataset,
                         processing_class=tokenizer)
    trains(trainer, expected_metrics=[f"rewards/{f.__name__}/mean" for f in funcs[:3]] + ["nft/positive_loss"])

    table = trainer._logs
    rewards = torch.tensor([table["rewards"][f.__name__] for f in funcs], dtype=torch.float64).T  # (N, funcs)
    scorable = ~torch.isnan(rewards).all(dim=1)
    expected = (rewards * torch.tensor(weights, dtype=torch.float64)).nansum(dim=1)
    labels = torch.tensor(table["extra"]["r"], dtype=torch.float64)
    assert scorable.all()  # async_parity and starts_with_digit score every completion
    torch.testing.assert_close(labels, expected)
    assert logged(trainer, "rewards/never_sure/mean") == [None]  # TRL logs a function that scored nothing as None


def test_completions_no_function_scores_are_left_out(model, prompt_dataset, tokenizer, tmp_path):
    args = tiny_args(NFTConfig, tmp_path, per_device_train_batch_size=16, optim="adamw_torch", log_completions=True,
                     num_completions_to_print=0)
    trainer = NFTTrainer(model=model, reward_funcs=[parity_unless_odd_prompt], args=args,
                         train_dataset=prompt_dataset, processing_class=tokenizer)
    trains(trainer)
    prompts, labels = trainer._logs["prompt"], trainer._logs["extra"]["r"]
    assert all(math.isnan(r) == (int(p[0]) % 2 == 1) for p, r in zip(prompts, labels))


def save_reward_model(tokenizer, path, bias: float) -> str:
    """A tiny random sequence-classification model (one logit), saved with its tokenizer like a hub reward model."""
    torch.manual_seed(1)
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=1, intermediate_size=32, num_labels=1, pad_token_id=tokenizer.pad_token_id)
    reward_model = Qwen2ForSequenceClassification(config)
    with torch.no_grad():
        reward_model.score.weight.mul_(50.0)  # spread the scores so that groups differ
        if reward_model.score.bias is not None:
            reward_model.score.bias.fill_(bias)
    reward_model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def test_reward_model_needs_a_threshold_and_trains_with_one(model, prompt_dataset, tokenizer, tmp_path):
    reward_model = save_reward_model(tokenizer, tmp_path / "reward-model", bias=0.0)
    common = dict(per_device_train_batch_size=16, optim="adamw_torch")
    trainer = NFTTrainer(model=model, reward_funcs=reward_model, args=tiny_args(NFTConfig, tmp_path / "a", **common),
                         train_dataset=prompt_dataset, processing_class=tokenizer)
    # Its scores are logits: the error says that a threshold is needed and how to choose one.
    with pytest.raises(ValueError, match=r"outside \[0, 1\].*range from .*reward_threshold.*for a reward model"):
        trainer.train()

    args = tiny_args(NFTConfig, tmp_path / "b", reward_threshold=0.0, **common)
    trainer = NFTTrainer(model=model, reward_funcs=reward_model, args=args, train_dataset=prompt_dataset,
                         processing_class=tokenizer)
    trains(trainer, expected_metrics=["rewards/reward-model/mean", "nft/correct_rate_mean"])
    assert 0.0 < logged(trainer, "nft/correct_rate_mean")[0] < 1.0
