"""Tests for trl_nft.math_recipe.data: every supported source loads into prompt/answer/problem columns in the paper's format."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from trl_nft.math_recipe.data import (
    DAPO_PREFIX,
    DAPO_SUFFIX,
    PAPER_INSTRUCTION,
    build_prompt,
    load_math_dataset,
    with_instruction,
)

from tests.conftest import SHARED_DATA



def _shared(relative: str) -> Path:
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"shared data not found at {path}")
    return path


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_instruction_is_appended_once():
    once = with_instruction("What is 1+1?")
    assert once == f"What is 1+1?\n{PAPER_INSTRUCTION}"
    assert with_instruction(once) == once
    assert build_prompt("What is 1+1?", "plain") == once
    assert build_prompt("What is 1+1?", "chat") == [{"role": "user", "content": once}]
    assert build_prompt("Q", "chat", system_prompt="Be brief.")[0] == {"role": "system", "content": "Be brief."}
    with pytest.raises(ValueError, match="prompt_format"):
        build_prompt("Q", "xml")


def test_math_eval_jsonl_loads_without_doubling_the_instruction():
    dataset = load_math_dataset(_shared("math_eval/aime24.jsonl"))
    assert dataset.column_names == ["prompt", "answer", "problem"]
    assert len(dataset) == 30
    first = dataset[0]
    assert first["answer"] == "204"
    assert first["prompt"][0]["role"] == "user"
    assert first["prompt"][0]["content"].count(PAPER_INSTRUCTION) == 1
    assert PAPER_INSTRUCTION not in first["problem"]


def test_gsm8k_directory_split_and_file_load_with_numeric_golds():
    from_directory = load_math_dataset(_shared("gsm8k"), split="test", prompt_format="plain", limit=5)
    assert len(from_directory) == 5
    assert from_directory[0]["answer"] == "18"
    assert from_directory[0]["prompt"].endswith(PAPER_INSTRUCTION)
    assert "####" not in from_directory[0]["prompt"]
    from_file = load_math_dataset(_shared("gsm8k/train.jsonl"), limit=2)
    assert from_file[0]["answer"] == "72"


def test_bad_rows_are_dropped_and_counted(tmp_path, caplog):
    path = _write_jsonl(
        tmp_path / "mixed.jsonl",
        [
            {"problem": "What is 2+2?", "answer": "4"},
            {"problem": "", "answer": "1"},
            {"problem": "   ", "answer": "1"},
            {"problem": "No gold here", "answer": ""},
            {"problem": "Null gold", "answer": None},
            {"problem": None, "answer": "3"},
        ],
    )
    with caplog.at_level(logging.INFO, logger="trl_nft.math_recipe.data"):
        dataset = load_math_dataset(path)
    assert dataset["answer"] == ["4"]
    assert "dropped 5 of 6 rows" in caplog.text


def test_empty_result_raises_naming_the_source(tmp_path):
    path = _write_jsonl(tmp_path / "empty_golds.jsonl", [{"problem": "Q", "answer": ""}])
    with pytest.raises(ValueError, match="empty_golds.jsonl"):
        load_math_dataset(path)


def test_plain_and_chat_formats_hold_the_same_text(tmp_path):
    path = _write_jsonl(tmp_path / "one.jsonl", [{"problem": "Compute $3 \\times 4$.", "answer": "12"}])
    plain = load_math_dataset(path, prompt_format="plain")[0]["prompt"]
    chat = load_math_dataset(path, prompt_format="chat")[0]["prompt"]
    assert isinstance(plain, str)
    assert chat == [{"role": "user", "content": plain}]


def test_local_parquet_and_csv(tmp_path):
    from datasets import Dataset

    rows = {"question": ["How many legs do 3 cats have?", "Half of 9?"], "answer": ["12", "4.5"]}
    Dataset.from_dict(rows).to_parquet(str(tmp_path / "tiny.parquet"))
    (tmp_path / "tiny.csv").write_text("problem,answer\nWhat is 6*7?,42\nWhat is 10/4?,2.5\n")
    parquet = load_math_dataset(tmp_path / "tiny.parquet", prompt_format="plain")
    csv = load_math_dataset(tmp_path / "tiny.csv", prompt_format="plain")
    assert parquet["answer"] == ["12", "4.5"]
    assert csv["answer"] == ["42", "2.5"]  # csv integers come back as text, not "42.0"
    assert csv[0]["problem"] == "What is 6*7?"


def test_dapo_schema_is_converted_and_deduplicated(tmp_path):
    def dapo_row(problem: str, answer: str, index: int) -> dict:
        content = f"{DAPO_PREFIX}\n\n{problem}\n\n{DAPO_SUFFIX}"
        return {
            "data_source": "math_dapo",
            "prompt": [{"content": content, "role": "user"}],
            "ability": "MATH",
            "reward_model": {"ground_truth": answer, "style": "rule-lean"},
            "extra_info": {"index": str(index)},
        }

    rows = [dapo_row("Find $x$ if $x+1=35$.", "34", 0), dapo_row("Find $y$ if $2y=6$.", "3", 1)]
    path = _write_jsonl(tmp_path / "dapo.jsonl", rows * 3)  # the hub copy repeats its problems
    dataset = load_math_dataset(path)
    assert dataset["answer"] == ["34", "3"]
    assert dataset[0]["problem"] == "Find $x$ if $x+1=35$."
    content = dataset[0]["prompt"][0]["content"]
    assert content == f"Find $x$ if $x+1=35$.\n{PAPER_INSTRUCTION}"
    assert "Answer:" not in content
    assert len(load_math_dataset(path, deduplicate=False)) == 6


def test_math_solution_column_and_explicit_columns(tmp_path):
    path = _write_jsonl(
        tmp_path / "math_style.jsonl",
        [{"problem": "Simplify $\\frac{2}{4}$.", "solution": "We get $\\boxed{\\frac{1}{2}}$.", "q": "alt", "a": "9"}],
    )
    assert load_math_dataset(path)[0]["answer"] == "\\frac{1}{2}"
    explicit = load_math_dataset(path, problem_column="q", answer_column="a")[0]
    assert (explicit["problem"], explicit["answer"]) == ("alt", "9")
    with pytest.raises(ValueError, match="not found"):
        load_math_dataset(path, problem_column="missing")


def test_chat_format_with_a_tokenizer_without_template_names_source_and_fix(tmp_path):
    from trl_nft.testing.tiny_models import build_char_tokenizer

    path = tmp_path / "problems.jsonl"
    path.write_text(json.dumps({"problem": "1+1?", "answer": "2"}) + "\n")
    expected = r"problems.jsonl: prompt_format='chat'.*no chat template.*prompt_format='plain'"
    with pytest.raises(ValueError, match=expected):
        load_math_dataset(path, tokenizer=build_char_tokenizer())
    assert load_math_dataset(path, prompt_format="plain", tokenizer=build_char_tokenizer())["answer"] == ["2"]


def test_missing_column_error_names_the_dataset_and_the_fix(tmp_path):
    path = tmp_path / "odd.jsonl"
    path.write_text(json.dumps({"text": "1+1?", "answer": "2"}) + "\n")
    with pytest.raises(ValueError, match=r"odd.jsonl: no problem column .*\['text', 'answer'\].*problem_column="):
        load_math_dataset(path)
