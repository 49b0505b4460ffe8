"""benchmarks/dynamic_sampling.py at a tiny size (about 30 s on 2 busy cores), and its budget interpolation."""

from __future__ import annotations

import json

import pytest

from tests.test_benchmarks import load_script


@pytest.fixture(scope="module")
def benchmark():
    return load_script("benchmarks/dynamic_sampling.py")


def test_accuracy_at_a_generation_budget_interpolates_between_evaluations(benchmark):
    history = [{"samples": 0, "sampled": 0.2}, {"samples": 100, "sampled": 0.4}, {"samples": 300, "sampled": 0.8}]
    assert benchmark.accuracy_at_budget(history, 200) == pytest.approx(0.6)
    assert benchmark.accuracy_at_budget(history, 100) == pytest.approx(0.4)
    assert benchmark.accuracy_at_budget(history, 301) is None


def test_quick_benchmark_counts_generation_and_writes_its_report(benchmark, tmp_path):
    output = tmp_path / "results"
    cells = benchmark.main(["--quick", "--methods", "nft", "ds_adaptive_carry", "--regimes", "on_policy",
                            "--output-dir", str(output), "--work-dir", str(tmp_path / "work")])
    plain, dynamic = cells[("on_policy", "nft")], cells[("on_policy", "ds_adaptive_carry")]
    assert plain["generated_per_trained"][0] == 1.0  # plain NFT trains on every completion it generates
    assert dynamic["generated_per_trained"][0] >= 1.0  # dynamic sampling never trains a completion twice
    saved = json.loads((output / "dynamic_sampling.json").read_text())
    run = next(r for r in saved["runs"] if r["method"] == "ds_adaptive_carry")
    assert len(run["step_seconds"]) == saved["settings"]["steps"]
    assert run["history"][-1]["samples"] == run["generated"]
    assert "DS, adaptive + carry-over" in (output / "dynamic_sampling.md").read_text()
    assert (output / "dynamic_sampling.png").stat().st_size > 0
