"""Learning benchmark: NFT vs RFT vs GRPO vs Dr. GRPO on the offline carry-bug addition testbed
(`trl_nft.testing.arithmetic`).

Every run starts from a cached supervised base model (seeds are RL seeds: sampling and prompt order), sees the same
prompt set and number of samples, and is evaluated on the same held-out problems every `--eval-every` optimizer
steps; every run also records the parameter-change norm of each optimizer step (its effective step size).

* NFT     — `NFTTrainer`, paper defaults (ω = 1 − r̂, λ = 1, ε = 1).
* RFT     — `NFTTrainer` with `neg_weight=0`, `prompt_weighting="none"` (positives only, ω = 1).
* GRPO    — TRL's `GRPOTrainer` with its defaults (loss_type "dapo", std-scaled advantages, clip ε = 0.2).
* Dr. GRPO — `GRPOTrainer` with `loss_type="dr_grpo"`, `scale_rewards="none"`.

Regimes: on-policy (one optimizer step per generation batch: NFT is then Dr. GRPO up to the loss normaliser) and
off-policy (one generation batch is split into `steps_per_generation` optimizer steps, the paper's 16 mini-batches
per rollout).

Two modes. The grid (default): seeds × regimes × methods × lrs. `--study` (`StudySettings`): an lr sweep
on selection seeds, then each method at its selected lr on separate report seeds — per regime, from a hard start
(stronger carry bug) and over a long horizon with pass@k and policy entropy.

    OMP_NUM_THREADS=1 python benchmarks/learning.py --study --jobs 1   # the study (hours of one CPU core)
    OMP_NUM_THREADS=1 python benchmarks/learning.py --study --report-only   # its report from the finished runs
    OMP_NUM_THREADS=1 python benchmarks/learning.py --quick [--study]  # seconds: a smoke test of every code path
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core: a tiny model is ~100x slower with oversubscribed threads

import argparse
import json
import logging
import statistics
import multiprocessing
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from transformers import PrinterCallback

from trl_nft.testing.arithmetic import (
    AdditionTask,
    HeldoutAccuracyCallback,
    PolicyDiagnostics,
    UpdateNormCallback,
    build_testbed,
    exact_match_reward,
    rl_trainer_options,
)

METHODS = ("nft", "rft", "grpo", "dr_grpo", "nft_ds")
DEFAULT_METHODS = ("nft", "rft", "grpo", "dr_grpo")  # nft_ds (dynamic sampling) on request: --methods nft nft_ds
REGIMES = ("on_policy", "off_policy")
METHOD_LABELS = {
    "nft": "NFT (ω = 1 − r̂)",
    "grpo": "GRPO (TRL defaults)",
    "dr_grpo": "Dr. GRPO (TRL)",
    "rft": "RFT (λ = 0, ω = 1)",
    "nft_ds": "NFT + dynamic sampling",
}


@dataclass
class BenchmarkSettings:
    """Everything that defines the experiment; runs are cached under a key made of these and the run's own knobs."""

    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    methods: list[str] = field(default_factory=lambda: list(DEFAULT_METHODS))
    regimes: list[str] = field(default_factory=lambda: list(REGIMES))
    learning_rates: list[float] = field(default_factory=lambda: [1e-4, 3e-4, 1e-3])
    steps: int = 160
    eval_every: int = 16
    prompts_per_step: int = 8
    num_generations: int = 8
    off_policy_steps_per_generation: int = 16
    num_digits: int = 3
    carry_bug_rate: float = 0.6
    pretrain_steps: int = 2000
    pretrain_seed: int = 0  # one base model for every run (see `build_testbed`); RL seeds vary
    num_eval_problems: int = 256
    eval_samples_per_prompt: int = 2
    model_size: dict | None = None  # None: the testbed's default
    diagnostics: bool = False  # also log pass@k, accuracy on carry problems and policy entropy at each evaluation
    diagnostic_problems: int = 128
    pass_k: int = 8  # samples per problem for the diagnostics, and the k of pass@k

    @property
    def task(self) -> AdditionTask:
        return AdditionTask(num_digits=self.num_digits, carry_bug_rate=self.carry_bug_rate)


QUICK = dict(
    seeds=[0],
    learning_rates=[3e-4],
    steps=8,
    eval_every=4,
    prompts_per_step=2,
    num_generations=4,
    off_policy_steps_per_generation=4,
    num_digits=2,
    pretrain_steps=20,
    num_eval_problems=16,
    eval_samples_per_prompt=1,
    model_size=dict(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64),
)


# --------------------------------------------------------------------------------------------------- one run
def trainer_and_config(method: str):
    """The trainer class and the config class/overrides that define a method."""
    from trl import GRPOConfig, GRPOTrainer

    from trl_nft import NFTConfig, NFTTrainer

    if method == "nft":
        return NFTTrainer, NFTConfig, {}
    if method == "rft":
        return NFTTrainer, NFTConfig, dict(neg_weight=0.0, prompt_weighting="none")
    if method == "grpo":
        return GRPOTrainer, GRPOConfig, {}
    if method == "dr_grpo":  # Liu et al. 2025: no std scaling of advantages, a constant loss normaliser
        return GRPOTrainer, GRPOConfig, dict(loss_type="dr_grpo", scale_rewards="none")
    if method == "nft_ds":  # the official runs' setting: only informative groups, ≤ 10 rounds of 3× prompts
        return NFTTrainer, NFTConfig, dict(dynamic_sampling=True, max_generation_rounds=10, dynamic_sampling_oversample=3)
    raise ValueError(f"unknown method {method!r}; choose from {METHODS}")


def regime_options(settings: BenchmarkSettings, regime: str) -> dict:
    if regime == "on_policy":
        return dict(steps_per_generation=1)
    if regime == "off_policy":
        return dict(steps_per_generation=settings.off_policy_steps_per_generation)
    raise ValueError(f"unknown regime {regime!r}; choose from {REGIMES}")


class CountingReward:
    """Wraps a reward function and counts the completions it scores: every generated completion is scored once."""

    def __init__(self, reward_func):
        self.reward_func = reward_func
        self.__name__ = reward_func.__name__  # TRL names the reward's metrics after it
        self.completions_scored = 0

    def __call__(self, completions, **kwargs):
        self.completions_scored += len(completions)
        return self.reward_func(completions, **kwargs)


