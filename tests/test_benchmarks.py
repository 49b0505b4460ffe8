"""The demo and the benchmarks' code paths at a tiny size, so they keep working."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO_ROOT


def load_script(relative_path: str):
    """Import a script that is not part of a package (examples/, benchmarks/) as a module."""
    path = REPO_ROOT / relative_path
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def learning():
    return load_script("benchmarks/learning.py")


@pytest.fixture(scope="module")
def speed():
    return load_script("benchmarks/speed.py")


def test_demo_runs_and_writes_its_curve(tmp_path):
    demo = load_script("examples/nft_arithmetic.py")
    summary = demo.main(["--tiny", "--num-digits", "2", "--steps", "4", "--steps-per-generation", "2",
                         "--pretrain-steps", "10", "--eval-every", "2", "--eval-problems", "8",
                         "--output-dir", str(tmp_path)])
    assert [record["step"] for record in summary["history"]] == [0, 2, 4]
    assert summary["history"][0]["greedy"] == summary["before"]["greedy"]
    assert (tmp_path / "accuracy.png").stat().st_size > 0
    assert json.loads((tmp_path / "accuracy.json").read_text())["after"] == summary["after"]


def test_learning_benchmark_quick_writes_table_curves_and_raw_runs(learning, tmp_path):
    out, work = tmp_path / "results", tmp_path / "work"
    learning.main(["--quick", "--steps", "4", "--eval-every", "2", "--output-dir", str(out), "--work-dir", str(work)])
    table = (out / "learning.md").read_text()
    for regime in learning.REGIMES:
        assert f"## {regime} — best learning rate per method" in table
        for method in learning.DEFAULT_METHODS:
            assert f"| {regime} | {method} | 0.0003 | 1 |" in table
    for method in learning.DEFAULT_METHODS:
        assert table.count(f"| {learning.METHOD_LABELS[method]} |") == len(learning.REGIMES)
    raw = json.loads((out / "learning.json").read_text())
    assert len(raw["runs"]) == len(learning.DEFAULT_METHODS) * len(learning.REGIMES)
    assert all([p["step"] for p in run["history"]] == [0, 2, 4] for run in raw["runs"])
    assert (out / "learning.png").stat().st_size > 0
    # A second invocation reuses the finished runs instead of training again.
    logged = []
    settings, _ = learning.parse_args(["--quick", "--steps", "4", "--eval-every", "2"])
    assert len(learning.run_all(settings, work, log=logged.append)) == 6 and not logged


def test_learning_benchmark_aggregates_over_seeds(learning):
    history = [{"step": 0, "sampled": 0.0, "greedy": 0.0}, {"step": 10, "sampled": 1.0, "greedy": 0.5}]
    assert learning.area_under_curve(history, "sampled") == pytest.approx(0.5)
    settings = learning.BenchmarkSettings(seeds=[0, 1], methods=["nft"], regimes=["on_policy"],
                                          learning_rates=[1e-4, 3e-4], steps=10, eval_every=10)
    runs = [
        {"method": "nft", "regime": "on_policy", "learning_rate": lr, "seed": seed,
         "history": [{"step": 0, "sampled": 0.2, "greedy": 0.2}, {"step": 10, "sampled": final, "greedy": final}]}
        for lr, finals in ((1e-4, (0.4, 0.6)), (3e-4, (0.8, 0.6)))
        for seed, final in zip((0, 1), finals)
    ]
    summary = learning.summarize(runs, settings)
    assert summary["best_lr"][("on_policy", "nft")] == 3e-4
    mean, std = summary["cells"][("on_policy", "nft", 1e-4)]["sampled@10"]
    assert mean == pytest.approx(0.5) and std == pytest.approx(0.1414, abs=1e-3)


def test_surrogate_matches_nft_gradient_on_policy(speed):
    """Like with like: at R = 1 both losses have gradient −(r − r̂) per token (NFT ω = 1 − r̂ is Dr. GRPO)."""
    functions = speed.loss_functions()
    logps, old, mask, correct, correct_rate, advantages = speed.loss_inputs(16, 32, 4, "cpu")
    gradients = {}
    for name, function in functions.items():
        leaf = old.clone().requires_grad_(True)  # on-policy: log π_θ == log π_old
        function(leaf, old, mask, correct, correct_rate, advantages).backward()
        gradients[name] = leaf.grad
    torch.testing.assert_close(gradients["nft"], gradients["grpo_surrogate"])


def test_saved_tensor_accounting(speed):
    x = torch.randn(4, 8, requires_grad=True)
    counted = speed.saved_tensor_bytes(lambda t: torch.exp(t * 2).sum(), [x])
    assert counted["saved_tensors"] == 1  # exp saves its output; the scalar multiply saves nothing
    assert counted["saved_bytes_new"] == 4 * 8 * 4


def test_speed_benchmark_emits_ratios(speed, tmp_path):
    result = speed.main(["--model-size", "micro", "--pairs", "1", "--steps", "2", "--warmup", "1",
                         "--batch-size", "8", "--num-generations", "4", "--max-completion-length", "4",
                         "--steps-per-generation", "2", "--loss-rows", "8", "--loss-tokens", "64",
                         "--loss-repeats", "2", "--output-dir", str(tmp_path)])
    for key in ("step_time_median", "step_time_mean", "peak_memory_bytes"):
        ratio = result["trainers"]["ratios"][key]
        assert 0 < ratio["min"] <= ratio["median"] <= ratio["max"] < 10
    assert result["trainers"]["runs"]["nft"][0]["steps_measured"] == 2
    assert result["loss"]["ratios"]["time"] > 0
    report = (tmp_path / "speed.md").read_text()
    assert "ratio NFT/GRPO" in report and "Ratios NFT/surrogate" in report
    assert json.loads((tmp_path / "speed.json").read_text())["trainers"]["ratios"]


def test_gpu_script_wiring_on_cpu(tmp_path):
    results = tmp_path / "gpu_speed.md"
    env = dict(os.environ, DEVICE="cpu", MODEL_SIZE="micro", PAIRS="1", STEPS="1", WARMUP="1", BATCH="8",
               COMPLETION="4", RESULTS=str(results))
    subprocess.run(["bash", str(REPO_ROOT / "benchmarks/gpu_speed.sh"), "--skip-trainers", "--loss-tokens", "64",
                    "--loss-repeats", "1"], env=env, check=True, capture_output=True)
    text = results.read_text()
    assert text.startswith("# GPU speed and memory") and "\n## CPU — " in text
    assert "Ratios NFT/surrogate" in text


def test_learning_benchmark_compares_dynamic_sampling_per_sample(learning, tmp_path):
    out, work = tmp_path / "results", tmp_path / "work"
    learning.main(["--quick", "--steps", "4", "--eval-every", "2", "--methods", "nft", "nft_ds", "--regimes",
                   "off_policy", "--output-dir", str(out), "--work-dir", str(work)])
    table = (out / "learning.md").read_text()
    assert "## Dynamic sampling: per step and per generated sample" in table
    runs = {run["method"]: run for run in json.loads((out / "learning.json").read_text())["runs"]}
    # every evaluation point knows how many completions had been generated; refill rounds cost extra samples
    assert [p["samples"] for p in runs["nft"]["history"]][-1] == runs["nft"]["generated_samples"] > 0
    assert runs["nft_ds"]["generated_samples"] >= runs["nft"]["generated_samples"]
    assert learning.accuracy_at_samples([{"samples": 0, "sampled": 0.0}, {"samples": 10, "sampled": 1.0}], 5) == 0.5
