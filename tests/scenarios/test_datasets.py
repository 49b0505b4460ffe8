"""Datasets as GRPOTrainer users pass them: streaming, standard and conversational prompts, extra columns."""

from __future__ import annotations

import pytest
from datasets import Dataset

from tests.conftest import first_char_parity_reward, tiny_args
from tests.scenarios.conftest import captured_warnings, chat_tokenizer, false_for_nft, logged, trains
from trl_nft import NFTConfig, NFTTrainer


def test_streaming_train_and_eval_datasets(model, tokenizer, prompt_dataset, tmp_path):
    """IterableDatasets (what `load_dataset(..., streaming=True)` returns) for training and evaluation, as in TRL."""
    stream = prompt_dataset.to_iterable_dataset()
    args = tiny_args(NFTConfig, tmp_path, max_steps=2, per_device_train_batch_size=16, per_device_eval_batch_size=8,
                     optim="adamw_torch")
    trainer = NFTTrainer(model=model, reward_funcs=first_char_parity_reward, args=args, train_dataset=stream,
                         eval_dataset=prompt_dataset.select(range(4)).to_iterable_dataset(), processing_class=tokenizer)
    trains(trainer)
    metrics = trainer.evaluate()
    for key in ("eval_loss", "eval_reward", "eval_nft/correct_rate_mean", "eval_nft/positive_loss", "eval_entropy"):
        assert key in metrics, key


def conversational(dataset: Dataset) -> Dataset:
    return dataset.map(lambda row: {"prompt": [{"role": "user", "content": row["prompt"]}]})


@pytest.mark.parametrize("prompt_format", ["standard", "conversational"])
@pytest.mark.parametrize("level", ["token", "sequence"])
def test_standard_and_conversational_prompts(model, prompt_dataset, tmp_path, prompt_format, level):
    """Both of TRL's prompt formats reach generation and the reward functions as in GRPO; at either importance
    sampling level, and without TRL's sequence-level warning, which is false for NFT."""
    seen = []

    def first_char_parity(prompts, completions, **kwargs):
        seen.append((prompts[0], completions[0]))
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return first_char_parity_reward(texts)

    dataset = prompt_dataset if prompt_format == "standard" else conversational(prompt_dataset)
    args = tiny_args(NFTConfig, tmp_path, per_device_train_batch_size=16, optim="adamw_torch",
                     importance_sampling_level=level)
    with captured_warnings() as messages:
        trainer = NFTTrainer(model=model, reward_funcs=first_char_parity, args=args, train_dataset=dataset,
                             processing_class=chat_tokenizer())
        trains(trainer)
    assert false_for_nft(messages) == []
    prompt, completion = seen[0]
    if prompt_format == "standard":
        assert isinstance(prompt, str) and isinstance(completion, str)
    else:  # TRL hands conversations over as message lists, the completion as one assistant message
        assert prompt[-1]["role"] == "user" and completion[0]["role"] == "assistant"


def test_extra_dataset_columns_reach_the_reward_function(model, tokenizer, tmp_path):
    """Every column besides the prompt arrives in the reward function's kwargs, aligned with its completions."""
    prompts = [f"{a}*{b}=" for a in range(4) for b in range(4)]
    dataset = Dataset.from_dict({
        "prompt": prompts,
        "answer": [str(int(p[0]) * int(p[2])) for p in prompts],
        "source": [f"row{index}" for index in range(len(prompts))],
    })
    received = []

    def answer_aware(prompts, completions, answer, source, **kwargs):
        received.extend(zip(prompts, answer, source))
        return first_char_parity_reward(completions)

    args = tiny_args(NFTConfig, tmp_path, per_device_train_batch_size=16, optim="adamw_torch")
    trainer = NFTTrainer(model=model, reward_funcs=answer_aware, args=args, train_dataset=dataset,
                         processing_class=tokenizer)
    trains(trainer)
    rows = {row["prompt"]: (row["answer"], row["source"]) for row in dataset}
    assert len(received) == 16
    assert all(rows[prompt] == (answer, source) for prompt, answer, source in received)
    assert logged(trainer, "rewards/answer_aware/mean")