def run_one(
    settings: BenchmarkSettings, method: str, regime: str, learning_rate: float, seed: int, work_dir: Path
) -> dict:
    """Train one (method, regime, lr, RL seed) from the cached supervised base model; return its eval curve."""
    testbed = build_testbed(
        settings.task,
        pretrain_seed=settings.pretrain_seed,
        pretrain_steps=settings.pretrain_steps,
        num_eval_problems=settings.num_eval_problems,
        eval_samples_per_prompt=settings.eval_samples_per_prompt,
        model_size=settings.model_size,
        cache_dir=work_dir / "pretrained",
    )
    trainer_cls, config_cls, method_options = trainer_and_config(method)
    args = config_cls(
        output_dir=str(work_dir / "trainer"),
        **rl_trainer_options(
            settings.task,
            prompts_per_step=settings.prompts_per_step,
            num_generations=settings.num_generations,
            eval_every=settings.eval_every,
            max_steps=settings.steps,
            seed=seed,
            learning_rate=learning_rate,
        ),
        **regime_options(settings, regime),
        **method_options,
    )
    reward = CountingReward(exact_match_reward)
    evaluator = testbed.evaluator
    if settings.diagnostics:
        diagnostics = PolicyDiagnostics(testbed.tokenizer, settings.task, num_problems=settings.diagnostic_problems,
                                        samples_per_prompt=settings.pass_k, k=settings.pass_k)

        def evaluator(model):
            return {**testbed.evaluator(model), **diagnostics(model)}

    # each evaluation point also records how many completions had been generated by then
    callback = HeldoutAccuracyCallback(
        evaluator, every=settings.eval_every, on_record=lambda r: r.update(samples=reward.completions_scored)
    )
    update_norms = UpdateNormCallback()
    trainer = trainer_cls(
        model=testbed.model,
        reward_funcs=reward,
        args=args,
        train_dataset=testbed.train_dataset,
        processing_class=testbed.tokenizer,
        callbacks=[callback, update_norms],
    )
    trainer.remove_callback(PrinterCallback)  # the per-step log dicts would drown the benchmark's own log
    started = time.perf_counter()
    trainer.train()
    train_rewards = [log["reward"] for log in trainer.state.log_history if "reward" in log]
    return {
        "method": method,
        "regime": regime,
        "learning_rate": learning_rate,
        "seed": seed,
        "history": callback.history,
        "train_reward": train_rewards,
        "generated_samples": reward.completions_scored,
        "update_norms": update_norms.norms,
        "mean_update_norm": statistics.fmean(update_norms.norms),
        "seconds": time.perf_counter() - started,
    }


def run_key(settings: BenchmarkSettings, method: str, regime: str, learning_rate: float, seed: int) -> str:
    shared = {k: v for k, v in asdict(settings).items() if k not in ("seeds", "methods", "regimes", "learning_rates")}
    return json.dumps(
        {"settings": shared, "method": method, "regime": regime, "lr": learning_rate, "seed": seed}, sort_keys=True
    )


