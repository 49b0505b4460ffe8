"""Environments with tools (`environment_factory`), as GRPO users run agentic tasks: the environment supplies the
prompt through `reset()`, the model calls its methods as tools, and the reward reads the environment's state.

The tiny model cannot write a tool call, so `generate` is replaced by a scripted one (as TRL's own tests do): in each
group of four, two completions call the tool and two do not, so every group is mixed.
"""

from __future__ import annotations

import os
from unittest.mock import patch

import pytest
from datasets import Dataset

from tests.conftest import tiny_args
from tests.scenarios.conftest import NFT_METRICS, chat_tokenizer, logged, scripted_generate, trains
from trl_nft import NFTConfig, NFTTrainer

class Counter:
    """Asks for one increment."""

    resets: list[dict] = []

    def reset(self, **kwargs):
        Counter.resets.append(kwargs)
        self.count = 0
        return "Count to one."

    def increment(self, step: int) -> int:
        """
        Add to the counter.

        Args:
            step: How much to add.

        Returns:
            The new count.
        """
        self.count += step
        return self.count


class ScoredCounter(Counter):
    """A Counter that owns its reward (TRL adds `get_reward` as one more reward source, of weight 1)."""

    def get_reward(self) -> float:
        return float(self.count == 1)


def counted_to_one(completions, environments, **kwargs):
    return [float(env.count == 1) for env in environments]


def train_with_scripted_tools(trainer, tokenizer, expected_metrics):
    with patch.object(trainer.model, "generate", side_effect=scripted_generate(tokenizer)):
        trains(trainer, expected_metrics)
    assert logged(trainer, "tools/call_frequency") == [pytest.approx(0.5)]
    assert logged(trainer, "tools/failure_frequency") == [0.0]


@pytest.fixture(autouse=True)
def quiet_experimental_warning(monkeypatch):
    monkeypatch.setitem(os.environ, "TRL_EXPERIMENTAL_SILENCE", "1")
    Counter.resets.clear()


def environment_args(tmp_path):
    return tiny_args(NFTConfig, tmp_path, per_device_train_batch_size=4, max_completion_length=32,
                     optim="adamw_torch", shuffle_dataset=False)


def test_prompts_from_the_environment_and_reward_from_its_state(model, tmp_path):
    """A dataset of only an `environment` column routes each row to its environment, whose reset() is the prompt."""
    tokenizer = chat_tokenizer()
    dataset = Dataset.from_dict({"environment": ["counter"] * 4})
    trainer = NFTTrainer(model=model, reward_funcs=counted_to_one, args=environment_args(tmp_path),
                         train_dataset=dataset, processing_class=tokenizer, environment_factory={"counter": Counter})
    train_with_scripted_tools(trainer, tokenizer, (*NFT_METRICS, "rewards/counted_to_one/mean"))
    assert Counter.resets and all("environment" not in kwargs for kwargs in Counter.resets)
    assert all("Count to one." in prompt[-1]["content"] for prompt in trainer._logs["prompt"])


def test_environment_owned_reward_without_a_dataset(model, tmp_path):
    """No train_dataset and no reward_funcs: the environment supplies the prompts and, with get_reward, the labels."""
    tokenizer = chat_tokenizer()
    trainer = NFTTrainer(model=model, args=environment_args(tmp_path), processing_class=tokenizer,
                         environment_factory=ScoredCounter)
    train_with_scripted_tools(trainer, tokenizer, (*NFT_METRICS, "rewards/ScoredCounter/mean"))
    assert logged(trainer, "nft/correct_rate_mean") == [0.5]
