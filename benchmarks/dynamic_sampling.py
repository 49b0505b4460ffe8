"""Dynamic-sampling benchmark: generation spent per trained completion, and what it buys.

On the offline carry-bug addition testbed (`trl_nft.testing.arithmetic`), every variant trains NFT (ω = 1 − r̂, paper
defaults) from the same supervised base model for the same number of optimizer steps, each step on the same number
of completions:

* `nft`               — no dynamic sampling (every generated completion is trained on, degenerate groups included);
* `ds_paper`          — dynamic sampling as the paper: first round = the batch, refill rounds 3× the batch's prompts,
                        ≤ 10 rounds, surplus informative groups dropped;
* `ds_official`       — as `ds_paper` but the first round already generates 3× (the official gen_batch_size 1,536);
* `ds_adaptive`       — rounds sized from a running estimate of the informative fraction (margin 1.2);
* `ds_carry`          — surplus informative groups carried over to the next generation batch (with their π_old);
* `ds_adaptive_carry` — both.

Measured per run: completions generated (every generated completion is scored once, so the reward counts them) per
trained completion, wall time per optimizer step (generation included, held-out evaluation excluded), held-out
accuracy per step, and accuracy at plain NFT's generation budget (interpolated between evaluations).

`--carry-bug-rate` sets how often the base model's pretraining teacher drops a carry (default 0.6, the testbed's); a
higher rate (0.9, `benchmarks/learning.py`'s *hard start*) gives a base model whose groups are mostly all-wrong. The
pretrained base is cached per task, so each rate trains (once) and reuses its own base model.

    OMP_NUM_THREADS=1 python benchmarks/dynamic_sampling.py            # the full benchmark (see --help)
    OMP_NUM_THREADS=1 python benchmarks/dynamic_sampling.py --quick    # seconds: every code path at a tiny size
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core: a tiny model is ~100x slower with oversubscribed threads

import argparse
import json
import logging
import statistics
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from transformers import PrinterCallback, TrainerCallback

from trl_nft.testing.arithmetic import (
    AdditionTask,
    HeldoutAccuracyCallback,
    build_testbed,
    exact_match_reward,
    rl_trainer_options,
)

DYNAMIC = dict(dynamic_sampling=True, max_generation_rounds=10, dynamic_sampling_oversample=3)
METHODS = {
    "nft": {},
    "ds_paper": DYNAMIC,
    "ds_official": {**DYNAMIC, "dynamic_sampling_first_round_oversample": 3},
    "ds_adaptive": {**DYNAMIC, "dynamic_sampling_adaptive": True},
    "ds_carry": {**DYNAMIC, "dynamic_sampling_carry_over": True},
    "ds_adaptive_carry": {**DYNAMIC, "dynamic_sampling_adaptive": True, "dynamic_sampling_carry_over": True},
}
LABELS = {
    "nft": "plain NFT",
    "ds_paper": "DS, paper (1× + 3× refills)",
    "ds_official": "DS, official first round (3×)",
    "ds_adaptive": "DS, adaptive rounds",
    "ds_carry": "DS, carry-over",
    "ds_adaptive_carry": "DS, adaptive + carry-over",
}
REGIMES = ("on_policy", "off_policy")
DEFAULT_CARRY_BUG_RATE = AdditionTask().carry_bug_rate  # 0.6, the testbed's (and the existing results') base model


@dataclass
class Settings:
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    regimes: list[str] = field(default_factory=lambda: list(REGIMES))
    learning_rate: float = 3e-4  # the earlier 3-value sweep's best for NFT; benchmarks/results/learning/ now selects 3.37e-4
    steps: int = 160
    eval_every: int = 16
    prompts_per_step: int = 8
    num_generations: int = 8
    off_policy_steps_per_generation: int = 16
    pretrain_steps: int = 2000
    num_eval_problems: int = 256
    eval_samples_per_prompt: int = 2
    num_digits: int = 3
    carry_bug_rate: float = DEFAULT_CARRY_BUG_RATE  # the base model's pretraining teacher drops a carry this often
    model_size: dict | None = None

    @property
    def task(self) -> AdditionTask:
        return AdditionTask(num_digits=self.num_digits, carry_bug_rate=self.carry_bug_rate)


QUICK = dict(seeds=[0], steps=4, eval_every=2, prompts_per_step=2, num_generations=4, off_policy_steps_per_generation=2,
             pretrain_steps=20, num_eval_problems=8, eval_samples_per_prompt=1, num_digits=2,
             model_size=dict(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64))


class CountingReward:
    """The exact-match verifier, counting the completions it scores (= completions generated)."""

    __name__ = "exact_match_reward"

    def __init__(self):
        self.scored = 0

    def __call__(self, completions, **kwargs):
        self.scored += len(completions)
        return exact_match_reward(completions, **kwargs)


class StepTimer(TrainerCallback):
    """Wall time of each optimizer step, generation included. Registered before the evaluation callback, so its
    `on_step_end` runs before a held-out evaluation and the evaluation is not counted."""

    def __init__(self):
        self.seconds: list[float] = []
        self._started = None

    def on_step_begin(self, args, state, control, **kwargs):
        self._started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.seconds.append(time.perf_counter() - self._started)


def run_one(settings: Settings, method: str, regime: str, seed: int, work_dir: Path) -> dict:
    from trl_nft import NFTConfig, NFTTrainer

    testbed = build_testbed(settings.task, pretrain_seed=0, pretrain_steps=settings.pretrain_steps,
                            num_eval_problems=settings.num_eval_problems,
                            eval_samples_per_prompt=settings.eval_samples_per_prompt,
                            model_size=settings.model_size, cache_dir=work_dir / "pretrained")
    steps_per_generation = settings.off_policy_steps_per_generation if regime == "off_policy" else 1
    args = NFTConfig(
        output_dir=str(work_dir / "trainer"),
        **rl_trainer_options(settings.task, prompts_per_step=settings.prompts_per_step,
                             num_generations=settings.num_generations, eval_every=settings.eval_every,
                             max_steps=settings.steps, seed=seed, learning_rate=settings.learning_rate),
        steps_per_generation=steps_per_generation,
        **METHODS[method],
    )
    reward = CountingReward()
    timer = StepTimer()
    evaluation = HeldoutAccuracyCallback(testbed.evaluator, every=settings.eval_every,
                                         on_record=lambda record: record.update(samples=reward.scored))
    trainer = NFTTrainer(model=testbed.model, reward_funcs=reward, args=args, train_dataset=testbed.train_dataset,
                         processing_class=testbed.tokenizer, callbacks=[timer, evaluation])
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    logged = {}
    for entry in trainer.state.log_history:
        for key, value in entry.items():
            if key.startswith("dynamic_sampling/"):
                logged.setdefault(key, []).append(value)
    return {
        "method": method, "regime": regime, "seed": seed,
        "history": evaluation.history,
        "generated": reward.scored,
        "trained": settings.steps * settings.prompts_per_step * settings.num_generations,
        "step_seconds": timer.seconds,
        "dynamic_sampling": {key: statistics.fmean(values) for key, values in logged.items()},
    }


def run_all(settings: Settings, work_dir: Path, log=print) -> list[dict]:
    """Every (seed, regime, method); finished runs are kept in work_dir/runs.jsonl and not redone."""
    store = work_dir / "runs.jsonl"
    done = {}
    if store.exists():
        for line in store.read_text().splitlines():
            record = json.loads(line)
            done[record["key"]] = record
    shared = {k: v for k, v in asdict(settings).items() if k not in ("seeds", "methods", "regimes")}
    if shared["carry_bug_rate"] == DEFAULT_CARRY_BUG_RATE:  # keys of runs stored before the option existed
        del shared["carry_bug_rate"]
    runs, started = [], time.perf_counter()
    grid = [(seed, regime, method) for seed in settings.seeds for regime in settings.regimes
            for method in settings.methods]
    for index, (seed, regime, method) in enumerate(grid, 1):
        key = json.dumps({"settings": shared, "method": method, "regime": regime, "seed": seed}, sort_keys=True)
        if key not in done:
            record = {"key": key, **run_one(settings, method, regime, seed, work_dir)}
            with store.open("a") as handle:
                handle.write(json.dumps(record) + "\n")
            done[key] = record
            final = record["history"][-1]
            log(f"[{index}/{len(grid)}] seed={seed} {regime} {method}: sampled {final['sampled']:.3f}, "
                f"{record['generated'] / record['trained']:.2f} generated per trained, "
                f"{statistics.fmean(record['step_seconds']):.2f} s/step (total {time.perf_counter() - started:.0f} s)")
        runs.append(done[key])
    return runs


# ----------------------------------------------------------------------------------------------- aggregation
def area_under_curve(history: list[dict], metric: str = "sampled") -> float:
    """Mean of the accuracy-vs-step curve (trapezoids over the step span)."""
    steps, values = [p["step"] for p in history], [p[metric] for p in history]
    area = sum((s1 - s0) * (v0 + v1) / 2 for s0, s1, v0, v1 in zip(steps, steps[1:], values, values[1:]))
    return area / max(1, steps[-1] - steps[0])


def accuracy_at_budget(history: list[dict], budget: float, metric: str = "sampled") -> float | None:
    """Accuracy when the run had generated `budget` completions (linear between evaluations); None if never."""
    for before, after in zip(history, history[1:]):
        if before["samples"] <= budget <= after["samples"]:
            span = after["samples"] - before["samples"]
            weight = 0.0 if span == 0 else (budget - before["samples"]) / span
            return before[metric] + weight * (after[metric] - before[metric])
    return None


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def fmt(pair: tuple[float, float], digits: int = 3) -> str:
    return f"{pair[0]:.{digits}f} ± {pair[1]:.{digits}f}"


def summarize(runs: list[dict], settings: Settings) -> dict:
    """Per (regime, method): mean ± std over seeds of every reported quantity."""
    cells = {}
    for regime in settings.regimes:
        plain = [r for r in runs if (r["regime"], r["method"]) == (regime, "nft")]
        budget = statistics.fmean(r["generated"] for r in plain) if plain else None
        for method in settings.methods:
            group = [r for r in runs if (r["regime"], r["method"]) == (regime, method)]
            if not group:
                continue
            at_budget = [accuracy_at_budget(r["history"], budget) for r in group] if budget else []
            cells[(regime, method)] = {
                "seeds": len(group),
                "generated_per_trained": mean_std([r["generated"] / r["trained"] for r in group]),
                "seconds_per_step": mean_std([statistics.fmean(r["step_seconds"]) for r in group]),
                "sampled_final": mean_std([r["history"][-1]["sampled"] for r in group]),
                "greedy_final": mean_std([r["history"][-1]["greedy"] for r in group]),
                "sampled_auc": mean_std([area_under_curve(r["history"]) for r in group]),
                "sampled_at_nft_budget": mean_std(at_budget) if at_budget and None not in at_budget else None,
                "rounds": mean_std([r["dynamic_sampling"].get("dynamic_sampling/rounds", 1.0) for r in group]),
                "carried_frac": mean_std([r["dynamic_sampling"].get("dynamic_sampling/carried_frac", 0.0)
                                          for r in group]),
            }
    return cells


def paired(runs: list[dict], regime: str, method: str, baseline: str, value) -> tuple[tuple[float, float], int, int]:
    """Mean ± std over seeds of value(run) − value(baseline run of the same seed), and on how many seeds it is > 0."""
    by_seed = {r["seed"]: r for r in runs if (r["regime"], r["method"]) == (regime, baseline)}
    differences = [value(r) - value(by_seed[r["seed"]]) for r in runs
                   if (r["regime"], r["method"]) == (regime, method) and r["seed"] in by_seed]
    return mean_std(differences), sum(d > 0 for d in differences), len(differences)


def base_accuracy(runs: list[dict]) -> dict[str, float]:
    """The base model's held-out accuracy (the step-0 evaluation; the same in every run: fixed problems and draws)."""
    return {metric: statistics.fmean(r["history"][0][metric] for r in runs) for metric in ("sampled", "greedy")}


