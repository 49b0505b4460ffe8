"""Kill a tiny training run with SIGKILL at many points, requeue it with `--resume-from auto`, compare the weights.

Each case launches `tests/scripts/train_tiny.py` (plain python for 1 process, torchrun for 2, optionally DeepSpeed
ZeRO-3 on CPU) with `TRL_NFT_TEST_KILL=<point>:<occurrence>`, which SIGKILLs every process reaching that point:
inside a generation batch, around the optimizer step, and between the files of a checkpoint save. The killed run's
output folder is then resumed with `auto` (the newest complete checkpoint, or a fresh start), and the resumed run
must end with the uninterrupted run's weights (max abs difference ≤ 1e-6, as tests/test_generation_state.py).

The run: 6 optimizer steps, a checkpoint every 2 (occurrence 1, 2, 3 of a save point = checkpoint-2, -4, -6),
`steps_per_generation=4` and dynamic sampling with refills (generation batches at steps 1 and 5), so kills land
inside a generation batch and resumes depend on NFT's generation state.

    nice python benchmarks/preemption.py --jobs 3   # the whole matrix, writes benchmarks/results/preemption.md
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "tests" / "scripts" / "train_tiny.py"
ZERO3_CONFIG = REPO_ROOT / "tests" / "scripts" / "zero3_cpu.json"
SETTINGS = {"dynamic_sampling": True, "steps_per_generation": 4, "save_total_limit": 1}
MAX_STEPS, SAVE_STEPS = 6, 2
TOLERANCE = 1e-6  # max abs weight difference, resumed vs uninterrupted

SAVE_POINTS = ("saving_marked", "generation_state", "model", "optimizer", "rng", "trainer_state", "complete")
# (point, occurrence): the whole matrix for one launch setup
MATRIX = (
    [("generation", 1), ("generation", 2), ("before_optimizer_step", 3), ("optimizer_step", 3),
     ("optimizer_step", 5)]
    + [(point, 2) for point in SAVE_POINTS]  # inside checkpoint-4, with checkpoint-2 complete
    + [("model", 1), ("trainer_state", 1), ("rng", 3)]  # inside the first (none complete yet) and the last save
)
# With 2 processes (each about 3× as slow on CPU): one point of each kind, and the saves where ranks differ most
# (ZeRO-3 optimizer shards are written by every rank; the trainer state by rank 0 only, before the barrier).
MULTI_PROCESS_MATRIX = (("generation", 2), ("optimizer_step", 3), ("optimizer", 2), ("trainer_state", 2),
                        ("model", 1))


@dataclass(frozen=True)
class Launch:
    """How the tiny run is started."""

    processes: int = 1
    zero3: bool = False

    @property
    def name(self) -> str:
        return f"{self.processes} process{'es' if self.processes > 1 else ''}" + (", ZeRO-3" if self.zero3 else "")


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def train(launch: Launch, folder: Path, name: str, kill: str | None = None, resume: str | None = None,
          timeout: float = 900) -> subprocess.CompletedProcess:
    """One run of train_tiny.py writing into `folder / "run"`; rank 0 leaves `folder / f"{name}.pt"` (weights)."""
    command = [sys.executable]
    if launch.processes > 1:
        command += ["-m", "torch.distributed.run", "--nproc_per_node", str(launch.processes),
                    "--master_port", str(free_port())]
    command += [str(SCRIPT), "--output-dir", str(folder / "run"), "--report", str(folder / f"{name}.json"),
                "--reward", "half_degenerate", "--max-steps", str(MAX_STEPS), "--save-steps", str(SAVE_STEPS),
                "--final-weights", str(folder / f"{name}.pt"), "--extra", json.dumps(SETTINGS)]
    if launch.zero3:
        command += ["--deepspeed", str(ZERO3_CONFIG)]
    if resume:
        command += ["--resume-from", resume]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT))
    env.pop("TRL_NFT_TEST_KILL", None)
    if kill:
        env["TRL_NFT_TEST_KILL"] = kill
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)


def max_weight_difference(first_path: Path, second_path: Path) -> float:
    import torch

    first, second = torch.load(first_path), torch.load(second_path)
    return max((first[name] - second[name]).abs().max().item() for name in first)


@dataclass
class Outcome:
    point: str
    occurrence: int
    killed: bool  # the kill run did die (returncode != 0) without finishing
    checkpoints_left: list[str]
    resumed_from: str  # what `auto` chose, as logged
    resumed: bool
    difference: float | None
    seconds: float

    @property
    def survived(self) -> bool:
        return self.killed and self.resumed and self.difference is not None and self.difference <= TOLERANCE


def _resumed_from(log: str) -> str:
    for line in log.splitlines():
        if "resume_from_checkpoint='auto'" in line:
            if "starting a fresh run" in line:
                return "fresh start"
            return Path(line.rsplit("resuming from ", 1)[-1].rstrip(". ")).name
    return "?"


def reference(launch: Launch, folder: Path) -> Path:
    """The uninterrupted run's weights."""
    result = train(launch, folder, "full")
    if result.returncode != 0:
        raise RuntimeError(f"uninterrupted run failed ({launch.name}):\n{result.stderr[-5000:]}")
    return folder / "full.pt"


