"""Learning benchmark: NFT vs GRPO vs RFT on the offline carry-bug addition testbed (`trl_nft.arithmetic`).

Every run starts from the same supervised base model (pretrained once and cached; seeds are RL seeds: sampling and
prompt order), sees the same prompt set and number of samples, and is evaluated on the same held-out problems every
`--eval-every` optimizer steps.

* NFT  — `NFTTrainer`, paper defaults (ω = 1 − r̂, λ = 1, ε = 1).
* GRPO — TRL's `GRPOTrainer` with its defaults (loss_type "dapo", std-scaled advantages, clip ε = 0.2).
* RFT  — `NFTTrainer` with `neg_weight=0`, `prompt_weighting="none"` (positives only).

Regimes: on-policy (one optimizer step per generation batch: NFT is then exactly Dr. GRPO) and off-policy (one
generation batch is split into `steps_per_generation` optimizer steps, the paper's 16 mini-batches per rollout).

    OMP_NUM_THREADS=1 python benchmarks/learning.py            # full run (see --help for the budget)
    OMP_NUM_THREADS=1 python benchmarks/learning.py --quick    # seconds: a smoke test of every code path
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
from transformers import PrinterCallback

from trl_nft.arithmetic import (
    AdditionTask,
    HeldoutAccuracyCallback,
    build_testbed,
    exact_match_reward,
    rl_trainer_options,
)

METHODS = ("nft", "grpo", "rft", "nft_ds")
DEFAULT_METHODS = ("nft", "grpo", "rft")  # nft_ds (dynamic sampling) is compared on request: --methods nft nft_ds
REGIMES = ("on_policy", "off_policy")
METHOD_LABELS = {
    "nft": "NFT (ω = 1 − r̂)",
    "grpo": "GRPO (TRL defaults)",
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
    # each evaluation point also records how many completions had been generated by then
    callback = HeldoutAccuracyCallback(
        testbed.evaluator, every=settings.eval_every, on_record=lambda r: r.update(samples=reward.completions_scored)
    )
    trainer = trainer_cls(
        model=testbed.model,
        reward_funcs=reward,
        args=args,
        train_dataset=testbed.train_dataset,
        processing_class=testbed.tokenizer,
        callbacks=[callback],
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
        "seconds": time.perf_counter() - started,
    }


def run_key(settings: BenchmarkSettings, method: str, regime: str, learning_rate: float, seed: int) -> str:
    shared = {k: v for k, v in asdict(settings).items() if k not in ("seeds", "methods", "regimes", "learning_rates")}
    return json.dumps(
        {"settings": shared, "method": method, "regime": regime, "lr": learning_rate, "seed": seed}, sort_keys=True
    )


def run_all(settings: BenchmarkSettings, work_dir: Path, log=print) -> list[dict]:
    """Every run of the grid, in seed-major order; finished runs are kept in work_dir/runs.jsonl and not redone."""
    store = work_dir / "runs.jsonl"
    done = {}
    if store.exists():
        for line in store.read_text().splitlines():
            record = json.loads(line)
            done[record["key"]] = record
    grid = [
        (seed, regime, method, lr)
        for seed in settings.seeds
        for regime in settings.regimes
        for method in settings.methods
        for lr in settings.learning_rates
    ]
    results = []
    started = time.perf_counter()
    for index, (seed, regime, method, lr) in enumerate(grid, 1):
        key = run_key(settings, method, regime, lr, seed)
        if key not in done:
            record = {"key": key, **run_one(settings, method, regime, lr, seed, work_dir)}
            with store.open("a") as handle:
                handle.write(json.dumps(record) + "\n")
            done[key] = record
            final = record["history"][-1]
            log(
                f"[{index}/{len(grid)}] seed={seed} {regime} {method} lr={lr:g}: sampled {final['sampled']:.3f} "
                f"greedy {final['greedy']:.3f} ({record['seconds']:.0f}s, total {time.perf_counter() - started:.0f}s)"
            )
        results.append(done[key])
    return results


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


# ------------------------------------------------------------------------------------------------------- CLI
def parse_args(argv=None) -> tuple[BenchmarkSettings, argparse.Namespace]:
    defaults = BenchmarkSettings()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny preset (1 seed, 8 steps, tiny model): seconds")
    parser.add_argument("--seeds", type=int, nargs="+")
    parser.add_argument("--steps", type=int, help=f"optimizer steps per run (default {defaults.steps})")
    parser.add_argument("--eval-every", type=int)
    parser.add_argument("--methods", nargs="+", choices=METHODS)
    parser.add_argument("--regimes", nargs="+", choices=REGIMES)
    parser.add_argument("--lrs", type=float, nargs="+", help="learning-rate sweep, same for every method")
    parser.add_argument("--num-digits", type=int)
    parser.add_argument("--carry-bug-rate", type=float)
    parser.add_argument("--off-policy-steps-per-generation", type=int)
    parser.add_argument("--output-dir", type=Path, default=Path("benchmarks/results"))
    parser.add_argument(
        "--work-dir", type=Path, default=Path("outputs/learning_benchmark"), help="pretrained checkpoints (cache)"
    )
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
    runs = run_all(settings, args.work_dir)
    wall = time.perf_counter() - started
    command = "python benchmarks/learning.py " + " ".join(sys.argv[1:] if argv is None else argv)
    summary = write_outputs(runs, settings, args.output_dir, wall, command.strip())
    print((args.output_dir / "learning.md").read_text())
    return summary


if __name__ == "__main__":
    main()