def prefix_of_longer_run(key: str, done: dict) -> dict | None:
    """A finished run that differs from `key` only by more steps gives its first steps as this run: the lr is
    constant and nothing before a step depends on `max_steps`. Its `seconds` are 0 (they count for the longer run)."""
    wanted = json.loads(key)
    steps, every = wanted["settings"]["steps"], wanted["settings"]["eval_every"]
    for record in done.values():
        other = json.loads(record["key"])
        longer = other["settings"]["steps"]
        other["settings"]["steps"] = steps
        if other == wanted and longer > steps and steps % every == 0:
            return {**record, "key": key, "history": truncated(record["history"], steps),
                    "train_reward": record["train_reward"][: steps // every],
                    "update_norms": record["update_norms"][:steps],
                    "mean_update_norm": statistics.fmean(record["update_norms"][:steps]),
                    "generated_samples": truncated(record["history"], steps)[-1].get("samples"),
                    "seconds": 0.0, "prefix_of_steps": longer}
    return None


def run_task(task: tuple) -> tuple:
    """`run_one` for a worker process; returns the task's grid index with the result."""
    index, settings, method, regime, learning_rate, seed, work_dir = task
    quiet_libraries()
    return index, run_one(settings, method, regime, learning_rate, seed, work_dir)


def ensure_base_model(settings: BenchmarkSettings, work_dir: Path) -> None:
    """Pretrain (or find cached) the base model once, before parallel workers would each pretrain it; the seconds a
    fresh pretraining took are kept in work_dir/pretraining_seconds.json (compute accounting)."""
    started = time.perf_counter()
    build_testbed(settings.task, pretrain_seed=settings.pretrain_seed, pretrain_steps=settings.pretrain_steps,
                  num_eval_problems=8, model_size=settings.model_size, cache_dir=work_dir / "pretrained")
    seconds = time.perf_counter() - started
    ledger = work_dir / "pretraining_seconds.json"
    spent = json.loads(ledger.read_text()) if ledger.exists() else {}
    name = f"carry_bug_rate={settings.carry_bug_rate:g}"
    if name not in spent and seconds > 5:  # a cache hit takes well under a second
        spent[name] = seconds
        ledger.write_text(json.dumps(spent, indent=1))


def run_all(settings: BenchmarkSettings, work_dir: Path, log=print, grid=None, jobs: int = 0,
            train: bool = True) -> list[dict]:
    """Every run of `grid` (default: the settings' seeds × regimes × methods × lrs, seed-major), as (seed, regime,
    method, lr). Finished runs are kept in work_dir/runs.jsonl and not redone. jobs = 0 trains in this process;
    jobs ≥ 1 trains each run in its own child process, `jobs` at a time. train=False returns the finished runs only
    (a report of whatever a stopped invocation completed)."""
    store = work_dir / "runs.jsonl"
    done = {}
    if store.exists():
        for line in store.read_text().splitlines():
            record = json.loads(line)
            done[record["key"]] = record
    if grid is None:
        grid = [
            (seed, regime, method, lr)
            for seed in settings.seeds
            for regime in settings.regimes
            for method in settings.methods
            for lr in settings.learning_rates
        ]
    started = time.perf_counter()
    keys = [run_key(settings, method, regime, lr, seed) for seed, regime, method, lr in grid]
    for key in keys:
        if key not in done and (prefix := prefix_of_longer_run(key, done)) is not None:
            done[key] = prefix
    todo = [(index, cell) for index, (cell, key) in enumerate(zip(grid, keys), 1) if key not in done]
    if not train:
        return [done[key] for key in keys if key in done]

    def finish(index, cell, result):
        seed, regime, method, lr = cell
        record = {"key": keys[index - 1], **result}
        with store.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        done[record["key"]] = record
        final = record["history"][-1]
        log(
            f"[{index}/{len(grid)}] seed={seed} {regime} {method} lr={lr:g}: sampled {final['sampled']:.3f} "
            f"greedy {final['greedy']:.3f} ({record['seconds']:.0f}s, total {time.perf_counter() - started:.0f}s)"
        )

    if todo:
        ensure_base_model(settings, work_dir)
    if todo and jobs >= 1:
        # a forked process per run (maxtasksperchild=1): no state leaks between runs, and no re-import per run
        tasks = [(index, settings, method, regime, lr, seed, work_dir) for index, (seed, regime, method, lr) in todo]
        with multiprocessing.get_context("fork").Pool(processes=jobs, maxtasksperchild=1) as pool:
            for index, result in pool.imap_unordered(run_task, tasks):
                finish(index, grid[index - 1], result)
    else:
        for index, (seed, regime, method, lr) in todo:
            finish(index, (seed, regime, method, lr), run_one(settings, method, regime, lr, seed, work_dir))
    return [done[key] for key in keys]


# ----------------------------------------------------------------------------------------------- aggregation
def area_under_curve(history: list[dict], metric: str) -> float:
    """Trapezoidal area under accuracy-vs-step, divided by the step span: the curve's mean accuracy."""
    steps = [point["step"] for point in history]
    values = [point[metric] for point in history]
    area = sum((s1 - s0) * (v0 + v1) / 2 for s0, s1, v0, v1 in zip(steps, steps[1:], values, values[1:]))
    return area / max(1, steps[-1] - steps[0])


def value_at(history: list[dict], step: int, metric: str) -> float:
    return next(point[metric] for point in history if point["step"] == step)


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarize(runs: list[dict], settings: BenchmarkSettings) -> dict:
    """Per (regime, method, lr): mean ± std over seeds of accuracy at fixed steps and AUC; best lr by sampled AUC."""
    grid = settings.eval_every
    report_steps = sorted({round(settings.steps * fraction / grid) * grid for fraction in (0, 0.25, 0.5, 1)})
    cells = {}
    for regime in settings.regimes:
        for method in settings.methods:
            for lr in settings.learning_rates:
                group = [r for r in runs if (r["regime"], r["method"], r["learning_rate"]) == (regime, method, lr)]
                if not group:
                    continue
                cell = {"seeds": len(group)}
                for metric in ("sampled", "greedy"):
                    cell[f"auc_{metric}"] = mean_std([area_under_curve(r["history"], metric) for r in group])
                    for step in report_steps:
                        cell[f"{metric}@{step}"] = mean_std([value_at(r["history"], step, metric) for r in group])
                cells[(regime, method, lr)] = cell
    best = {}
    for regime in settings.regimes:
        for method in settings.methods:
            candidates = [lr for lr in settings.learning_rates if (regime, method, lr) in cells]
            if candidates:
                best[(regime, method)] = max(candidates, key=lambda lr: cells[(regime, method, lr)]["auc_sampled"][0])
    return {"cells": cells, "best_lr": best, "report_steps": report_steps}


def mean_curve(runs: list[dict], regime: str, method: str, lr: float, metric: str):
    group = [r for r in runs if (r["regime"], r["method"], r["learning_rate"]) == (regime, method, lr)]
    steps = [point["step"] for point in group[0]["history"]]
    columns = list(zip(*[[point[metric] for point in r["history"]] for r in group]))
    stats = [mean_std(list(column)) for column in columns]
    return steps, [m for m, _ in stats], [s for _, s in stats]


# ------------------------------------------------------------------------------------------------- reporting
def fmt(pair: tuple[float, float]) -> str:
    return f"{pair[0]:.3f} ± {pair[1]:.3f}"


def paired_differences(runs: list[dict], summary: dict, settings: BenchmarkSettings, regime: str) -> list[str]:
    """NFT minus each other method, both at their best lr, paired by RL seed (same prompts order and first batch)."""
    best = summary["best_lr"]
    if "nft" not in settings.methods or (regime, "nft") not in best:
        return []

    def by_seed(method):
        lr = best[(regime, method)]
        return {r["seed"]: r for r in runs if (r["regime"], r["method"], r["learning_rate"]) == (regime, method, lr)}

    nft, rows = by_seed("nft"), []
    for other in settings.methods:
        if other == "nft" or (regime, other) not in best:
            continue
        theirs = by_seed(other)
        seeds = sorted(set(nft) & set(theirs))
        auc = [area_under_curve(nft[s]["history"], "sampled") - area_under_curve(theirs[s]["history"], "sampled")
               for s in seeds]
        final = [nft[s]["history"][-1]["sampled"] - theirs[s]["history"][-1]["sampled"] for s in seeds]
        wins = sum(d > 0 for d in auc)
        rows.append(f"| NFT − {other.upper()} | {fmt(mean_std(auc))} | {fmt(mean_std(final))} | {wins}/{len(seeds)} |")
    if not rows:
        return []
    header = ["| difference (best lr each) | sampled AUC | final sampled | seeds where NFT's AUC is higher |",
              "|---|---|---|---|"]
    return [f"Paired by RL seed ({regime}):", ""] + header + rows + [""]


def accuracy_at_samples(history: list[dict], budget: float, metric: str = "sampled") -> float:
    """Held-out accuracy when `budget` completions had been generated (linear interpolation between evaluations)."""
    points = [(point["samples"], point[metric]) for point in history]
    for (s0, v0), (s1, v1) in zip(points, points[1:]):
        if s0 <= budget <= s1:
            return v0 if s1 == s0 else v0 + (v1 - v0) * (budget - s0) / (s1 - s0)
    return points[-1][1]


def dynamic_sampling_section(runs: list[dict], summary: dict, settings: BenchmarkSettings) -> list[str]:
    """NFT with vs without dynamic sampling: accuracy per optimizer step and per generated completion."""
    if not {"nft", "nft_ds"} <= set(settings.methods):
        return []
    lines = ["## Dynamic sampling: per step and per generated sample", "",
             "Same optimizer steps for both; dynamic sampling generates extra rounds to keep only informative groups, "
             "so it spends more samples per step. *@ NFT's budget* = held-out sampled accuracy when the run had "
             "generated as many completions as plain NFT generates in the whole run (interpolated between "
             "evaluations).", "",
             "| regime | method | lr | completions generated | sampled @final step | sampled AUC (per step) "
             "| sampled @ NFT's budget |", "|---|---|---|---|---|---|---|"]
    for regime in settings.regimes:
        chosen = {m: summary["best_lr"].get((regime, m)) for m in ("nft", "nft_ds")}
        groups = {m: [r for r in runs if (r["regime"], r["method"], r["learning_rate"]) == (regime, m, lr)]
                  for m, lr in chosen.items()}
        if not all(groups.values()) or any("samples" not in r["history"][0] for g in groups.values() for r in g):
            continue
        budget = statistics.fmean(r["generated_samples"] for r in groups["nft"])
        for method, group in groups.items():
            samples = mean_std([float(r["generated_samples"]) for r in group])
            final = fmt(mean_std([r["history"][-1]["sampled"] for r in group]))
            auc = fmt(mean_std([area_under_curve(r["history"], "sampled") for r in group]))
            at_budget = fmt(mean_std([accuracy_at_samples(r["history"], budget) for r in group]))
            lines.append(f"| {regime} | {METHOD_LABELS[method]} | {chosen[method]:g} | {samples[0]:.0f} ± "
                         f"{samples[1]:.0f} | {final} | {auc} | {at_budget} |")
    return lines + [""]


def markdown_report(runs: list[dict], summary: dict, settings: BenchmarkSettings, command: str) -> str:
    cells, best, steps = summary["cells"], summary["best_lr"], summary["report_steps"]
    task = settings.task
    run_minutes = sum(run["seconds"] for run in runs) / 60
    lines = [
        "# Learning benchmark: NFT vs GRPO vs RFT (offline carry-bug addition)",
        "",
        f"Generated by `{command}`: {len(runs)} runs, {run_minutes:.1f} min of RL training and evaluation in total "
        "(1 CPU thread; the one-off supervised pretraining, ~2 min, is cached and not included).",
        "",
        f"Task: {task.num_digits}-digit addition (`\"372+459=\"` → `\"831\"`), exact-match reward. The policy is a "
        f"random-init Qwen2 pretrained for {settings.pretrain_steps} supervised steps on a teacher that drops each "
        f"carry with probability {task.carry_bug_rate}, so it samples the right answer only on some attempts. "
        f"RL: {settings.prompts_per_step} prompts × {settings.num_generations} generations per optimizer step, "
        f"{settings.steps} optimizer steps, constant learning rate, AdamW. Held-out accuracy on "
        f"{settings.num_eval_problems} problems never seen in training; *sampled* = temperature 1 "
        f"({settings.eval_samples_per_prompt} samples per problem), *greedy* = argmax decoding. "
        f"RL seeds: {settings.seeds} (prompt order and sampling), all from one base model (pretraining seed "
        f"{settings.pretrain_seed}; like an RL study on one base LLM). "
        "AUC = area under the accuracy-vs-step curve divided by the step span (the curve's mean). "
        "Mean ± std over seeds.",
        "",
        "Regimes: **on_policy** = one optimizer step per generation batch (TRL's default; NFT is then Dr. GRPO by "
        f"construction); **off_policy** = each generation batch of {settings.off_policy_steps_per_generation} × "
        f"{settings.prompts_per_step} prompts is split into {settings.off_policy_steps_per_generation} optimizer "
        "steps (`steps_per_generation`, the paper's 16 mini-batches per rollout); the number of samples per "
        "optimizer step is the same in both regimes.",
        "",
        "The best learning rate of each method is the one with the highest mean sampled AUC; it is selected on the "
        "same seeds it is reported on (the full sweep is below).",
        "",
    ]
    for regime in settings.regimes:
        lines += [f"## {regime} — best learning rate per method", ""]
        header = ["method", "lr"] + [f"sampled @{s}" for s in steps] + ["sampled AUC", f"greedy @{steps[-1]}",
                                                                         "greedy AUC"]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for method in settings.methods:
            if (regime, method) not in best:
                continue
            lr = best[(regime, method)]
            cell = cells[(regime, method, lr)]
            row = [METHOD_LABELS[method], f"{lr:g}"] + [fmt(cell[f"sampled@{s}"]) for s in steps]
            row += [f"**{fmt(cell['auc_sampled'])}**", fmt(cell[f"greedy@{steps[-1]}"]), fmt(cell["auc_greedy"])]
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
        lines += paired_differences(runs, summary, settings, regime)
    lines += dynamic_sampling_section(runs, summary, settings)
    lines += ["## Full learning-rate sweep", ""]
    header = ["regime", "method", "lr", "seeds", f"sampled @{steps[-1]}", "sampled AUC", f"greedy @{steps[-1]}",
              "greedy AUC"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (regime, method, lr), cell in cells.items():
        row = [regime, method, f"{lr:g}", str(cell["seeds"]), fmt(cell[f"sampled@{steps[-1]}"]),
               fmt(cell["auc_sampled"]), fmt(cell[f"greedy@{steps[-1]}"]), fmt(cell["auc_greedy"])]
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    return "\n".join(lines)


def plot_curves(runs: list[dict], summary: dict, settings: BenchmarkSettings, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = ("sampled", "greedy")
    figure, axes = plt.subplots(
        len(metrics), len(settings.regimes), figsize=(5.5 * len(settings.regimes), 7), squeeze=False, sharey=True
    )
    for column, regime in enumerate(settings.regimes):
        for row, metric in enumerate(metrics):
            axis = axes[row][column]
            for method in settings.methods:
                if (regime, method) not in summary["best_lr"]:
                    continue
                lr = summary["best_lr"][(regime, method)]
                steps, mean, std = mean_curve(runs, regime, method, lr, metric)
                axis.plot(steps, mean, marker="o", markersize=3, label=f"{METHOD_LABELS[method]}, lr {lr:g}")
                axis.fill_between(steps, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                                  alpha=0.2)
            axis.set_title(f"{regime}: held-out {metric} accuracy")
            axis.set_xlabel("optimizer step")
            axis.grid(alpha=0.3)
            axis.legend(fontsize=8)
    figure.suptitle(f"mean ± std over {len(settings.seeds)} seeds, best lr per method")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_outputs(runs, settings, output_dir: Path, wall_seconds: float, command: str) -> dict:
    summary = summarize(runs, settings)
    (output_dir / "learning.md").write_text(markdown_report(runs, summary, settings, command))
    plot_curves(runs, summary, settings, output_dir / "learning.png")
    serializable = {
        "settings": asdict(settings),
        "invocation_wall_seconds": wall_seconds,  # 0-ish when every run came from the cache
        "best_lr": {f"{r}/{m}": lr for (r, m), lr in summary["best_lr"].items()},
        "cells": {f"{r}/{m}/{lr:g}": cell for (r, m, lr), cell in summary["cells"].items()},
        "runs": [{k: v for k, v in run.items() if k != "key"} for run in runs],
    }
    (output_dir / "learning.json").write_text(json.dumps(serializable, indent=1))
    return summary


# ------------------------------------------------------------------------------------------------ the study
def log_spaced(low: float, high: float, count: int) -> list[float]:
    """`count` learning rates evenly spaced in log between `low` and `high`, rounded to 3 significant digits."""
    if count < 2 or not 0 < low < high:
        raise ValueError(f"log_spaced needs 0 < low < high and count >= 2, got low={low}, high={high}, count={count}")
    return [float(f"{low * (high / low) ** (i / (count - 1)):.3g}") for i in range(count)]


STUDY_PHASES = ("off_policy", "hard_start", "long_horizon", "on_policy")


@dataclass
class StudySettings:
    """The study design. Sweep: every method gets the same log-spaced lrs on `selection_seeds` in
    `sweep_regimes`, over `base.steps`; a regime without a sweep borrows the lr of the first swept one. Then the
    `phases`, each on `seeds` (disjoint from the selection seeds) at each method's selected lr: a report per regime
    (`base.steps`), the hard start (a stronger carry bug in the pretraining teacher, in `hard_regime`) and the long
    horizon (`long_methods` to `long_steps` in `long_regime`)."""

    base: BenchmarkSettings = field(default_factory=lambda: BenchmarkSettings(eval_every=32, diagnostics=True))
    selection_seeds: list[int] = field(default_factory=lambda: [100])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    # factor 10^(1/4) apart; the top one was added when RFT's best sat at 6e-4 (not bracketed) on the first five
    learning_rates: list[float] = field(default_factory=lambda: log_spaced(6e-5, 6e-5 * 10**1.25, 6))
    sweep_regimes: list[str] = field(default_factory=lambda: ["off_policy"])
    long_regime: str = "off_policy"
    long_steps: int = 480
    hard_regime: str = "off_policy"
    hard_carry_bug_rate: float = 0.9
    long_methods: list[str] | None = None  # the methods of the long-horizon phase (None: all)
    phases: list[str] = field(default_factory=lambda: list(STUDY_PHASES))  # which to run after the sweep, in order

    def __post_init__(self):
        if set(self.seeds) & set(self.selection_seeds):
            raise ValueError(f"StudySettings.seeds {self.seeds} must not overlap "
                             f"selection_seeds {self.selection_seeds}")
        if self.long_steps % self.base.eval_every or self.long_steps < self.base.steps:
            raise ValueError(f"StudySettings.long_steps={self.long_steps} must be a multiple of eval_every="
                             f"{self.base.eval_every} and at least base.steps={self.base.steps}")
        for name in ("long_regime", "hard_regime"):
            if getattr(self, name) not in REGIMES:
                raise ValueError(f"StudySettings.{name}={getattr(self, name)!r}: choose from {REGIMES}")
        unknown = set(self.phases) - set(STUDY_PHASES)
        if unknown:
            raise ValueError(f"StudySettings.phases has {sorted(unknown)}: choose from {STUDY_PHASES}")


QUICK_STUDY = dict(selection_seeds=[100], seeds=[0, 1], learning_rates=[1e-4, 1e-3], hard_carry_bug_rate=0.9)


def study_from_args(settings: BenchmarkSettings, args: argparse.Namespace) -> StudySettings:
    """The study for a CLI invocation: `settings` is its base; --seeds / --lrs replace the report seeds / sweep."""
    options = dict(QUICK_STUDY, long_steps=2 * settings.steps) if args.quick else {}
    if args.seeds is not None:
        options["seeds"] = args.seeds
    if args.lrs is not None:
        options["learning_rates"] = args.lrs
    if args.regimes is not None:
        options["sweep_regimes"] = args.regimes
    if args.long_methods is not None:
        options["long_methods"] = args.long_methods
    if args.phases is not None:
        options["phases"] = args.phases
    return StudySettings(base=settings, **options)


def study_phases(study: StudySettings, best_lr: dict) -> dict[str, list[tuple[BenchmarkSettings, list[tuple]]]]:
    """Per phase to run, its parts as (settings, grid), given the sweep's best lr per (regime, method). In the long
    regime the `long_methods` run to `long_steps` (their first `base.steps` are also the regime's report)."""
    base = study.base
    long_methods = base.methods if study.long_methods is None else study.long_methods

    def lr_for(regime, method):  # None while a (stopped) sweep has no run of the method yet
        return best_lr.get((regime, method), best_lr.get((study.sweep_regimes[0], method)))

    def grid(regime, methods):
        return [(seed, regime, method, lr_for(regime, method)) for seed in study.seeds for method in methods
                if lr_for(regime, method) is not None]

    phases = {}
    for name in study.phases:
        if name == "hard_start":
            phases[name] = [(replace(base, carry_bug_rate=study.hard_carry_bug_rate),
                             grid(study.hard_regime, base.methods))]
        elif name == "long_horizon":
            phases[name] = [(replace(base, steps=study.long_steps), grid(study.long_regime, long_methods))]
        else:
            phases[name] = [(base, grid(name, base.methods))]
    return phases


def run_study(study: StudySettings, work_dir: Path, jobs: int = 0, log=print, train: bool = True) -> dict:
    """Sweep first (its best lrs define the later phases), then the report and hard-start phases; train=False
    collects the finished runs only, leaving out phases with none."""
    base = study.base
    sweep_grid = [(seed, regime, method, lr) for seed in study.selection_seeds for regime in study.sweep_regimes
                  for method in base.methods for lr in study.learning_rates]
    sweep_settings = replace(base, diagnostics=False)
    sweep = run_all(sweep_settings, work_dir, log=log, grid=sweep_grid, jobs=jobs, train=train)
    best_lr = select_best_lr(sweep, base.steps)
    plan = study_phases(study, best_lr)
    if train:
        # seed-major across the phases before "long_horizon", then across it and the rest: a stopped study still
        # has whole seeds (every method) in each of its first phases
        names = list(plan)
        cut = names.index("long_horizon") if "long_horizon" in names else len(names)
        for group in (names[:cut], names[cut:]):
            for seed in study.seeds:
                for name in group:
                    for settings, grid in plan[name]:
                        part = [cell for cell in grid if cell[0] == seed]
                        if part:
                            run_all(settings, work_dir, log=log, grid=part, jobs=jobs)
    phases = {"sweep": (sweep_settings, sweep)}
    coverage = {"sweep": (len(sweep), len(sweep_grid))}
    for name, parts in plan.items():
        runs = [run for settings, grid in parts if grid
                for run in run_all(settings, work_dir, log=log, grid=grid, train=False)]
        coverage[name] = (len(runs), sum(len(grid) for _, grid in parts))
        if runs:
            phases[name] = (parts[0][0], runs)
    return {"best_lr": best_lr, "phases": phases, "coverage": coverage}


def truncated(history: list[dict], steps: int) -> list[dict]:
    return [point for point in history if point["step"] <= steps]


def sampled_auc(run: dict, steps: int) -> float:
    return area_under_curve(truncated(run["history"], steps), "sampled")


def select_best_lr(sweep: list[dict], steps: int) -> dict:
    """Per (regime, method): the lr with the highest sampled AUC averaged over the selection seeds."""
    scores = {}
    for run in sweep:
        scores.setdefault((run["regime"], run["method"], run["learning_rate"]), []).append(sampled_auc(run, steps))
    best = {}
    for (regime, method, lr), values in scores.items():
        incumbent = best.get((regime, method))
        if incumbent is None or statistics.fmean(values) > statistics.fmean(scores[(regime, method, incumbent)]):
            best[(regime, method)] = lr
    return best


# two-sided 95 % critical values of Student's t by degrees of freedom (n seeds − 1)
T_CRITICAL_95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def verdict(differences: list[float]) -> str:
    """"higher" / "lower" (NFT's value than the other's) when a paired t-test puts the mean difference off zero at
    95 %, else "tie"; with one seed no test is possible (a tie)."""
    if len(differences) < 2 or len(differences) - 1 not in T_CRITICAL_95:
        return "tie (too few seeds to test)" if len(differences) < 2 else "untested"
    mean, std = mean_std(differences)
    if std == 0:
        return "tie" if mean == 0 else ("higher" if mean > 0 else "lower")
    t = mean / (std / len(differences) ** 0.5)
    critical = T_CRITICAL_95[len(differences) - 1]
    return "higher" if t > critical else "lower" if t < -critical else "tie"


def paired_comparisons(runs: list[dict], metrics: dict) -> list[dict]:
    """NFT minus each other method, paired by RL seed, for each metric (name → function of a run)."""
    by_method = {}
    for run in runs:
        by_method.setdefault(run["method"], {})[run["seed"]] = run
    if "nft" not in by_method:
        return []
    rows = []
    for other, theirs in by_method.items():
        if other == "nft":
            continue
        seeds = sorted(set(by_method["nft"]) & set(theirs))
        row = {"versus": other, "seeds": len(seeds)}
        for name, metric in metrics.items():
            differences = [metric(by_method["nft"][s]) - metric(theirs[s]) for s in seeds]
            row[name] = {"mean_std": mean_std(differences), "nft_wins": sum(d > 0 for d in differences),
                         "nft_losses": sum(d < 0 for d in differences), "verdict": verdict(differences)}
        rows.append(row)
    return rows


def final_value(metric: str, steps: int):
    return lambda run: truncated(run["history"], steps)[-1][metric]


def phase_metrics(steps: int, diagnostics: bool, pass_k: int) -> dict:
    metrics = {"sampled AUC": lambda run: sampled_auc(run, steps), f"sampled @{steps}": final_value("sampled", steps),
               f"greedy @{steps}": final_value("greedy", steps)}
    if diagnostics:
        metrics[f"pass@{pass_k} @{steps}"] = final_value(f"pass@{pass_k}", steps)
        metrics[f"carry problems @{steps}"] = final_value("sampled_affected", steps)
        metrics[f"entropy @{steps}"] = final_value("entropy", steps)
    return metrics


def mean_update_norm(run: dict, steps: int) -> float:
    return statistics.fmean(run["update_norms"][:steps])


def method_rows(runs: list[dict], metrics: dict, steps: int) -> list[dict]:
    rows = []
    for method in dict.fromkeys(run["method"] for run in runs):
        group = [run for run in runs if run["method"] == method]
        row = {"method": method, "learning_rate": group[0]["learning_rate"], "seeds": len(group),
               "mean update norm": mean_std([mean_update_norm(run, steps) for run in group])}
        row.update({name: mean_std([metric(run) for run in group]) for name, metric in metrics.items()})
        rows.append(row)
    return rows


def summarize_study(result: dict, study: StudySettings) -> dict:
    """Every number the report shows, JSON-ready: sweep cells, per-phase method rows and paired comparisons."""
    base = study.base
    sweep_settings, sweep = result["phases"]["sweep"]
    cells = []
    for regime in study.sweep_regimes:
        for method in base.methods:
            for lr in study.learning_rates:
                group = [r for r in sweep if (r["regime"], r["method"], r["learning_rate"]) == (regime, method, lr)]
                if not group:
                    continue
                cells.append({"regime": regime, "method": method, "learning_rate": lr, "seeds": len(group),
                              "sampled AUC": mean_std([sampled_auc(r, base.steps) for r in group]),
                              f"sampled @{base.steps}": mean_std([final_value("sampled", base.steps)(r)
                                                                   for r in group]),
                              "mean update norm": mean_std([mean_update_norm(r, base.steps) for r in group]),
                              "best": result["best_lr"].get((regime, method)) == lr})
    phases = {}
    for name in (name for name in STUDY_PHASES if name in result["phases"]):
        settings, all_runs = result["phases"][name]
        horizon = [study.long_steps] if name == "long_horizon" else [base.steps]
        for steps in horizon:
            runs = [run for run in all_runs if run["history"][-1]["step"] >= steps]
            if not runs:
                continue
            metrics = phase_metrics(steps, settings.diagnostics, settings.pass_k)
            phases[f"{name} @{steps}"] = {"regime": runs[0]["regime"], "steps": steps,
                                          "carry_bug_rate": settings.carry_bug_rate,
                                          "methods": method_rows(runs, metrics, steps),
                                          "paired": paired_comparisons(runs, metrics)}
    start = {}
    for name in [next((n for n in REGIMES if n in result["phases"]), None), "hard_start"]:
        if name not in result["phases"]:
            continue
        settings, runs = result["phases"][name]
        first = runs[0]["history"][0]
        start[name] = {"carry_bug_rate": settings.carry_bug_rate,
                       **{k: first[k] for k in ("sampled", "greedy", "sampled_affected", "sampled_unaffected")
                          if k in first}}
    return {"best_lr": {f"{r}/{m}": lr for (r, m), lr in result["best_lr"].items()}, "sweep": cells,
            "phases": phases, "base_models": start, "coverage": result["coverage"]}


def study_markdown(summary: dict, study: StudySettings, compute: dict, command: str) -> str:
    base = study.base
    task = base.task
    lines = [
        "# Learning benchmark: NFT vs RFT vs GRPO vs Dr. GRPO (offline carry-bug addition)", "",
        f"Generated by `{command}`. Compute: {compute['runs']} runs, {compute['run_minutes']:.1f} min of RL training "
        f"and evaluation plus {compute['pretraining_minutes']:.1f} min of supervised pretraining "
        f"(two base models), single-threaded CPU processes (`nice -n 19`: wall-clock times include "
        "waiting for the CPU).", "",
        f"Task: {task.num_digits}-digit addition, exact-match reward. Policy: a random-init Qwen2 (~0.25M "
        f"parameters) pretrained for {base.pretrain_steps} supervised steps on a teacher that drops each carry with "
        f"probability {task.carry_bug_rate} (the *hard start* base: {study.hard_carry_bug_rate}). RL: "
        f"{base.prompts_per_step} prompts × {base.num_generations} generations per optimizer step, constant lr, "
        f"AdamW; on_policy = one optimizer step per generation batch, off_policy = one generation batch split into "
        f"{base.off_policy_steps_per_generation} optimizer steps. Held-out evaluation every {base.eval_every} steps "
        f"on {base.num_eval_problems} problems (sampled: temperature 1, {base.eval_samples_per_prompt} samples "
        f"each; greedy: argmax) and, for pass@{base.pass_k}, accuracy on carry problems and entropy, "
        f"{base.diagnostic_problems} problems × {base.pass_k} samples. Entropy = the policy's mean per-token entropy "
        "(nats) along its own temperature-1 answers. AUC = mean of the sampled-accuracy curve over the horizon.", "",
        "Methods: NFT (`NFTTrainer` defaults, ω = 1 − r̂); RFT (`neg_weight=0`, `prompt_weighting=\"none\"`, "
        "ω = 1); GRPO (TRL `GRPOTrainer` defaults); Dr. GRPO (`GRPOTrainer`, `loss_type=\"dr_grpo\"`, "
        "`scale_rewards=\"none\"`).", "",
        f"Learning rate: every method gets the same log-spaced sweep {study.learning_rates} on selection seed(s) "
        f"{study.selection_seeds} in {', '.join(study.sweep_regimes)}; the lr with the highest sampled AUC is then run "
        f"on the report seeds {study.seeds}. Regimes without a sweep use the lr selected in "
        f"{study.sweep_regimes[0]}. *Mean update norm* = ‖Δθ‖₂ per optimizer step, averaged over steps (and "
        "seeds).",
        "",
        "Verdicts: paired-by-seed difference NFT − other; *higher*/*lower* when a paired t-test puts the mean off "
        "zero at 95 % (two-sided), else *tie*. For the accuracy columns *higher* means NFT wins; entropy is not "
        "better or worse by itself. With 3 seeds the test only fires on large, consistent gaps.", "",
        "## Runs finished / planned", "",
        "A study stopped by its compute budget is reported on the runs it finished (phases run seed by seed, so a "
        "phase has whole seeds first): " + "; ".join(f"{name} {done}/{planned}"
                                                     for name, (done, planned) in summary["coverage"].items()) + ".",
        "",
        "## Base models at step 0", "",
        "| base | teacher carry-drop rate | sampled (all) | sampled on carry problems | sampled on carry-free problems "
        "| greedy |", "|---|---|---|---|---|---|"]
    for name, row in summary["base_models"].items():
        label = "hard start" if name == "hard_start" else "main"
        lines.append(f"| {label} | {row['carry_bug_rate']:g} | {row['sampled']:.3f} | "
                     f"{row.get('sampled_affected', float('nan')):.3f} | "
                     f"{row.get('sampled_unaffected', float('nan')):.3f} | {row['greedy']:.3f} |")
    lines += ["", "## Learning-rate sweep (selection seeds)", "",
              f"| regime | method | lr | sampled AUC | sampled @{base.steps} | mean update norm |",
              "|---|---|---|---|---|---|"]

    def sweep_value(pair, seeds, digits=3):  # no spread to show with one selection seed
        return f"{pair[0]:.{digits}f}" + (f" ± {pair[1]:.{digits}f}" if seeds > 1 else "")

    for cell in summary["sweep"]:
        mark = " **(best)**" if cell["best"] else ""
        lines.append(f"| {cell['regime']} | {cell['method']} | {cell['learning_rate']:g}{mark} | "
                     f"{sweep_value(cell['sampled AUC'], cell['seeds'])} | "
                     f"{sweep_value(cell[f'sampled @{base.steps}'], cell['seeds'])} | "
                     f"{sweep_value(cell['mean update norm'], cell['seeds'], 4)} |")
    lines.append("")
    for name, phase in summary["phases"].items():
        lines += [f"## {name.replace('_', ' ')} ({phase['regime']}, teacher carry-drop {phase['carry_bug_rate']:g})",
                  ""]
        metric_names = [k for k in phase["methods"][0] if k not in ("method", "learning_rate", "seeds")]
        lines += ["| method | lr | seeds | " + " | ".join(metric_names) + " |", "|" + "---|" * (3 + len(metric_names))]
        for row in phase["methods"]:
            values = [f"{row[k][0]:.4f} ± {row[k][1]:.4f}" if k == "mean update norm" else fmt(row[k])
                      for k in metric_names]
            lines.append(f"| {METHOD_LABELS[row['method']]} | {row['learning_rate']:g} | {row['seeds']} | "
                         + " | ".join(values) + " |")
        lines += ["", "Paired by seed, NFT − other: mean ± std (NFT higher / lower in how many seeds; verdict).", ""]
        paired_names = [k for k in phase["paired"][0] if k not in ("versus", "seeds")] if phase["paired"] else []
        lines += ["| comparison | " + " | ".join(paired_names) + " |", "|" + "---|" * (1 + len(paired_names))]
        for row in phase["paired"]:
            cells_ = [f"{fmt(row[k]['mean_std'])} ({row[k]['nft_wins']}/{row[k]['nft_losses']}; "
                      f"{row[k]['verdict']})" for k in paired_names]
            lines.append(f"| NFT − {METHOD_LABELS[row['versus']]} | " + " | ".join(cells_) + " |")
        lines.append("")
    return "\n".join(lines)


def plot_study(result: dict, study: StudySettings, output_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    base = study.base
    _, sweep = result["phases"]["sweep"]
    figure, axes = plt.subplots(1, 2, figsize=(11, 4), squeeze=False)
    for method in base.methods:
        for regime in study.sweep_regimes:
            group = sorted((r for r in sweep if (r["regime"], r["method"]) == (regime, method)),
                           key=lambda r: r["learning_rate"])
            lrs = sorted({r["learning_rate"] for r in group})
            auc = [statistics.fmean(sampled_auc(r, base.steps) for r in group if r["learning_rate"] == lr)
                   for lr in lrs]
            norm = [statistics.fmean(mean_update_norm(r, base.steps) for r in group if r["learning_rate"] == lr)
                    for lr in lrs]
            label = f"{METHOD_LABELS[method]} ({regime})"
            axes[0][0].plot(lrs, auc, marker="o", label=label)
            axes[0][1].plot(norm, auc, marker="o", label=label)
    axes[0][0].set_xscale("log")
    axes[0][0].set_xlabel("learning rate")
    axes[0][1].set_xscale("log")
    axes[0][1].xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # minor labels overlap here
    axes[0][1].set_xlabel("mean update norm ‖Δθ‖ per step")
    for axis in axes[0]:
        axis.set_ylabel(f"sampled AUC over {base.steps} steps")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    figure.suptitle(f"lr sweep on selection seed(s) {study.selection_seeds}")
    figure.tight_layout()
    figure.savefig(output_dir / "sweep.png", dpi=110)
    plt.close(figure)

    def curves(axis, runs, metric, steps, title):
        for method in base.methods:
            group = [r for r in runs if r["method"] == method]
            if not group or metric not in group[0]["history"][0]:
                continue
            points = [truncated(r["history"], steps) for r in group]
            x = [p["step"] for p in points[0]]
            stats = [mean_std([p[i][metric] for p in points]) for i in range(len(x))]
            mean, std = [m for m, _ in stats], [s for _, s in stats]
            label = f"{METHOD_LABELS[method]}, lr {group[0]['learning_rate']:g}"
            axis.plot(x, mean, marker="o", markersize=2, label=label)
            axis.fill_between(x, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)], alpha=0.15)
        axis.set_title(title, fontsize=9)
        axis.set_xlabel("optimizer step")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=6)

    names = [name for name in STUDY_PHASES if name in result["phases"] and name != "long_horizon"]
    if not names:
        return
    figure, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 4), squeeze=False)
    for axis, name in zip(axes[0], names):
        _, runs = result["phases"][name]
        curves(axis, runs, "sampled", base.steps, f"{name}: held-out sampled accuracy")
    figure.suptitle(f"mean ± std over report seeds {study.seeds}, selected lr per method")
    figure.tight_layout()
    figure.savefig(output_dir / "curves.png", dpi=110)
    plt.close(figure)

    if "long_horizon" not in result["phases"]:
        return
    _, runs = result["phases"]["long_horizon"]
    runs = [run for run in runs if run["history"][-1]["step"] >= study.long_steps]
    metrics = ("sampled", f"pass@{base.pass_k}", "sampled_affected", "entropy")
    figure, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 4), squeeze=False)
    for axis, metric in zip(axes[0], metrics):
        curves(axis, runs, metric, study.long_steps, f"{study.long_regime}, {study.long_steps} steps: {metric}")
    figure.tight_layout()
    figure.savefig(output_dir / "long_horizon.png", dpi=110)
    plt.close(figure)


