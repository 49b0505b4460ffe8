"""The demo and the benchmarks' code paths at a tiny size, so they keep working."""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

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
    environment = summary["environment"]  # what decides the figures besides the seeds
    assert environment["threads"] == 1 and environment["cpu_capability"] and environment["torch"]


def test_demo_keeps_its_numbers_without_matplotlib(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    demo = load_script("examples/nft_arithmetic.py")
    summary = demo.main(["--tiny", "--num-digits", "2", "--steps", "2", "--steps-per-generation", "2",
                         "--pretrain-steps", "10", "--eval-every", "2", "--eval-problems", "8",
                         "--output-dir", str(tmp_path)])
    assert json.loads((tmp_path / "accuracy.json").read_text())["after"] == summary["after"]
    assert not (tmp_path / "accuracy.png").exists()
    assert "matplotlib is not installed" in capsys.readouterr().out


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
    assert len(learning.run_all(settings, work, log=logged.append)) == 8 and not logged
    # every run measured the size of each optimizer step
    assert all(len(run["update_norms"]) == 4 and run["mean_update_norm"] >= 0 for run in raw["runs"])


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


def test_learning_study_helpers_sweep_selection_and_verdicts(learning):
    assert learning.log_spaced(1e-4, 1e-2, 3) == [1e-4, 1e-3, 1e-2]
    with pytest.raises(ValueError, match="low=0.001, high=0.0001"):
        learning.log_spaced(1e-3, 1e-4, 5)
    with pytest.raises(ValueError, match="must not overlap"):
        learning.StudySettings(seeds=[0, 1], selection_seeds=[1])

    def run(method, lr, seed, final, steps=10):
        return {"method": method, "regime": "off_policy", "learning_rate": lr, "seed": seed, "update_norms": [0.1],
                "history": [{"step": 0, "sampled": 0.0, "greedy": 0.0}, {"step": steps, "sampled": final,
                                                                         "greedy": final}]}

    sweep = [run("nft", 1e-4, 100, 0.4), run("nft", 3e-4, 100, 0.8), run("rft", 1e-4, 100, 0.6),
             run("rft", 3e-4, 100, 0.2)]
    assert learning.select_best_lr(sweep, 10) == {("off_policy", "nft"): 3e-4, ("off_policy", "rft"): 1e-4}
    assert learning.verdict([0.10, 0.11, 0.12]) == "higher"
    assert learning.verdict([-0.10, -0.11, -0.12]) == "lower"
    assert learning.verdict([0.2, -0.1, 0.05]) == "tie"
    assert learning.verdict([0.3]).startswith("tie")
    runs = [run("nft", 3e-4, s, f) for s, f in ((0, 0.8), (1, 0.6), (2, 0.7))]
    runs += [run("rft", 1e-4, s, f) for s, f in ((0, 0.6), (1, 0.7), (2, 0.5))]
    [row] = learning.paired_comparisons(runs, {"final": learning.final_value("sampled", 10)})
    assert row["versus"] == "rft" and row["seeds"] == 3
    assert row["final"]["mean_std"][0] == pytest.approx(0.1)
    assert (row["final"]["nft_wins"], row["final"]["nft_losses"], row["final"]["verdict"]) == (2, 1, "tie")
    # a longer run is summarized on its first `steps` only
    assert learning.final_value("sampled", 10)(run("nft", 1e-4, 0, 0.9, steps=10)) == 0.9
    assert learning.truncated(run("nft", 1e-4, 0, 0.9, steps=20)["history"], 10) == [
        {"step": 0, "sampled": 0.0, "greedy": 0.0}]


def test_a_shorter_run_is_read_off_a_finished_longer_one(learning):
    settings = learning.BenchmarkSettings(steps=4, eval_every=2)
    longer = learning.run_key(learning.replace(settings, steps=8), "nft", "off_policy", 1e-4, 0)
    history = [{"step": s, "sampled": s / 10, "greedy": 0.0, "samples": 8 * s} for s in (0, 2, 4, 6, 8)]
    done = {longer: {"key": longer, "history": history, "train_reward": [0.1, 0.2, 0.3, 0.4],
                     "update_norms": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0], "seconds": 9.0}}
    prefix = learning.prefix_of_longer_run(learning.run_key(settings, "nft", "off_policy", 1e-4, 0), done)
    assert [p["step"] for p in prefix["history"]] == [0, 2, 4] and prefix["train_reward"] == [0.1, 0.2]
    assert prefix["mean_update_norm"] == 2.5 and prefix["generated_samples"] == 32 and prefix["seconds"] == 0.0
    # any other difference (here the seed, or a setting) is a different run
    assert learning.prefix_of_longer_run(learning.run_key(settings, "nft", "off_policy", 1e-4, 1), done) is None
    other = learning.replace(settings, carry_bug_rate=0.9)
    assert learning.prefix_of_longer_run(learning.run_key(other, "nft", "off_policy", 1e-4, 0), done) is None