def kill_and_resume(launch: Launch, folder: Path, point: str, occurrence: int, reference_weights: Path) -> Outcome:
    start = time.monotonic()
    killed = train(launch, folder, "killed", kill=f"{point}:{occurrence}")
    run_dir = folder / "run"
    left = sorted((p.name for p in run_dir.glob("checkpoint-*")), key=lambda n: int(n.split("-")[1])) \
        if run_dir.is_dir() else []
    resumed = train(launch, folder, "resumed", resume="auto")
    difference = None
    if resumed.returncode == 0:
        difference = max_weight_difference(reference_weights, folder / "resumed.pt")
    return Outcome(point, occurrence, killed.returncode != 0 and not (folder / "killed.pt").exists(), left,
                   _resumed_from(resumed.stderr + resumed.stdout), resumed.returncode == 0, difference,
                   time.monotonic() - start)


def run_matrix(launch: Launch, folder: Path, cases=MATRIX, log=print) -> list[Outcome]:
    folder.mkdir(parents=True, exist_ok=True)
    reference_weights = reference(launch, folder / "full")
    outcomes = []
    for point, occurrence in cases:
        outcome = kill_and_resume(launch, folder / f"{point}-{occurrence}", point, occurrence, reference_weights)
        log(f"{launch.name}: {point}:{occurrence} -> {'survived' if outcome.survived else 'FAILED'} "
            f"(left {outcome.checkpoints_left}, resumed from {outcome.resumed_from}, diff {outcome.difference}, "
            f"{outcome.seconds:.0f} s)")
        outcomes.append(outcome)
    return outcomes


def run_all(launches: list[Launch], work_dir: Path, jobs: int, on_result, only=None) -> dict[str, list[Outcome]]:
    """Every launch's matrix, `jobs` runs at a time (each case is independent; references first)."""
    from concurrent.futures import ThreadPoolExecutor

    results = {launch.name: [] for launch in launches}
    folders = {launch: work_dir / f"{launch.processes}{'z' if launch.zero3 else ''}" for launch in launches}
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        references = dict(zip(launches, pool.map(lambda launch: reference(launch, folders[launch] / "full"),
                                                 launches)))
        cases = [(launch, point, occurrence) for launch in launches
                 for point, occurrence in (MATRIX if launch.processes == 1 else MULTI_PROCESS_MATRIX)
                 if only is None or (point, occurrence) in only]

        def one(case):
            launch, point, occurrence = case
            outcome = kill_and_resume(launch, folders[launch] / f"{point}-{occurrence}", point, occurrence,
                                      references[launch])
            results[launch.name].append(outcome)
            on_result(launch, outcome, results)
            return outcome

        list(pool.map(one, cases))
    for launch in launches:  # the matrix's order, not the order the cases finished in
        order = [(point, occurrence) for (case_launch, point, occurrence) in cases if case_launch == launch]
        results[launch.name].sort(key=lambda outcome: order.index((outcome.point, outcome.occurrence)))
    return results


def report(results: dict[str, list[Outcome]]) -> str:
    tried = sum(len(outcomes) for outcomes in results.values())
    survived = sum(outcome.survived for outcomes in results.values() for outcome in outcomes)
    lines = [
        "# Preemption: SIGKILL at many points, then resume with `auto`",
        "",
        "Produced by `benchmarks/preemption.py` (CPU, tiny random-init Qwen2, 6 optimizer steps, checkpoint every 2, "
        "`save_total_limit=1`, `steps_per_generation=4`, dynamic sampling). A case survives when the killed run died, "
        f"the `auto` resume completed, and its final weights equal the uninterrupted run's (max abs difference ≤ "
        f"{TOLERANCE:g}). Occurrence N of a save point is the save of checkpoint-2N.",
        "",
        f"**{survived} of {tried} kill points survived.**",
        "",
        "| launch | kill point | occurrence | folders left | `auto` resumed from | max weight diff | survived |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, outcomes in results.items():
        for o in outcomes:
            difference = "—" if o.difference is None else f"{o.difference:.1e}"
            lines.append(f"| {name} | `{o.point}` | {o.occurrence} | {', '.join(o.checkpoints_left) or '—'} | "
                         f"{o.resumed_from} | {difference} | {'yes' if o.survived else 'NO'} |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", default="/tmp/trl_nft_preemption")
    parser.add_argument("--output", default=str(REPO_ROOT / "benchmarks" / "results" / "preemption.md"))
    parser.add_argument("--launches", default="1,2,2z", help="1: one process, 2: two (DDP), 2z: two with ZeRO-3")
    parser.add_argument("--jobs", type=int, default=1, help="cases run at the same time")
    parser.add_argument("--cases", default=None, help="only these cases, e.g. optimizer:2,trainer_state:2")
    cli = parser.parse_args()
    known = {"1": Launch(1), "2": Launch(2), "2z": Launch(2, zero3=True)}
    launches = [known[key] for key in cli.launches.split(",")]

    def on_result(launch, outcome, results):
        print(f"{launch.name}: {outcome.point}:{outcome.occurrence} -> "
              f"{'survived' if outcome.survived else 'FAILED'} (left {outcome.checkpoints_left}, resumed from "
              f"{outcome.resumed_from}, diff {outcome.difference}, {outcome.seconds:.0f} s)", flush=True)
        Path(cli.output).write_text(report(results), encoding="utf-8")  # partial results survive a stopped run

    only = None
    if cli.cases:
        only = {(point, int(occurrence))
                for point, _, occurrence in (case.partition(":") for case in cli.cases.split(","))}
    results = run_all(launches, Path(cli.work_dir), cli.jobs, on_result, only)
    Path(cli.output).write_text(report(results), encoding="utf-8")
    print(report(results))


if __name__ == "__main__":
    main()
