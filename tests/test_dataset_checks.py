"""Datasets NFTTrainer cannot train on are refused at construction, with the dataset, the column and the fix."""

from __future__ import annotations

import pytest
from datasets import Dataset

from tests.conftest import first_char_parity_reward, tiny_args
from trl_nft import NFTConfig, NFTTrainer
from trl_nft.rewards import MathAccuracyReward


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