def test_learning_study_quick_runs_every_phase(learning, tmp_path):
    """The --study path end to end at the tiny preset, two methods: sweep, long horizon, hard start, other regime
    (16 runs of a few steps; 1-3 minutes on a loaded 2-core machine)."""
    out, work = tmp_path / "results", tmp_path / "work"
    summary = learning.main(["--quick", "--study", "--steps", "4", "--eval-every", "2", "--methods", "nft", "rft",
                             "--output-dir", str(out), "--work-dir", str(work)])
    assert set(summary["best_lr"]) == {"off_policy/nft", "off_policy/rft"}
    assert set(summary["phases"]) == {"off_policy @4", "hard_start @4", "long_horizon @8", "on_policy @4"}
    assert summary["base_models"]["hard_start"]["carry_bug_rate"] == 0.9
    assert summary["coverage"] == {"sweep": (4, 4), "off_policy": (4, 4), "hard_start": (4, 4),
                                   "long_horizon": (4, 4), "on_policy": (4, 4)}
    long_rows = summary["phases"]["long_horizon @8"]["methods"]
    assert {"pass@8 @8", "entropy @8", "carry problems @8", "mean update norm"} <= set(long_rows[0])
    [paired] = summary["phases"]["hard_start @4"]["paired"]
    assert paired["versus"] == "rft" and paired["seeds"] == 2
    raw = json.loads((out / "learning.json").read_text())
    long_runs = [r for r in raw["runs"] if r["regime"] == "off_policy" and r["seed"] in (0, 1)
                 and [p["step"] for p in r["history"]][-1] == 8]
    assert len(long_runs) == 4 and all("entropy" in p for r in long_runs for p in r["history"])
    assert raw["compute"]["runs"] == len(raw["runs"]) == 2 * 2 + 4 * 2 * 2  # sweep + 4 phases of 2 methods × 2 seeds
    for name in ("learning.md", "sweep.png", "curves.png", "long_horizon.png"):
        assert (out / name).stat().st_size > 0
    assert "## hard start @4 (off_policy, teacher carry-drop 0.9)" in (out / "learning.md").read_text()


def test_learning_benchmark_runs_each_run_in_its_own_process(learning, tmp_path):
    work = tmp_path / "work"
    settings = learning.BenchmarkSettings(**{**learning.QUICK, "steps": 2, "eval_every": 2, "methods": ["nft"],
                                             "regimes": ["on_policy"]})
    [forked] = learning.run_all(settings, work, log=lambda line: None, jobs=1)
    [in_process] = learning.run_all(settings, tmp_path / "again", log=lambda line: None, jobs=0)
    assert forked["history"] == in_process["history"] and forked["update_norms"] == in_process["update_norms"]


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
    trainers = result["trainers"]
    for ratio in (trainers["timing_summary"]["cpu_times"]["ratio"], trainers["timing_summary"]["times"]["ratio"],
                  trainers["memory_ratios"]["peak_memory_bytes"]):
        assert 0 < ratio["min"] <= ratio["median"] <= ratio["max"] < 10
    # warm-up + measured steps for each trainer in the turn-taking run; memory runs take --memory-steps (2)
    assert [len(trainers["timing"]["cpu_times"][name]) for name in ("nft", "grpo")] == [3, 3]
    assert trainers["timing_summary"]["cpu_times"]["steps"] == 2
    assert trainers["memory_runs"]["nft"][0]["steps"] == 2
    loss_path = trainers["timing_summary"]["loss_path"]
    assert loss_path["nft"] > 0 and loss_path["grpo"] > 0 and loss_path["bound"] > 0
    assert result["loss"]["ratios"]["time"] > 0
    report = (tmp_path / "speed.md").read_text()
    assert "ratio NFT/GRPO" in report and "Ratios NFT/surrogate" in report
    assert json.loads((tmp_path / "speed.json").read_text())["trainers"]["memory_ratios"]


