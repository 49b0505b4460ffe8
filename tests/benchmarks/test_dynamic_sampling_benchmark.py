"""benchmarks/dynamic_sampling.py at a tiny size (about 30 s on 2 busy cores), and its budget interpolation."""

from __future__ import annotations

import json

import pytest

from tests.benchmarks.test_benchmarks import load_script


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


def test_carry_bug_rate_option_sets_the_base_models_teacher_and_its_own_cached_base(benchmark, tmp_path, monkeypatch):
    assert benchmark.parse_args([])[0].carry_bug_rate == 0.6  # the default command reproduces the existing results
    built = []
    original = benchmark.build_testbed

    def spy(task, **kwargs):
        built.append(task)
        return original(task, **kwargs)

    monkeypatch.setattr(benchmark, "build_testbed", spy)
    work = tmp_path / "work"
    for rate, output in ((1.0, tmp_path / "hard"), (None, tmp_path / "default")):
        rate_option = [] if rate is None else ["--carry-bug-rate", str(rate)]
        benchmark.main(["--quick", "--steps", "2", "--methods", "nft", "--regimes", "on_policy", *rate_option,
                        "--output-dir", str(output), "--work-dir", str(work)])
    assert [task.carry_bug_rate for task in built] == [1.0, 0.6]  # the option reaches the pretraining teacher
    assert len(list((work / "pretrained").glob("*.pt"))) == 2  # each rate pretrains (and caches) its own base model
    hard = json.loads((tmp_path / "hard" / "dynamic_sampling.json").read_text())
    assert hard["settings"]["carry_bug_rate"] == 1.0
    step0 = hard["runs"][0]["history"][0]
    assert step0["step"] == 0
    report = (tmp_path / "hard" / "dynamic_sampling.md").read_text()
    assert "drops each carry with probability **1**" in report
    assert f"held-out accuracy at step 0: **sampled {step0['sampled']:.3f}**" in report
    # the default rate keeps the run keys stored before the option existed (so stored runs are reused)
    keys = [json.loads(line)["key"] for line in (work / "runs.jsonl").read_text().splitlines()]
    assert '"carry_bug_rate": 1.0' in keys[0] and "carry_bug_rate" not in keys[1]
