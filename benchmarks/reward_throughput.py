"""Compare `trl_nft.rewards.math_accuracy_reward` with TRL's `trl.rewards.accuracy_reward`.

Measures, on this machine:

- gold self-match: each of the 1,546 math_eval golds wrapped in ``\\boxed{}`` scored against itself;
- throughput (completions/s) on those 1,546 completions;
- GSM8K agreement with the human ``is_correct`` labels of example_model_solutions.jsonl (4 x 1,319 solutions);
- wall time on the 48 hostile completions of tests/test_rewards.py (TRL's run in a subprocess, stopped at a limit).

Usage: ``python benchmarks/reward_throughput.py [--trl-hostile-limit 180] [--output benchmarks/results/...md]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.test_rewards import GSM8K_MODELS, hostile_completions  # noqa: E402
from trl_nft.rewards import MathAccuracyReward  # noqa: E402

SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def math_eval_golds() -> list[str]:
    """All gold answers of the six math_eval benchmarks."""
    golds = []
    for path in sorted((SHARED_DATA / "math_eval").glob("*.jsonl")):
        golds += [json.loads(line)["answer"] for line in path.read_text().splitlines() if line.strip()]
    return golds


def gsm8k_cases() -> tuple[list[str], list[str], list[bool]]:
    """(solutions, ground truths, human labels) for all four models of example_model_solutions.jsonl."""
    path = SHARED_DATA / "gsm8k" / "example_model_solutions.jsonl"
    completions, golds, labels = [], [], []
    for line in path.read_text().splitlines():
        row = json.loads(line)
        for model in GSM8K_MODELS:
            completions.append(row[model]["solution"])
            golds.append(row["ground_truth"])
            labels.append(row[model]["is_correct"])
    return completions, golds, labels


def trl_accuracy_reward(completions: list[str], golds: list[str]) -> list[float | None]:
    """TRL's reward with its expected conversational input and `solution` column."""
    from trl.rewards import accuracy_reward

    return accuracy_reward([[{"role": "assistant", "content": c}] for c in completions], golds)


def timed(function, *args) -> tuple[list, float]:
    """Result and wall seconds of one call."""
    started = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - started


def trl_hostile_seconds(limit_s: float) -> str:
    """Wall time of TRL's accuracy_reward on the hostile batch, run in a subprocess stopped after ``limit_s``."""
    script = (
        "import sys, time; sys.path.insert(0, sys.argv[1])\n"
        "from tests.test_rewards import hostile_completions\n"
        "from trl.rewards import accuracy_reward\n"
        "items = hostile_completions(); started = time.perf_counter()\n"
        "accuracy_reward([[{'content': c}] for c in items], ['5'] * len(items))\n"
        "print(time.perf_counter() - started)\n"
    )
    started = time.perf_counter()
    try:
        done = subprocess.run(
            [sys.executable, "-c", script, str(REPO_ROOT)], capture_output=True, text=True, timeout=limit_s
        )
    except subprocess.TimeoutExpired:
        return f"stopped after {time.perf_counter() - started:.0f} s (no result)"
    if done.returncode != 0:
        return f"crashed (exit {done.returncode}) after {time.perf_counter() - started:.1f} s"
    return f"{float(done.stdout.strip().splitlines()[-1]):.1f} s"


def main() -> None:
    """Run every measurement and print/write the Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trl-hostile-limit", type=float, default=180.0, help="seconds before TRL's run is stopped")
    parser.add_argument("--output", default=str(REPO_ROOT / "benchmarks" / "results" / "reward_throughput.md"))
    args = parser.parse_args()

    ours = MathAccuracyReward()
    ours(completions=[r"\boxed{1}"] * ours.num_workers, answer=["1"] * ours.num_workers)  # start the workers

    golds = math_eval_golds()
    boxed = [f"The answer is \\boxed{{{gold}}}." for gold in golds]
    ours_self, ours_self_s = timed(lambda: ours(completions=boxed, answer=golds))
    trl_bare = trl_accuracy_reward(boxed, golds)  # TRL parses a bare gold like `\sqrt{2}` only inside $...$
    trl_self, trl_self_s = timed(trl_accuracy_reward, boxed, [f"${gold}$" for gold in golds])

    completions, gsm_golds, labels = gsm8k_cases()
    gsm_scorer = MathAccuracyReward(answer_format="gsm8k")
    gsm_scores = gsm_scorer(completions=completions, answer=gsm_golds)
    gsm_scorer.close()
    trl_gsm = trl_accuracy_reward(completions, gsm_golds)

    def agreement(scores):
        return 100.0 * sum((s == 1.0) == label for s, label in zip(scores, labels)) / len(labels)

    hostile = hostile_completions()
    _, ours_hostile_s = timed(lambda: ours(completions=hostile, answer=["5"] * len(hostile)))
    trl_hostile = trl_hostile_seconds(args.trl_hostile_limit)
    ours.close()

    n = len(golds)
    rows = [
        ("Gold self-match (1,546 math_eval golds in `\\boxed{}`)",
         f"{sum(s == 1.0 for s in ours_self)} / {n}",
         f"{sum(s == 1.0 for s in trl_self)} / {n} with golds given as `$gold$`; "
         f"{sum(s == 1.0 for s in trl_bare)} / {n} with bare golds ({sum(s is None for s in trl_bare)} → None)"),
        ("Throughput on those 1,546 completions (TRL: `$gold$` run)",
         f"{n / ours_self_s:.0f} completions/s ({ours_self_s:.1f} s)",
         f"{n / trl_self_s:.0f} completions/s ({trl_self_s:.1f} s)"),
        ("GSM8K agreement with human `is_correct` (5,276 solutions)",
         f"{agreement(gsm_scores):.2f} % (`answer_format=\"gsm8k\"`)", f"{agreement(trl_gsm):.2f} %"),
        ("48 hostile completions, wall time", f"{ours_hostile_s:.1f} s", trl_hostile),
    ]  # fmt: skip
    lines = [
        "| Measurement | trl_nft `math_accuracy_reward` | TRL `accuracy_reward` |",
        "|---|---|---|",
        *[f"| {name} | {mine} | {theirs} |" for name, mine, theirs in rows],
        "",
        f"Machine: {os.cpu_count()} CPU cores, Python {platform.python_version()}; ours used {ours.num_workers} "
        f"verifier workers and a {ours.timeout:.0f} s per-completion limit; TRL runs in the main thread with "
        "math-verify's signal timeouts.",
    ]
    table = "\n".join(lines) + "\n"
    print(table)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(table)


if __name__ == "__main__":
    main()
