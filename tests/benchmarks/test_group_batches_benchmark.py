"""benchmarks/group_batches.py at a tiny size: every code path, and the report's paired differences."""

from __future__ import annotations

import json

import pytest

from tests.benchmarks.test_benchmarks import load_script


@pytest.fixture(scope="module")
def benchmark():
    return load_script("benchmarks/group_batches.py")


def test_auc_is_the_trapezoid_mean(benchmark):
    history = [{"step": 0, "sampled": 0.2}, {"step": 2, "sampled": 0.4}, {"step": 4, "sampled": 0.8}]
    assert benchmark.auc(history, "sampled") == pytest.approx((0.6 + 1.2) / 4)


def test_quick_study_trains_whole_groups_and_writes_its_report(benchmark, tmp_path):
    output = tmp_path / "results"
    benchmark.main(["--quick", "--methods", "nft", "dr_grpo", "--output-dir", str(output),
                    "--work-dir", str(tmp_path / "work")])
    saved = json.loads((output / "group_batches.json").read_text())
    spread = {(run["method"], run["order"]): run["prompts_per_step"] for run in saved["runs"]}
    assert spread[("nft", "groups")] == spread[("dr_grpo", "groups")] == 2  # 8 completions = 2 whole groups
    assert spread[("nft", "rows")] > 2 and spread[("dr_grpo", "rows")] > 2  # TRL's shuffle mixes prompts
    text = (output / "group_batches.md").read_text()
    assert "| Dr. GRPO (TRL) | keep_groups_together |" in text and "Paired by seed" in text
