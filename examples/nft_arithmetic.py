"""Try NFT now: offline, on any CPU, in a few minutes.

A ~0.25M-parameter Qwen2-style model is pretrained on 3-digit additions whose answers come from a buggy teacher that
forgets carries, so it answers held-out problems correctly only some of the time. `NFTTrainer` then trains it with
an exact-match verifier, several optimizer steps per generation batch as in the paper, and the held-out accuracy
rises. The numbers are written to --output-dir as JSON, and the curve as a PNG when matplotlib is installed
(the `plot` extra).

    python examples/nft_arithmetic.py
"""

from __future__ import annotations

import os
import platform

os.environ.setdefault("OMP_NUM_THREADS", "1")  # a tiny model runs ~100x slower with oversubscribed threads
# The figures hinge on float rounding: torch's AVX-512, AVX2 and plain kernels send this tiny model's training down
# different paths (benchmarks/results/demo/README.md). AVX2 kernels exist on nearly every x86-64 CPU, so pin them
# (before torch is imported; set ATEN_CPU_CAPABILITY yourself to choose others).
if platform.machine().lower() in ("x86_64", "amd64"):
    os.environ.setdefault("ATEN_CPU_CAPABILITY", "avx2")

import argparse
import json
import time
import warnings
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import PrinterCallback, TrainerCallback
from transformers.utils import logging as hf_logging

from trl_nft import NFTConfig, NFTTrainer
from trl_nft.testing.arithmetic import (
    AdditionTask,
    HeldoutAccuracyCallback,
    build_testbed,
    exact_match_reward,
    rl_trainer_options,
)


class ProgressBar(TrainerCallback):
    """One tqdm bar over optimizer steps, showing the latest held-out accuracy."""

    def __init__(self):
        self.bar = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.bar = tqdm(total=state.max_steps, desc="NFT", unit="step")

    def on_step_end(self, args, state, control, **kwargs):
        self.bar.update(1)

    def on_train_end(self, args, state, control, **kwargs):
        self.bar.close()

    def show(self, record: dict) -> None:
        if self.bar is not None:
            self.bar.set_postfix(greedy=f"{record['greedy']:.2f}", sampled=f"{record['sampled']:.2f}")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", type=Path, default=Path("outputs/nft_arithmetic"))
    parser.add_argument("--seed", type=int, default=0, help="RL seed (sampling, prompt order)")
    parser.add_argument("--pretrain-seed", type=int, default=0, help="base model (init and supervised data)")
    parser.add_argument("--steps", type=int, default=192, help="NFT optimizer steps")
    parser.add_argument("--learning-rate", type=float, default=3e-4)
    parser.add_argument("--steps-per-generation", type=int, default=4, help="optimizer steps per generation batch")
    parser.add_argument("--prompts-per-step", type=int, default=8)
    parser.add_argument("--num-generations", type=int, default=8)
    parser.add_argument("--eval-every", type=int, default=16)
    parser.add_argument("--num-digits", type=int, default=3)
    parser.add_argument("--carry-bug-rate", type=float, default=0.6)
    parser.add_argument("--pretrain-steps", type=int, default=2000)
    parser.add_argument("--eval-problems", type=int, default=256)
    parser.add_argument("--tiny", action="store_true", help="a much smaller model and budget (for tests)")
    return parser.parse_args(argv)


def pretrain(args):
    """Build the testbed with a tqdm bar over the supervised steps."""
    model_size = dict(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64) if args.tiny else None
    with tqdm(total=args.pretrain_steps, desc="supervised pretraining (buggy teacher)", unit="step") as bar:

        def progress(step, loss):
            bar.update(1)
            if step % 50 == 0:
                bar.set_postfix(loss=f"{loss:.3f}")

        return build_testbed(
            AdditionTask(num_digits=args.num_digits, carry_bug_rate=args.carry_bug_rate),
            pretrain_seed=args.pretrain_seed,
            pretrain_steps=args.pretrain_steps,
            num_eval_problems=args.eval_problems,
            model_size=model_size,
            progress=progress,
        )