def markdown_report(runs: list[dict], settings: Settings, command: str) -> str:
    cells = summarize(runs, settings)
    minutes = sum(sum(r["step_seconds"]) for r in runs) / 60
    base = base_accuracy(runs)
    lines = [
        "# Dynamic sampling: generation per trained completion, time per step, accuracy (offline addition testbed)",
        "",
        f"Generated by `{command}`: {len(runs)} runs ({minutes:.0f} min of training steps; evaluation excluded). "
        f"NFT (ω = 1 − r̂), lr {settings.learning_rate:g} AdamW constant, {settings.steps} optimizer steps of "
        f"{settings.prompts_per_step} prompts × {settings.num_generations} completions, {settings.num_digits}-digit "
        f"carry-bug addition from one supervised base model (its pretraining teacher drops each carry with "
        f"probability **{settings.carry_bug_rate:g}**; held-out accuracy at step 0: **sampled {base['sampled']:.3f}**, "
        f"greedy {base['greedy']:.3f}); RL seeds {settings.seeds}. Held-out accuracy on "
        f"{settings.num_eval_problems} problems every {settings.eval_every} "
        f"steps (*sampled*: temperature 1, {settings.eval_samples_per_prompt} samples each). **on_policy** = one "
        f"optimizer step per generation batch; **off_policy** = {settings.off_policy_steps_per_generation} optimizer "
        "steps per generation batch (`steps_per_generation`, the paper's setting). Mean ± std over seeds.",
        "",
        "*generated / trained*: completions generated (all rounds) per completion in a trained batch. *s / step*: wall "
        "time of an optimizer step including generation (it includes waiting for the CPU on a busy machine: compare within a table only). "
        "*@ NFT budget*: sampled accuracy when the run had generated as many completions as plain NFT does in the whole "
        "run (interpolated; plain NFT's own value is its final one).",
        "",
    ]
    for regime in settings.regimes:
        lines += [f"## {regime}", "",
                  "| method | generated / trained | s / step | rounds / batch | carried share | sampled @final | "
                  "sampled AUC | greedy @final | sampled @ NFT budget |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for method in settings.methods:
            cell = cells.get((regime, method))
            if cell is None:
                continue
            budget = fmt(cell["sampled_at_nft_budget"]) if cell["sampled_at_nft_budget"] else "—"
            lines.append(
                f"| {LABELS[method]} | {fmt(cell['generated_per_trained'], 2)} | {fmt(cell['seconds_per_step'], 2)} | "
                f"{fmt(cell['rounds'], 2)} | {fmt(cell['carried_frac'], 2)} | {fmt(cell['sampled_final'])} | "
                f"{fmt(cell['sampled_auc'])} | {fmt(cell['greedy_final'])} | {budget} |"
            )
        lines += ["", "Paired by seed (difference, seeds where it is > 0):", "",
                  "| method | AUC − DS paper | final − DS paper | @ NFT budget − plain NFT (final) |", "|---|---|---|---|"]
        for method in settings.methods:
            baselines_run = all((regime, baseline) in cells for baseline in ("nft", "ds_paper"))
            if method in ("nft", "ds_paper") or (regime, method) not in cells or not baselines_run:
                continue
            auc, auc_wins, n = paired(runs, regime, method, "ds_paper", lambda r: area_under_curve(r["history"]))
            final, final_wins, _ = paired(runs, regime, method, "ds_paper", lambda r: r["history"][-1]["sampled"])
            budget = statistics.fmean(r["generated"] for r in runs if (r["regime"], r["method"]) == (regime, "nft"))
            at_budget, budget_wins, _ = paired(
                runs, regime, method, "nft",
                lambda r: accuracy_at_budget(r["history"], budget) if r["method"] != "nft" else r["history"][-1]["sampled"])
            lines.append(f"| {LABELS[method]} | {fmt(auc)} ({auc_wins}/{n}) | {fmt(final)} ({final_wins}/{n}) | "
                         f"{fmt(at_budget)} ({budget_wins}/{n}) |")
        lines.append("")
    return "\n".join(lines)


def plot(runs: list[dict], settings: Settings, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, len(settings.regimes), figsize=(6 * len(settings.regimes), 8), squeeze=False)
    for column, regime in enumerate(settings.regimes):
        for method in settings.methods:
            group = [r for r in runs if (r["regime"], r["method"]) == (regime, method)]
            if not group:
                continue
            points = list(zip(*[[(p["step"], p["samples"], p["sampled"]) for p in r["history"]] for r in group]))
            steps = [point[0][0] for point in points]
            samples = [statistics.fmean(run[1] for run in point) for point in points]
            mean = [statistics.fmean(run[2] for run in point) for point in points]
            for row, x in enumerate((steps, samples)):
                axes[row][column].plot(x, mean, marker="o", markersize=3, label=LABELS[method])
        axes[0][column].set(title=f"{regime}: held-out sampled accuracy", xlabel="optimizer step")
        axes[1][column].set(title=f"{regime}: same, against generation spent", xlabel="completions generated")
        for row in range(2):
            axes[row][column].grid(alpha=0.3)
            axes[row][column].legend(fontsize=7)
    figure.suptitle(f"NFT with and without dynamic sampling: mean over {len(settings.seeds)} seeds "
                    f"(base model's carry-bug rate {settings.carry_bug_rate:g})")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_outputs(runs: list[dict], settings: Settings, output_dir: Path, command: str) -> dict:
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "dynamic_sampling.md").write_text(markdown_report(runs, settings, command))
    plot(runs, settings, output_dir / "dynamic_sampling.png")
    cells = summarize(runs, settings)
    serializable = {"settings": asdict(settings), "cells": {f"{r}/{m}": c for (r, m), c in cells.items()},
                    "runs": [{k: v for k, v in run.items() if k != "key"} for run in runs]}
    (output_dir / "dynamic_sampling.json").write_text(json.dumps(serializable, indent=1))
    return cells