def test_turn_taking_runs_one_thread_at_a_time_in_order(speed):
    """Threads take steps A, B, A, B, … with no overlap; a thread that stops early does not block the other."""
    turns = speed.TakeTurns(["a", "b"])
    events, running = [], []

    def worker(name, steps):
        turns.wait(name)
        try:
            for step in range(steps):
                running.append(name)
                assert len(running) == 1, f"{running} ran at once"
                events.append((name, step))
                time.sleep(0.002)
                running.remove(name)
                turns.pass_on(name)
                turns.wait(name)
        finally:
            turns.finish(name)

    threads = [threading.Thread(target=worker, args=("a", 3)), threading.Thread(target=worker, args=("b", 5))]
    for thread in reversed(threads):  # b starts first but must wait for a's turn
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert not any(thread.is_alive() for thread in threads)
    assert events == [("a", 0), ("b", 0), ("a", 1), ("b", 1), ("a", 2), ("b", 2), ("b", 3), ("b", 4)]


def test_child_processes_get_their_allocator_settings(speed, monkeypatch):
    """Peak-memory children: fixed mmap threshold (RSS follows live tensors); timing children: no mmap, no trim."""
    seen = {}

    def fake_run(command, capture_output, text, env):
        seen[command[3]] = {key: env.get(key) for key in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_MMAP_MAX_")}
        Path(command[-1]).write_text("{}")
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(speed.subprocess, "run", fake_run)
    for key in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_MMAP_MAX_"):
        monkeypatch.delenv(key, raising=False)
    speed.run_in_subprocess({}, "memory")
    speed.run_in_subprocess({}, "interleaved")
    assert seen == {"memory": {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_MMAP_MAX_": None},
                    "interleaved": {"MALLOC_MMAP_THRESHOLD_": None, "MALLOC_MMAP_MAX_": "0"}}


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


def test_scaling_summary_fits_growth_and_reports_ratios(speed, tmp_path):
    """Cost-vs-length study on synthetic runs: time ∝ length^1, memory ∝ length^0.5, NFT 10 % slower at 4096."""
    def point(length):
        slower = 1.1 if length == 4096 else 1.0
        cpu = {"nft": [1e-3 * length * slower] * 3, "grpo": [1e-3 * length] * 3}
        timing = {"cpu_times": cpu, "times": {name: [2 * t for t in values] for name, values in cpu.items()},
                  "tokens": {"nft": [length] * 3, "grpo": [length] * 3}, "trl_step_times": {"nft": [], "grpo": []},
                  "loss_path_seconds": {"nft": 0.2, "grpo": 0.1}}  # bound at 4096: 1 + 0.1 / 4.096
        memory = {name: [{"train_peak_extra_bytes": 2**20 * length ** 0.5, "peak_memory_bytes": 2**30,
                          "vocab_size": 151_665}] for name in ("nft", "grpo")}
        ratios = {key: speed.ratio_summary([r[key] for r in memory["nft"]], [r[key] for r in memory["grpo"]])
                  for key in ("peak_memory_bytes", "train_peak_extra_bytes")}
        control = None
        if length == 1024:  # an A/A control run whose second NFTTrainer happened to be 5 % slower
            control = speed.timing_summary({**timing, "cpu_times": {"nft": cpu["nft"], "grpo": [
                value / 0.95 for value in cpu["nft"]]}}, warmup=1)
        return {"length": length, "gradient_checkpointing": False, "timing": timing,
                "timing_summary": speed.timing_summary(timing, warmup=1), "control_summary": control,
                "memory_runs": memory, "memory_ratios": ratios}

    options = {"model_size": "qwen-micro", "vocab": "qwen2.5", "batch_size": 2, "num_generations": 2,
               "steps_per_generation": 2, "warmup": 1, "steps": 2, "memory_steps": 2}
    study = speed.summarize_scaling(options, [point(n) for n in (256, 1024, 4096)])
    fits = study["growth_exponents"]
    assert fits["grpo/step_cpu_seconds/checkpointing=False"] == pytest.approx(1.0)
    assert fits["nft/train_peak_extra_bytes/checkpointing=False"] == pytest.approx(0.5)
    assert speed.growth_exponent([256], [1.0]) is None
    report = speed.scaling_report(study, "python benchmarks/speed.py --lengths 256 1024 4096", "CPU", 1, 6)
    assert "| 4096 | 4.506 | 4.096 | 2 | 1.100 (1.100 – 1.100) | 1.100 | – | 1.02441 |" in report
    assert "| 1024 | 1.024 | 1.024 | 2 | 1.000 (1.000 – 1.000) | 1.000 | 0.950 (0.950 – 0.950) |" in report
    assert "GRPO time ∝ length^1.00, peak ∝ length^0.50" in report
    # the full-logits column: 2 sequences × (6 + 4096) tokens × 151,665 × 4 bytes
    assert f"| {2 * 4102 * 151_665 * 4 / 2**20:.0f} |" in report
    assert speed.scaling_plot(study, tmp_path / "plot.png") and (tmp_path / "plot.png").stat().st_size > 0


def test_merged_studies_pool_memory_runs_and_keep_the_first_timing(speed):
    def point(length, checkpointing, peaks, cpu):
        memory = {name: [{"train_peak_extra_bytes": peak, "peak_memory_bytes": peak}] for name, peak in peaks.items()}
        return {"length": length, "gradient_checkpointing": checkpointing, "timing_summary": {"cpu": cpu},
                "memory_runs": memory}

    first = [point(256, True, {"nft": 10, "grpo": 10}, 1.0), point(256, False, {"nft": 12, "grpo": 10}, 2.0)]
    second = [point(256, False, {"nft": 10, "grpo": 10}, 3.0), point(1024, False, {"nft": 40, "grpo": 40}, 4.0)]
    merged = speed.merge_points([first, second])
    assert [(p["gradient_checkpointing"], p["length"]) for p in merged] == [(False, 256), (False, 1024), (True, 256)]
    pooled = merged[0]
    assert [r["train_peak_extra_bytes"] for r in pooled["memory_runs"]["nft"]] == [12, 10]
    assert pooled["timing_summary"] == {"cpu": 2.0}  # the first study's timing of that cell
    assert pooled["memory_ratios"]["train_peak_extra_bytes"]["per_pair"] == [1.2, 1.0]
    assert first[1]["memory_runs"]["nft"] == [{"train_peak_extra_bytes": 12, "peak_memory_bytes": 12}]  # inputs kept



def test_demo_pins_avx2_kernels_before_torch_loads():
    """The demo's figures depend on torch's CPU kernels; on x86-64 it asks for AVX2 ones, which nearly every CPU has."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("AVX2 kernels exist on x86-64 only")
    probe = ("import importlib.util, sys; spec = importlib.util.spec_from_file_location('demo', sys.argv[1]); "
             "spec.loader.exec_module(importlib.util.module_from_spec(spec)); import torch; "
             "print(torch.backends.cpu.get_cpu_capability())")
    environment = {key: value for key, value in os.environ.items() if key != "ATEN_CPU_CAPABILITY"}
    result = subprocess.run([sys.executable, "-c", probe, str(REPO_ROOT / "examples" / "nft_arithmetic.py")],
                            capture_output=True, text=True, env=environment, timeout=300, check=True)
    capability = result.stdout.strip().splitlines()[-1]
    if capability == "DEFAULT":
        pytest.skip("this CPU has no AVX2")
    assert capability == "AVX2"