def numeric_environment() -> dict:
    """What decides the figures besides the seeds: the CPU kernels torch picked, threads, versions.

    The run is deterministic on one machine, but another CPU (AVX-512 vs AVX2 kernels, another BLAS) rounds floats
    differently, and RL amplifies the difference: compare figures together with this record.
    """
    import platform

    import transformers

    return {"cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(),
            "machine": platform.machine(), "torch": torch.__version__, "transformers": transformers.__version__,
            "ATEN_CPU_CAPABILITY": os.environ.get("ATEN_CPU_CAPABILITY")}


def plot(history: list[dict], path: Path, title: str) -> bool:
    """Draw the accuracy curve to `path`; False (nothing drawn) when matplotlib is not installed."""
    try:
        import matplotlib
    except ImportError:
        return False

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [record["step"] for record in history]
    figure, axis = plt.subplots(figsize=(6, 4))
    for metric in ("sampled", "greedy"):
        axis.plot(steps, [record[metric] for record in history], marker="o", markersize=3, label=metric)
    axis.set_xlabel("NFT optimizer step")
    axis.set_ylabel("held-out exact-match accuracy")
    axis.set_ylim(0, 1)
    axis.grid(alpha=0.3)
    axis.legend()
    axis.set_title(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    warnings.filterwarnings("ignore")
    hf_logging.set_verbosity_error()
    args.output_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    testbed = pretrain(args)
    pretrain_seconds = time.perf_counter() - started
    before = testbed.evaluator(testbed.model)
    print(f"held-out accuracy before NFT: greedy {before['greedy']:.3f}, sampled {before['sampled']:.3f}")
    if before["sampled"] < 0.05 and not args.tiny:
        # Forward-order addition is learned after a plateau whose length depends on the init (see build_testbed).
        print("warning: supervised pretraining stayed on its loss plateau, so RL has almost nothing to reinforce; "
              "use --pretrain-seed 0 (or 4) or more --pretrain-steps")

    config = NFTConfig(
        output_dir=str(args.output_dir / "trainer"),
        steps_per_generation=args.steps_per_generation,
        **rl_trainer_options(
            testbed.task,
            prompts_per_step=args.prompts_per_step,
            num_generations=args.num_generations,
            eval_every=args.eval_every,
            max_steps=args.steps,
            seed=args.seed,
            learning_rate=args.learning_rate,
        ),
    )
    progress = ProgressBar()
    accuracy_callback = HeldoutAccuracyCallback(testbed.evaluator, every=args.eval_every, on_record=progress.show)
    trainer = NFTTrainer(
        model=testbed.model,
        reward_funcs=exact_match_reward,
        args=config,
        train_dataset=testbed.train_dataset,
        processing_class=testbed.tokenizer,
        callbacks=[progress, accuracy_callback],
    )
    trainer.remove_callback(PrinterCallback)
    trainer.train()

    after = accuracy_callback.history[-1]
    print(f"held-out accuracy after NFT:  greedy {after['greedy']:.3f}, sampled {after['sampled']:.3f}")
    summary = {
        "before": before,
        "after": {"greedy": after["greedy"], "sampled": after["sampled"]},
        "history": accuracy_callback.history,
        "seconds": time.perf_counter() - started,
        "pretrain_seconds": pretrain_seconds,
        "environment": numeric_environment(),
    }
    # The numbers first: a missing plotting library must not lose the run.
    json_path = args.output_dir / "accuracy.json"
    json_path.write_text(json.dumps(summary, indent=1))
    environment = summary["environment"]
    print(f"CPU kernels {environment['cpu_capability']}, {environment['threads']} thread(s), torch "
          f"{environment['torch']}: figures differ by CPU kernel (benchmarks/results/demo/README.md)")
    print(f"results: {json_path} ({summary['seconds']:.0f} s in total, {pretrain_seconds:.0f} s of it pretraining)")
    figure_path = args.output_dir / "accuracy.png"
    plotted = plot(
        accuracy_callback.history,
        figure_path,
        f"NFT on {args.num_digits}-digit addition (carry-bug teacher, rate {args.carry_bug_rate}), "
        f"{args.steps_per_generation} steps per generation batch",
    )
    print(f"curve: {figure_path}" if plotted else 'no curve: matplotlib is not installed (pip install "trl-nft[plot]")')
    return summary


if __name__ == "__main__":
    main()