def parse_args(argv=None) -> tuple[Settings, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny preset (1 seed, 4 steps, tiny model): seconds")
    parser.add_argument("--seeds", type=int, nargs="+")
    parser.add_argument("--methods", nargs="+", choices=list(METHODS))
    parser.add_argument("--regimes", nargs="+", choices=REGIMES)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--eval-every", type=int)
    parser.add_argument("--num-eval-problems", type=int)
    parser.add_argument("--carry-bug-rate", type=float,
                        help=f"how often the base model's pretraining teacher drops a carry (default "
                             f"{DEFAULT_CARRY_BUG_RATE:g}; 0.9 = the hard start of benchmarks/learning.py)")
    parser.add_argument("--output-dir", type=Path, default=Path("benchmarks/results/dynamic_sampling"))
    parser.add_argument("--work-dir", type=Path, default=Path("outputs/ds_benchmark"))
    args = parser.parse_args(argv)
    settings = Settings(**QUICK) if args.quick else Settings()
    for name in ("seeds", "methods", "regimes", "steps", "eval_every", "num_eval_problems", "carry_bug_rate"):
        if getattr(args, name) is not None:
            setattr(settings, name, getattr(args, name))
    if not 0.0 <= settings.carry_bug_rate <= 1.0:
        parser.error(f"--carry-bug-rate {settings.carry_bug_rate:g} must lie in [0, 1]")
    if settings.steps % settings.eval_every:
        parser.error(f"--steps {settings.steps} must be a multiple of --eval-every {settings.eval_every}")
    return settings, args


def main(argv=None) -> dict:
    settings, args = parse_args(argv)
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    logging.getLogger("trl_nft.trainer").setLevel(logging.ERROR)  # round-cap warnings are counted in the metrics
    args.work_dir.mkdir(parents=True, exist_ok=True)
    runs = run_all(settings, args.work_dir)
    command = "python benchmarks/dynamic_sampling.py " + " ".join(sys.argv[1:] if argv is None else argv)
    cells = write_outputs(runs, settings, args.output_dir, command.strip())
    print((args.output_dir / "dynamic_sampling.md").read_text())
    return cells


if __name__ == "__main__":
    main()
