r"""The NFT paper's six evaluation benchmarks: where each one lives on the Hugging Face hub, how its rows become
``problem`` / ``answer``, and a local copy for machines without internet.

`trl-nft eval` reads them from the hub by default; ``--data_dir DIR`` reads ``DIR/<name>.jsonl`` (or ``.json`` /
``.parquet``) instead, and ``--download_to DIR`` writes those six files once, from the hub, for a cluster without
internet. The files hold one ``{"problem": ..., "answer": ...}`` object per line — the problem as the hub has it, the
answer as plain text — and are read by the same code as the hub rows, so both give the same prompts.

Sources (the versions the paper's numbers were measured on: 30 / 500 / 30 / 40 / 674 / 272 problems):

=============  ============================  ===================  =====  =====================================
benchmark      hub dataset                   config               split  columns (problem, answer)
=============  ============================  ===================  =====  =====================================
aime24         HuggingFaceH4/aime_2024       default              train  problem, answer ("025" -> "25")
math500        HuggingFaceH4/MATH-500        default              test   problem, answer
aime25         math-ai/aime25                default              test   problem, answer
amc23          math-ai/amc23                 default              test   question, answer (27.0 -> "27")
olympiadbench  Hothan/OlympiadBench          OE_TO_maths_en_COMP  train  question, final_answer (list, joined)
minerva_math   math-ai/minervamath           default              test   question, answer
=============  ============================  ===================  =====  =====================================

None of them carries the paper's instruction ("Please reason step by step, ..."): the prompt builder adds it.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trl_nft.math_recipe.data import to_math_prompts
from trl_nft.rewards.answers import gold_value_text

logger = logging.getLogger(__name__)

DATA_SUFFIXES = (".jsonl", ".json", ".parquet")


@dataclass(frozen=True)
class Benchmark:
    """One benchmark: its name (``--benchmarks``, the local file ``<name>.jsonl``), its column in the paper's table,
    the paper's k for avg@k, its problem count, and where and how to read it from the hub."""

    name: str
    column: str
    paper_samples: int
    num_problems: int
    hub_id: str
    hub_config: str | None
    hub_split: str
    problem_column: str
    answer_column: str
    integer_answers: bool = False  # AIME / AMC: "025" and 27.0 are written 25 and 27

    @property
    def hub_source(self) -> str:
        config = f", config {self.hub_config}" if self.hub_config else ""
        return f"{self.hub_id}{config}, split {self.hub_split}"


# In the paper's table order.
BENCHMARKS = {
    b.name: b
    for b in (
        Benchmark("aime24", "AIME24", 32, 30, "HuggingFaceH4/aime_2024", None, "train", "problem", "answer",
                  integer_answers=True),
        Benchmark("math500", "MATH500", 1, 500, "HuggingFaceH4/MATH-500", None, "test", "problem", "answer"),
        Benchmark("aime25", "AIME25", 32, 30, "math-ai/aime25", None, "test", "problem", "answer",
                  integer_answers=True),
        Benchmark("amc23", "AMC23", 32, 40, "math-ai/amc23", None, "test", "question", "answer",
                  integer_answers=True),
        Benchmark("olympiadbench", "Olympiad", 1, 674, "Hothan/OlympiadBench", "OE_TO_maths_en_COMP", "train",
                  "question", "final_answer"),
        Benchmark("minerva_math", "Minerva", 1, 272, "math-ai/minervamath", None, "test", "question", "answer"),
    )
}


def benchmark(name: str) -> Benchmark:
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; choose from {list(BENCHMARKS)}")
    return BENCHMARKS[name]


def answer_text(value: Any, integer_answers: bool = False) -> str | None:
    """A hub answer cell as plain text: lists (OlympiadBench's ``final_answer``) joined by commas, numbers written as
    a solution writes them (27.0 -> 27), and with ``integer_answers`` leading zeros dropped ("025" -> 25)."""
    if isinstance(value, (list, tuple)):
        parts = [answer_text(item, integer_answers) for item in value]
        return None if not parts or None in parts else ",".join(parts)
    text = gold_value_text(value)
    if text is None:
        return None
    text = text.strip()
    if integer_answers and re.fullmatch(r"[+-]?\d+", text):
        text = str(int(text))
    return text or None


