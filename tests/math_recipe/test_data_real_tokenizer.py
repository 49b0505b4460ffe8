"""`trl_nft.math_recipe.data` with the real Qwen2.5 tokenizer: the prompt-length filter and bad input, one test per case.

Each bad input must end as a clear error or a counted, logged drop — never a crash inside the trainer or a label
that is silently wrong (checked by scoring a correct completion against the loaded gold answer).
"""

from __future__ import annotations

import json
import logging

import pytest

from trl_nft.math_recipe.data import PAPER_INSTRUCTION, drop_long_prompts, load_math_dataset, prompt_token_counts
from trl_nft.rewards import math_accuracy_reward


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def load(tmp_path, rows, qwen_tokenizer, **kwargs):
    path = write_jsonl(tmp_path / "rows.jsonl", rows)
    kwargs.setdefault("max_prompt_tokens", 512)  # the official 7B prompt budget: the filter runs on every test
    return load_math_dataset(path, tokenizer=qwen_tokenizer, **kwargs)


def correct_completion_scores(dataset) -> list[float]:
    return math_accuracy_reward([f"So the answer is \\boxed{{{a}}}." for a in dataset["answer"]],
                                answer=dataset["answer"])


# ----------------------------------------------------------------------------------------- prompt length
def test_chat_prompts_are_counted_with_the_chat_template(qwen_tokenizer):
    prompt = [{"role": "user", "content": "What is 2+2?"}]
    rendered = qwen_tokenizer.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True)
    rendered = rendered["input_ids"] if isinstance(rendered, dict) or hasattr(rendered, "keys") else rendered
    bare = len(qwen_tokenizer("What is 2+2?").input_ids)
    assert prompt_token_counts([prompt], qwen_tokenizer) == [len(rendered)]
    assert len(rendered) > bare + 20  # the default system turn and the role markers count against the budget
    assert prompt_token_counts(["What is 2+2?"], qwen_tokenizer) == [bare]


def test_overlong_prompts_are_dropped_counted_and_logged(tmp_path, qwen_tokenizer, caplog):
    rows = [{"problem": "What is 1+1?", "answer": "2"},
            {"problem": "Add these: " + "1 + " * 400 + "1.", "answer": "401"},
            {"problem": "What is 2+3?", "answer": "5"}]
    counts = prompt_token_counts(load(tmp_path, rows, qwen_tokenizer, max_prompt_tokens=10_000)["prompt"],
                                 qwen_tokenizer)
    budget = sorted(counts)[1]  # the two short prompts fit exactly, the long one does not
    with caplog.at_level(logging.WARNING, logger="trl_nft.math_recipe.data"):
        dataset = load(tmp_path, rows, qwen_tokenizer, max_prompt_tokens=budget)
    assert dataset["answer"] == ["2", "5"]
    assert "dropped 1 of 3 prompts longer than max_prompt_tokens=" in caplog.text
    with pytest.raises(ValueError, match="all 3 prompts are longer than max_prompt_tokens=5"):
        load(tmp_path, rows, qwen_tokenizer, max_prompt_tokens=5)


def test_filter_needs_a_tokenizer_and_a_positive_budget(tmp_path, qwen_tokenizer):
    dataset = load(tmp_path, [{"problem": "What is 1+1?", "answer": "2"}], qwen_tokenizer)
    with pytest.raises(ValueError, match="needs the model's tokenizer"):
        drop_long_prompts(dataset, None, 512)
    for bad in (0, -3, 1.5, True):
        with pytest.raises(ValueError, match=f"max_prompt_tokens must be a positive integer, got {bad!r}"):
            drop_long_prompts(dataset, qwen_tokenizer, bad)


# ------------------------------------------------------------------------------------------- bad input
def test_empty_problems_are_dropped_counted_and_logged(tmp_path, qwen_tokenizer, caplog):
    rows = [{"problem": "", "answer": "1"}, {"problem": "   \n", "answer": "1"}, {"problem": "\u200b", "answer": "1"},
            {"problem": PAPER_INSTRUCTION, "answer": "1"}, {"problem": "What is 3-2?", "answer": "1"}]
    with caplog.at_level(logging.WARNING, logger="trl_nft.math_recipe.data"):
        dataset = load(tmp_path, rows, qwen_tokenizer)
    assert dataset["problem"] == ["What is 3-2?"]
    assert "dropped 4 of 5 rows (4 without a usable problem" in caplog.text


def test_integer_answers_become_exact_gold_text(tmp_path, qwen_tokenizer):
    dataset = load(tmp_path, [{"problem": f"What is {n}+{n}?", "answer": 2 * n} for n in (0, 9, 500)], qwen_tokenizer)
    assert dataset["answer"] == ["0", "18", "1000"]
    assert correct_completion_scores(dataset) == [1.0, 1.0, 1.0]


def test_float_answers_are_written_without_exponents(tmp_path, qwen_tokenizer, caplog):
    # str(1e-05) == "1e-05": a completion writing 0.00001 would be marked wrong against it
    answers = [0.5, 1e-05, 18.0, 2.5e20, float("nan")]
    rows = [{"problem": f"Problem {i}?", "answer": a} for i, a in enumerate(answers)]
    with caplog.at_level(logging.WARNING, logger="trl_nft.math_recipe.data"):
        dataset = load(tmp_path, rows, qwen_tokenizer)
    assert dataset["answer"] == ["0.5", "0.00001", "18", "250000000000000000000"]
    assert correct_completion_scores(dataset) == [1.0] * 4
    assert "1 without a usable answer" in caplog.text  # NaN


def test_list_answers_become_one_gold_or_are_dropped(tmp_path, qwen_tokenizer, caplog):
    answers = [["7"], [3, -3], [], ["1/2", 2.5]]
    rows = [{"problem": f"Problem {i}?", "answer": a} for i, a in enumerate(answers)]
    with caplog.at_level(logging.WARNING, logger="trl_nft.math_recipe.data"):
        dataset = load(tmp_path, rows, qwen_tokenizer)
    assert dataset["answer"] == ["7", "3, -3", "1/2, 2.5"]  # never the Python repr "['7']"
    assert correct_completion_scores(dataset) == [1.0, 1.0, 1.0]
    assert "dropped 1 of 4 rows (1 without a usable answer" in caplog.text  # the empty list


def test_unusual_unicode_is_tokenized_and_scored_correctly(tmp_path, qwen_tokenizer):
    rows = [
        {"problem": "Combien font 2+3 ? Réponse en chiffres \U0001F600", "answer": "5"},
        {"problem": "\u0645\u0627 \u0647\u0648 \u0663+\u0664\u061f", "answer": "7"},  # Arabic, with Arabic-Indic digits
        {"problem": "Cafe\u0301 bill: 1\u00a0200 minus 200?", "answer": "1\u200b000"},  # combining accent, NBSP
        {"problem": "x\u202e = 4, x\u00b2 = ?", "answer": "\ufeff16"},  # bidi override, BOM in the gold
    ]
    dataset = load(tmp_path, rows, qwen_tokenizer, prompt_format="plain")
    assert dataset["answer"] == ["5", "7", "1000", "16"]  # invisible characters do not become part of the gold
    assert correct_completion_scores(dataset) == [1.0] * 4
    for prompt, count in zip(dataset["prompt"], prompt_token_counts(dataset["prompt"], qwen_tokenizer)):
        ids = qwen_tokenizer(prompt).input_ids
        assert len(ids) == count and qwen_tokenizer.unk_token_id not in ids  # byte-level BPE: nothing is unknown
        assert qwen_tokenizer.decode(ids) == prompt.replace("e\u0301", "\u00e9")  # only NFC normalisation
