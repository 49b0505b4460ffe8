"""The six benchmarks from the hub, offline: local fixtures shaped like each hub dataset (ids, configs, splits, column
names and types) stand in for `datasets.load_dataset`; the files `--download_to` writes are read back identically."""

from __future__ import annotations

import json

import pytest

from tests.conftest import SHARED_DATA
from tests.math_recipe.hub_fixtures import hub_shaped, synthetic
from trl_nft.math_recipe import benchmarks
from trl_nft.math_recipe.benchmarks import BENCHMARKS, download_benchmarks, load_benchmark
from trl_nft.math_recipe.data import PAPER_INSTRUCTION

MATH_EVAL = SHARED_DATA / "math_eval"


# ------------------------------------------------------------------------------------------------- tests
def test_hub_rows_become_problem_answer_with_the_paper_instruction(fake_hub):
    hub = fake_hub({name: synthetic(name) for name in BENCHMARKS})
    for name, spec in BENCHMARKS.items():
        dataset = load_benchmark(name, limit=3)
        assert dataset.column_names == ["prompt", "answer", "problem"]
        assert dataset["problem"][1] == f"{name} problem 1: find $x$ if $x - 1 = 1$."
        assert dataset["prompt"][1] == [{"role": "user", "content": f"{dataset['problem'][1]}\n{PAPER_INSTRUCTION}"}]
        # AIME "002" and AMC 2.0 are read as 2; a list answer is its element
        assert dataset["answer"][1] == ("2" if spec.integer_answers else "\\frac{1}{2}"), name
    assert [call[0] for call in hub.calls] == [spec.hub_id for spec in BENCHMARKS.values()]
    assert ("Hothan/OlympiadBench", "OE_TO_maths_en_COMP", "train") in hub.calls


def test_list_answers_are_joined_and_numbers_written_plainly():
    assert benchmarks.answer_text(["$69$", "$84$"]) == "$69$,$84$"
    assert benchmarks.answer_text(27.0, integer_answers=True) == "27"
    assert benchmarks.answer_text(2.5, integer_answers=True) == "2.5"
    assert benchmarks.answer_text(" 025 ", integer_answers=True) == "25"
    assert benchmarks.answer_text("025") == "025"  # only AIME/AMC answers are integers
    assert benchmarks.answer_text(" 4.5e33\n") == "4.5e33"
    assert benchmarks.answer_text([]) is None and benchmarks.answer_text(None) is None


def test_downloaded_files_read_back_as_the_hub_rows(fake_hub, tmp_path):
    fake_hub({name: synthetic(name) for name in BENCHMARKS})
    written = download_benchmarks(tmp_path / "math_eval")
    assert sorted(path.name for path in written) == sorted(f"{name}.jsonl" for name in BENCHMARKS)
    for name in BENCHMARKS:
        first = json.loads((tmp_path / "math_eval" / f"{name}.jsonl").read_text().splitlines()[0])
        assert set(first) == {"problem", "answer"}
        from_files, from_hub = load_benchmark(name, tmp_path / "math_eval"), load_benchmark(name)
        assert from_files.to_dict() == from_hub.to_dict(), name
        assert len(from_files) == BENCHMARKS[name].num_problems


def test_a_hub_dataset_of_another_size_is_refused_and_nothing_is_written(fake_hub, tmp_path):
    tables = {name: synthetic(name) for name in BENCHMARKS}
    tables["olympiadbench"] = synthetic("olympiadbench", 675)  # the older release had 675 problems
    fake_hub(tables)
    with pytest.raises(ValueError, match=r"olympiadbench: Hothan/OlympiadBench, config OE_TO_maths_en_COMP, "
                                         r"split train has 675 rows, the paper's benchmark has 674"):
        download_benchmarks(tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="675 rows"):
        load_benchmark("olympiadbench")


def test_a_hub_dataset_without_the_expected_columns_is_named(fake_hub):
    from datasets import Dataset

    fake_hub({"minerva_math": Dataset.from_dict({"problem": ["p"] * 272, "solution": ["\\boxed{1}"] * 272})})
    with pytest.raises(ValueError, match=r"minerva_math: math-ai/minervamath, split test has no column "
                                         r"\['question', 'answer'\]"):
        load_benchmark("minerva_math")


def test_a_missing_local_file_says_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"`trl-nft eval --download_to .*` writes the six files"):
        load_benchmark("aime24", tmp_path)


@pytest.mark.skipif(not MATH_EVAL.is_dir(), reason=f"shared benchmark data not found at {MATH_EVAL}")
@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_the_paper_files_written_the_hub_way_read_the_same(fake_hub, name):
    """The paper's evaluation files, reshaped as the hub holds them (no instruction, AIME answers "025", AMC answers
    27.0, OlympiadBench answers in a list, `question` columns), give exactly the prompts and answers of the files."""
    from trl_nft.math_recipe.data import load_raw_dataset

    local = load_raw_dataset(MATH_EVAL / f"{name}.jsonl")
    problems = [problem[: -len(PAPER_INSTRUCTION)].rstrip("\n") for problem in local["problem"]]
    assert all(problem.endswith(PAPER_INSTRUCTION) for problem in local["problem"])
    fake_hub({name: hub_shaped(name, problems, local["answer"])})
    assert load_benchmark(name).to_dict() == load_benchmark(name, MATH_EVAL).to_dict()
