"""Whole groups per optimizer step (`keep_groups_together`) vs TRL's row shuffle, off-policy, on the offline
carry-bug addition testbed (`trl_nft.testing.arithmetic`).

Off-policy = one generation batch of 16 × 8 prompts × 8 completions is split into 16 optimizer steps
(`steps_per_generation=16`, the paper's 16 mini-batches per rollout). TRL shuffles the batch's completions one by
one, so each step sees ~8 groups' worth of completions drawn from up to 128 prompts; with `keep_groups_together`
each step trains 8 complete groups. Methods: NFT (paper defaults), RFT (`neg_weight=0`, ω = 1) and Dr. GRPO (TRL's
`GRPOTrainer` with `loss_type="dr_grpo"`, `scale_rewards="none"`, given the same whole-group mixin), each at the
learning rate the learning study selected for it off-policy (benchmarks/results/learning/learning.md). Every run
starts from the learning study's supervised base model (cached in --work-dir); seeds are RL seeds.

    OMP_NUM_THREADS=1 nice python benchmarks/group_batches.py            # the study (about 15 min of one core)
    OMP_NUM_THREADS=1 python benchmarks/group_batches.py --quick         # seconds: every code path at a tiny size
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core: a tiny model is ~100x slower with oversubscribed threads

import argparse
import json
import statistics
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from transformers import PrinterCallback

from trl_nft.testing.arithmetic import (
    AdditionTask,
    HeldoutAccuracyCallback,
    build_testbed,
    exact_match_reward,
    rl_trainer_options,
)

METHODS = ("nft", "rft", "dr_grpo")
METHOD_LABELS = {"nft": "NFT (ω = 1 − r̂)", "rft": "RFT (λ = 0, ω = 1)", "dr_grpo": "Dr. GRPO (TRL)"}
# Selected off-policy by the learning study's sweep (benchmarks/results/learning/learning.md, "(best)" rows).
LEARNING_RATES = {"nft": 3.37e-4, "rft": 6e-4, "dr_grpo": 3.37e-4}
ORDERS = ("rows", "groups")  # TRL's row shuffle; keep_groups_together
ORDER_LABELS = {"rows": "TRL row shuffle", "groups": "keep_groups_together"}


@dataclass
class Settings:
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    steps: int = 32
    eval_every: int = 16
    prompts_per_step: int = 8
    num_generations: int = 8
    steps_per_generation: int = 16
    num_digits: int = 3
    carry_bug_rate: float = 0.6
    pretrain_steps: int = 2000
    num_eval_problems: int = 256
    eval_samples_per_prompt: int = 2
    model_size: dict | None = None

    @property
    def task(self) -> AdditionTask:
        return AdditionTask(num_digits=self.num_digits, carry_bug_rate=self.carry_bug_rate)


QUICK = dict(seeds=[0], steps=4, eval_every=2, prompts_per_step=2, num_generations=4, steps_per_generation=2,
             num_digits=2, pretrain_steps=20, num_eval_problems=16, eval_samples_per_prompt=1,
             model_size=dict(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64))


def trainer_class_and_config(method: str, order: str):
    from trl import GRPOConfig, GRPOTrainer

    from trl_nft import NFTConfig, NFTTrainer
    from trl_nft.whole_group_batches import WholeGroupBatchesMixin

    keep = order == "groups"
    if method == "nft":
        return NFTTrainer, NFTConfig, dict(keep_groups_together=keep)
    if method == "rft":
        return NFTTrainer, NFTConfig, dict(keep_groups_together=keep, neg_weight=0.0, prompt_weighting="none")
    if method == "dr_grpo":
        if not keep:
            return GRPOTrainer, GRPOConfig, dict(loss_type="dr_grpo", scale_rewards="none")

        class DrGRPOWholeGroups(WholeGroupBatchesMixin, GRPOTrainer):
            def _keeps_groups_together(self) -> bool:
                return True

        return DrGRPOWholeGroups, GRPOConfig, dict(loss_type="dr_grpo", scale_rewards="none")
    raise ValueError(f"unknown method {method!r}; choose from {METHODS}")


class GroupSpread:
    """Counts, per optimizer step, how many distinct prompts its completions come from (a whole-group step: as many
    as the step has groups; TRL's row shuffle: many more)."""

    def __init__(self):
        self.prompts_per_step: dict[int, set] = {}

    def wrap(self, trainer):
        compute_loss = trainer._compute_loss

        def recording(model, inputs):
            step = trainer.state.global_step
            prompts = {tuple(row.tolist()) for row in inputs["prompt_ids"]}
            self.prompts_per_step.setdefault(step, set()).update(prompts)
            return compute_loss(model, inputs)

        trainer._compute_loss = recording

    def mean(self) -> float:
        return statistics.fmean(len(prompts) for prompts in self.prompts_per_step.values())


def run_one(settings: Settings, method: str, order: str, seed: int, work_dir: Path) -> dict:
    testbed = build_testbed(settings.task, pretrain_seed=0, pretrain_steps=settings.pretrain_steps,
                            num_eval_problems=settings.num_eval_problems,
                            eval_samples_per_prompt=settings.eval_samples_per_prompt,
                            model_size=settings.model_size, cache_dir=work_dir / "pretrained")
    trainer_cls, config_cls, options = trainer_class_and_config(method, order)
    learning_rate = LEARNING_RATES[method]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        args = config_cls(
            output_dir=str(work_dir / "trainer"),
            **rl_trainer_options(settings.task, prompts_per_step=settings.prompts_per_step,
                                 num_generations=settings.num_generations, eval_every=settings.eval_every,
                                 max_steps=settings.steps, seed=seed, learning_rate=learning_rate),
            steps_per_generation=settings.steps_per_generation,
            **options,
        )
    callback = HeldoutAccuracyCallback(testbed.evaluator, every=settings.eval_every)
    trainer = trainer_cls(model=testbed.model, reward_funcs=exact_match_reward, args=args,
                          train_dataset=testbed.train_dataset, processing_class=testbed.tokenizer,
                          callbacks=[callback])
    trainer.remove_callback(PrinterCallback)
    spread = GroupSpread()
    spread.wrap(trainer)
    started = time.perf_counter()
    trainer.train()
    return {"method": method, "order": order, "seed": seed, "learning_rate": learning_rate,
            "history": callback.history, "prompts_per_step": spread.mean(),
            "seconds": time.perf_counter() - started}


def auc(history: list[dict], key: str) -> float:
    """Mean accuracy over the evaluation points (trapezoid over steps, normalised by the horizon)."""
    area = sum((b["step"] - a["step"]) * (a[key] + b[key]) / 2 for a, b in zip(history, history[1:]))
    return area / (history[-1]["step"] - history[0]["step"])


def mean_std(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.3f} ± {spread:.3f}"


def summarise(runs: list[dict], settings: Settings) -> dict:
    cells = {}
    for run in runs:
        cell = cells.setdefault((run["method"], run["order"]), {})
        final = run["history"][-1]
        for name, value in (("sampled_final", final["sampled"]), ("greedy_final", final["greedy"]),
                            ("sampled_auc", auc(run["history"], "sampled")),
                            ("greedy_auc", auc(run["history"], "greedy")),
                            ("prompts_per_step", run["prompts_per_step"]), ("seconds", run["seconds"])):
            cell.setdefault(name, {})[run["seed"]] = value
    return cells


METRICS = ("sampled_final", "sampled_auc", "greedy_final", "greedy_auc")


def report(runs: list[dict], settings: Settings, command: str) -> str:
    cells = summarise(runs, settings)
    total_minutes = sum(run["seconds"] for run in runs) / 60
    base = runs[0]["history"][0] if runs else {}
    lines = [
        "# Whole groups per optimizer step vs TRL's row shuffle (offline addition testbed, off-policy)",
        "",
        f"Generated by `{command}`: {len(runs)} runs, {total_minutes:.1f} min of training and evaluation "
        "(wall-clock of single-threaded runs at nice on a shared CPU, so mostly waiting; plus pretraining the base "
        "model once, cached in the work directory). Sized to fit well under 25 minutes of one core: "
        f"{settings.steps} optimizer steps of {settings.prompts_per_step} prompts × {settings.num_generations} "
        f"completions, {settings.steps_per_generation} optimizer steps per generation batch (so "
        f"{settings.steps // settings.steps_per_generation} generation batches per run), RL seeds {settings.seeds}, "
        f"held-out accuracy on {settings.num_eval_problems} problems every {settings.eval_every} steps (*sampled*: "
        f"temperature 1, {settings.eval_samples_per_prompt} samples each; *greedy*). Base model at step 0: sampled "
        f"{base.get('sampled', float('nan')):.3f}, greedy {base.get('greedy', float('nan')):.3f}. Learning rates "
        f"(AdamW, constant): {LEARNING_RATES}, the learning study's off-policy selections. AUC = mean accuracy "
        "over the evaluation points (trapezoid). Mean ± std over seeds.",
        "",
        "*prompts / step*: distinct prompts whose completions one optimizer step trains (the step trains "
        f"{settings.prompts_per_step * settings.num_generations} completions).",
        "",
        "| method | order | sampled @final | sampled AUC | greedy @final | greedy AUC | prompts / step |",
        "|---|---|---|---|---|---|---|",
    ]
    for method in settings.methods:
        for order in ORDERS:
            cell = cells.get((method, order))
            if not cell:
                continue
            values = [mean_std(list(cell[name].values())) for name in (*METRICS, "prompts_per_step")]
            lines.append(f"| {METHOD_LABELS[method]} | {ORDER_LABELS[order]} | " + " | ".join(values) + " |")
    lines += ["", "Paired by seed: keep_groups_together − TRL row shuffle (mean ± std of the difference, seeds where "
              "it is > 0):", "", "| method | " + " | ".join(METRICS) + " |", "|---|" + "---|" * len(METRICS)]
    for method in settings.methods:
        rows, groups = cells.get((method, "rows")), cells.get((method, "groups"))
        if not rows or not groups:
            continue
        entries = []
        for name in METRICS:
            seeds = sorted(set(rows[name]) & set(groups[name]))
            differences = [groups[name][s] - rows[name][s] for s in seeds]
            entries.append(f"{mean_std(differences)} ({sum(d > 0 for d in differences)}/{len(differences)})")
        lines.append(f"| {METHOD_LABELS[method]} | " + " | ".join(entries) + " |")
    return "\n".join(lines) + "\n"


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = Settings()
    parser.add_argument("--seeds", type=int, nargs="+", help=f"RL seeds (default {defaults.seeds})")
    parser.add_argument("--methods", nargs="+", choices=METHODS, help="default: all")
    parser.add_argument("--steps", type=int, help=f"optimizer steps per run (default {defaults.steps})")
    parser.add_argument("--eval-every", type=int, help=f"default {defaults.eval_every}")
    parser.add_argument("--quick", action="store_true", help="a tiny smoke run of every code path")
    parser.add_argument("--work-dir", type=Path, default=Path("outputs/group_batches"),
                        help="cached base model and finished runs (runs.jsonl)")
    parser.add_argument("--output-dir", type=Path, default=Path("benchmarks/results"))
    cli = parser.parse_args(argv)
    values = dict(QUICK) if cli.quick else {}
    for name in ("seeds", "methods", "steps", "eval_every"):
        if getattr(cli, name) is not None:
            values[name] = getattr(cli, name)
    return cli, Settings(**values)


def main(argv=None) -> str:
    argv = sys.argv[1:] if argv is None else argv
    cli, settings = parse_args(argv)
    torch.set_num_threads(1)
    cli.work_dir.mkdir(parents=True, exist_ok=True)
    store = cli.work_dir / "runs.jsonl"
    key = json.dumps(asdict(settings) | {"seeds": None, "methods": None}, sort_keys=True)
    done = {}
    if store.exists():
        for line in store.read_text().splitlines():
            record = json.loads(line)
            if record["key"] == key:
                done[(record["method"], record["order"], record["seed"])] = record
    for seed in settings.seeds:  # seed by seed, so a stopped study has whole seeds first
        for method in settings.methods:
            for order in ORDERS:
                if (method, order, seed) in done:
                    continue
                run = run_one(settings, method, order, seed, cli.work_dir) | {"key": key}
                done[(method, order, seed)] = run
                with store.open("a") as handle:
                    handle.write(json.dumps(run) + "\n")
                print(f"{method:8s} {order:6s} seed {seed}: sampled {run['history'][-1]['sampled']:.3f} "
                      f"greedy {run['history'][-1]['greedy']:.3f} ({run['seconds']:.0f} s)", flush=True)
    runs = [done[(m, o, s)] for s in settings.seeds for m in settings.methods for o in ORDERS if (m, o, s) in done]
    command = "python benchmarks/group_batches.py " + " ".join(argv)
    text = report(runs, settings, command.strip())
    cli.output_dir.mkdir(parents=True, exist_ok=True)
    (cli.output_dir / "group_batches.md").write_text(text)
    saved = {"settings": asdict(settings), "learning_rates": LEARNING_RATES,
             "runs": [{k: v for k, v in run.items() if k != "key"} for run in runs]}
    (cli.output_dir / "group_batches.json").write_text(json.dumps(saved, indent=1))
    print(text)
    return text


if __name__ == "__main__":
    main()