def write_study(result: dict, study: StudySettings, work_dir: Path, output_dir: Path, command: str) -> dict:
    summary = summarize_study(result, study)
    runs = [run for _, phase_runs in result["phases"].values() for run in phase_runs]
    unique = {run["key"]: run for run in runs}
    ledger = work_dir / "pretraining_seconds.json"
    pretraining = json.loads(ledger.read_text()) if ledger.exists() else {}
    store = work_dir / "runs.jsonl"
    trained = [json.loads(line) for line in store.read_text().splitlines()] if store.exists() else []
    # compute: every run trained in this work dir (also runs of earlier, abandoned designs), plus pretraining
    compute = {"runs": len(trained), "run_minutes": sum(r["seconds"] for r in trained) / 60,
               "pretraining_minutes": sum(pretraining.values()) / 60}
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "learning.md").write_text(study_markdown(summary, study, compute, command))
    plot_study(result, study, output_dir)
    serializable = {"study": asdict(study), "compute": compute, **summary,
                    "runs": [{k: v for k, v in run.items() if k != "key"} for run in unique.values()]}
    (output_dir / "learning.json").write_text(json.dumps(serializable, indent=1))
    return summary


# ------------------------------------------------------------------------------------------------------- CLI
def parse_args(argv=None) -> tuple[BenchmarkSettings, argparse.Namespace]:
    defaults = BenchmarkSettings()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny preset (1 seed, 8 steps, tiny model): seconds")
    parser.add_argument("--seeds", type=int, nargs="+")
    parser.add_argument("--steps", type=int, help=f"optimizer steps per run (default {defaults.steps})")
    parser.add_argument("--eval-every", type=int)
    parser.add_argument("--methods", nargs="+", choices=METHODS)
    parser.add_argument("--regimes", nargs="+", choices=REGIMES, help="regimes to run (--study: to sweep)")
    parser.add_argument("--lrs", type=float, nargs="+", help="learning-rate sweep, same for every method")
    parser.add_argument("--num-digits", type=int)
    parser.add_argument("--carry-bug-rate", type=float)
    parser.add_argument("--off-policy-steps-per-generation", type=int)
    parser.add_argument("--output-dir", type=Path,
                        help="default: benchmarks/results (grid), benchmarks/results/learning (--study)")
    parser.add_argument(
        "--work-dir", type=Path, default=Path("outputs/learning_benchmark"), help="pretrained checkpoints (cache)"
    )
    parser.add_argument("--jobs", type=int, default=0,
                        help="0: train every run in this process; N >= 1: a fresh forked process per run, N at a time")
    parser.add_argument("--study", action="store_true",
                        help="the study design: lr sweep on selection seeds, report seeds at each method's best lr, "
                             "hard start, long horizon (see StudySettings)")
    parser.add_argument("--long-methods", nargs="+", choices=METHODS,
                        help="--study: the methods run to the long horizon (default: all)")
    parser.add_argument("--phases", nargs="+", choices=STUDY_PHASES, help="--study: phases after the sweep, in order")
    parser.add_argument("--report-only", action="store_true",
                        help="--study: write the report from the finished runs in --work-dir, training nothing")
    args = parser.parse_args(argv)
    settings = BenchmarkSettings(**QUICK) if args.quick else BenchmarkSettings()
    overrides = dict(
        seeds=args.seeds,
        steps=args.steps,
        eval_every=args.eval_every,
        methods=args.methods,
        regimes=args.regimes,
        learning_rates=args.lrs,
        num_digits=args.num_digits,
        carry_bug_rate=args.carry_bug_rate,
        off_policy_steps_per_generation=args.off_policy_steps_per_generation,
    )
    for name, value in overrides.items():
        if value is not None:
            setattr(settings, name, value)
    if args.output_dir is None:
        args.output_dir = Path("benchmarks/results/learning" if args.study else "benchmarks/results")
    if args.study:
        settings.diagnostics = True
        if args.eval_every is None and not args.quick:
            settings.eval_every = StudySettings().base.eval_every
    if settings.steps % settings.eval_every:
        parser.error(f"--steps {settings.steps} must be a multiple of --eval-every {settings.eval_every}")
    return settings, args


def quiet_libraries() -> None:
    """Runs are many and short: keep TRL/transformers' per-run notices out of the log."""
    warnings.filterwarnings("ignore")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()


def main(argv=None) -> dict:
    settings, args = parse_args(argv)
    torch.set_num_threads(1)
    quiet_libraries()
    args.output_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    args.work_dir.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/learning.py " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.study:
        study = study_from_args(settings, args)
        result = run_study(study, args.work_dir, jobs=args.jobs, train=not args.report_only)
        summary = write_study(result, study, args.work_dir, args.output_dir, command.strip())
        print((args.output_dir / "learning.md").read_text())
        return summary
    runs = run_all(settings, args.work_dir, jobs=args.jobs)
    wall = time.perf_counter() - started
    summary = write_outputs(runs, settings, args.output_dir, wall, command.strip())
    print((args.output_dir / "learning.md").read_text())
    return summary


if __name__ == "__main__":
    main()