def benchmark_file(data_dir: str | Path, name: str) -> Path:
    """Path of benchmark ``name`` in ``data_dir`` (``.jsonl``, ``.json`` or ``.parquet``)."""
    for suffix in DATA_SUFFIXES:
        path = Path(data_dir) / f"{name}{suffix}"
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"benchmark {name!r} not found in {data_dir} (expected {name}.jsonl/.json/.parquet; "
        f"`trl-nft eval --download_to {data_dir}` writes the six files)"
    )


def load_hub_rows(name: str):
    """Benchmark ``name`` from the hub as a table of ``problem`` / ``answer`` strings, checked complete.

    Needs internet, or the datasets cache of an earlier download with ``HF_HUB_OFFLINE=1``.
    """
    from datasets import Dataset, load_dataset

    spec = benchmark(name)
    raw = load_dataset(spec.hub_id, spec.hub_config, split=spec.hub_split)
    missing = [column for column in (spec.problem_column, spec.answer_column) if column not in raw.column_names]
    if missing:
        raise ValueError(f"{name}: {spec.hub_source} has no column {missing} (its columns: {raw.column_names}); "
                         "the hub dataset changed: use --data_dir with your own copy")
    rows = {"problem": [], "answer": []}
    for index, (problem, answer) in enumerate(zip(raw[spec.problem_column], raw[spec.answer_column])):
        text = answer_text(answer, spec.integer_answers)
        if not isinstance(problem, str) or not problem.strip() or text is None:
            raise ValueError(f"{name}: row {index} of {spec.hub_source} has no usable problem or answer "
                             f"({spec.problem_column}={problem!r}, {spec.answer_column}={answer!r})")
        rows["problem"].append(problem)
        rows["answer"].append(text)
    if len(rows["problem"]) != spec.num_problems:
        raise ValueError(
            f"{name}: {spec.hub_source} has {len(rows['problem'])} rows, the paper's benchmark has "
            f"{spec.num_problems}; the hub dataset changed, so scores would not compare with the paper's. Use "
            "--data_dir with a copy of the paper's version"
        )
    return Dataset.from_dict(rows)


def load_local_rows(data_dir: str | Path, name: str):
    """Benchmark ``name`` from a local folder, unchanged (any columns `load_math_dataset` understands)."""
    from trl_nft.math_recipe.data import load_raw_dataset

    path = benchmark_file(data_dir, name)
    rows = load_raw_dataset(path)
    expected = benchmark(name).num_problems
    if len(rows) != expected:
        logger.warning("%s: %s has %d problems, the paper's benchmark %d: scores will not compare with the paper's",
                       name, path, len(rows), expected)
    return rows


def load_benchmark(name: str, data_dir: str | Path | None = None, prompt_format: str = "chat",
                   limit: int | None = None):
    """Benchmark ``name`` as ``prompt`` / ``answer`` / ``problem`` columns (see `trl_nft.math_recipe.data`): from
    ``data_dir`` when given, else from the hub. ``limit`` keeps the first N problems."""
    if data_dir is None:
        rows, source = load_hub_rows(name), benchmark(name).hub_id
    else:
        rows, source = load_local_rows(data_dir, name), str(benchmark_file(data_dir, name))
    dataset = to_math_prompts(rows, prompt_format=prompt_format, source_name=source)
    return dataset if limit is None else dataset.select(range(min(limit, len(dataset))))


def download_benchmarks(directory: str | Path, names: list[str] | None = None) -> list[Path]:
    """Write ``<name>.jsonl`` (``problem`` / ``answer`` per line) for each benchmark into ``directory``, from the hub:
    once, on a machine with internet; `trl-nft eval --data_dir DIRECTORY` then reads them offline. Every benchmark is
    read and checked before the first file is written."""
    directory = Path(directory)
    tables = {name: load_hub_rows(name) for name in (list(BENCHMARKS) if names is None else names)}
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, table in tables.items():
        path = directory / f"{name}.jsonl"
        partial = path.with_name(f".{path.name}.partial")
        with partial.open("w", encoding="utf-8") as handle:
            for problem, answer in zip(table["problem"], table["answer"]):
                handle.write(json.dumps({"problem": problem, "answer": answer}, ensure_ascii=False) + "\n")
        os.replace(partial, path)  # a reader never sees half a file
        logger.info("%s: %d problems from %s -> %s", name, len(table), benchmark(name).hub_source, path)
        written.append(path)
    return written
