"""Datasets NFTTrainer cannot train on are refused at construction, with the dataset, the column and the fix."""

from __future__ import annotations

import os

import pytest
from datasets import Dataset, Features, IterableDataset, Value
from trl.chat_template_utils import qwen2_5_chat_template

from tests.conftest import first_char_parity_reward, tiny_args
from trl_nft import NFTConfig, NFTTrainer
from trl_nft.rewards import MathAccuracyReward
from trl_nft.testing.tiny_models import build_char_tokenizer


def build(model, tokenizer, tmp_path, train_dataset, reward=first_char_parity_reward, eval_dataset=None):
    return NFTTrainer(model=model, reward_funcs=reward, args=tiny_args(NFTConfig, tmp_path), processing_class=tokenizer,
                      train_dataset=train_dataset, eval_dataset=eval_dataset)


def test_missing_prompt_column(model, tokenizer, tmp_path):
    questions = Dataset.from_dict({"question": ["1+1=", "2+2="], "answer": ["2", "4"]})
    expected = r"train_dataset has no 'prompt' column.*\['question', 'answer'\].*rename_column"
    with pytest.raises(ValueError, match=expected):
        build(model, tokenizer, tmp_path, questions)


def test_math_reward_needs_an_answer_column(model, tokenizer, tmp_path):
    no_golds = Dataset.from_dict({"prompt": ["1+1=", "2+2="], "gold": ["2", "4"]})
    expected = r"train_dataset has no 'answer' \(or 'solution'\) column.*math_accuracy_reward"
    with pytest.raises(ValueError, match=expected):
        build(model, tokenizer, tmp_path, no_golds, reward=MathAccuracyReward(num_workers=1))


def test_eval_datasets_are_checked_by_name(model, tokenizer, tmp_path, prompt_dataset):
    broken = Dataset.from_dict({"text": ["1+1="]})
    with pytest.raises(ValueError, match=r"eval_dataset\['math500'\] has no 'prompt' column"):
        build(model, tokenizer, tmp_path, prompt_dataset, eval_dataset={"math500": broken})


def test_chat_prompts_need_a_chat_template(model, tokenizer, tmp_path):
    assert tokenizer.chat_template is None  # the tests' character tokenizer has none
    chat = Dataset.from_dict({"prompt": [[{"role": "user", "content": "1+1="}]] * 2, "answer": ["2", "2"]})
    with pytest.raises(ValueError, match=r"train_dataset holds conversational prompts.*no chat template.*plain"):
        build(model, tokenizer, tmp_path, chat)


def test_a_good_dataset_passes(model, tokenizer, tmp_path, prompt_dataset):
    assert build(model, tokenizer, tmp_path, prompt_dataset).train_dataset is prompt_dataset


def counting_stream(features, rows):
    """An IterableDataset with declared features whose generator counts how often it is opened."""
    opened = []

    def generate():
        opened.append(1)
        yield from rows

    return IterableDataset.from_generator(generate, features=Features(features)), opened


def test_streaming_datasets_are_checked_without_reading_them(model, tokenizer, tmp_path, prompt_dataset):
    """Train and eval streams that declare their columns are accepted, and not opened before training."""
    rows = list(prompt_dataset)
    train, train_opened = counting_stream({"prompt": Value("string"), "answer": Value("string")}, rows)
    evaluation, eval_opened = counting_stream({"prompt": Value("string"), "answer": Value("string")}, rows[:4])
    trainer = build(model, tokenizer, tmp_path, train, eval_dataset={"stream": evaluation})
    assert trainer.train_dataset is train and train_opened == eval_opened == []
    questions, _ = counting_stream({"question": Value("string")}, [{"question": "1+1="}])
    with pytest.raises(ValueError, match=r"eval_dataset has no 'prompt' column.*\['question'\]"):
        build(model, tokenizer, tmp_path, train, eval_dataset=questions)


def test_streamed_chat_prompts_need_a_chat_template(model, tokenizer, tmp_path):
    messages = [{"role": Value("string"), "content": Value("string")}]  # a list of messages
    chat, opened = counting_stream({"prompt": messages}, [{"prompt": [{"role": "user", "content": "1+1="}]}])
    with pytest.raises(ValueError, match=r"train_dataset holds conversational prompts.*no chat template"):
        build(model, tokenizer, tmp_path, chat)
    assert opened == []


class Echo:
    def reset(self, **kwargs):
        return "Say something."

    def shout(self, text: str) -> str:
        """
        Shout the text.

        Args:
            text: What to shout.

        Returns:
            The text in upper case.
        """
        return text.upper()


def test_environment_rows_need_no_prompt_column(model, tmp_path, monkeypatch):
    """With environment_factory TRL takes each prompt from the environment's reset(): a dataset of only an
    `environment` column is valid (trained end to end in tests/scenarios/test_environments.py)."""
    monkeypatch.setitem(os.environ, "TRL_EXPERIMENTAL_SILENCE", "1")
    tokenizer = build_char_tokenizer()
    tokenizer.chat_template = qwen2_5_chat_template  # renders tools
    routing = Dataset.from_dict({"environment": ["echo"] * 4})
    trainer = NFTTrainer(model=model, reward_funcs=first_char_parity_reward, args=tiny_args(NFTConfig, tmp_path),
                         processing_class=tokenizer, train_dataset=routing, environment_factory={"echo": Echo})
    assert trainer.train_dataset is routing
