"""Mutation score of the core: mutate one module at a time with mutmut and run only that module's targeted tests.

    python benchmarks/mutation.py                    # every module below, one after the other
    python benchmarks/mutation.py loss labels        # some of them
    python benchmarks/mutation.py --list             # the modules, their mutated code and their tests

Each module runs in its own scratch copy of the repository (mutmut writes its mutated tree under ``mutants/`` of the
directory it runs in), niced, one test process at a time. The score per module is printed and written, with the
surviving mutants' diffs, to ``benchmarks/results/mutation_raw/<module>.json``; the reviewed
summary (survivors killed by a new test or explained as equivalent) is ``benchmarks/results/mutation.md``.
Needs ``pip install -e ".[mutation]"``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
RAW_RESULTS = REPO_ROOT / "benchmarks" / "results" / "mutation_raw"
# mutmut names a method's mutants `<module>.xǁ<Class>ǁ<method>__mutmut_<n>`.
METHOD_SEPARATOR = "\u01c1"


@dataclass(frozen=True)
class Target:
    """One mutated module: the file, optionally only some of its functions, and the tests that should kill them."""

    source: str
    tests: tuple[str, ...]
    functions: tuple[str, ...] = field(default=())  # mutmut name globs; empty = every function of the file


def method(module: str, cls: str, name: str) -> str:
    return f"{module}.x{METHOD_SEPARATOR}{cls}{METHOD_SEPARATOR}{name}__mutmut_*"


TARGETS = {
    "loss": Target("trl_nft/loss.py", ("tests/test_loss.py", "tests/test_trainer_loss_assembly.py")),
    "labels": Target("trl_nft/labels.py", ("tests/test_labels.py",)),
    "config": Target(
        "trl_nft/config.py",
        ("tests/test_config.py", "tests/test_trainer.py::test_invalid_config_names_field_and_value",
         "tests/test_trainer.py::test_ignored_grpo_options_warn",
         "tests/test_trainer.py::test_defaults_are_the_papers"),
        (method("trl_nft.config", "NFTConfig", "_validate_nft_options"),
         method("trl_nft.config", "NFTConfig", "_warn_ignored_grpo_options")),
    ),
    "trainer_loss": Target(
        "trl_nft/trainer.py",
        ("tests/test_trainer_loss_assembly.py",),
        tuple(method("trl_nft.trainer", "NFTTrainer", name)
              for name in ("_compute_loss", "_accumulation_divisor", "_aggregate", "_log_metrics")),
    ),
    "dynamic_sampling_rows": Target("trl_nft/dynamic_sampling/rows.py", ("tests/dynamic_sampling/test_rows.py",)),
    "dynamic_sampling_round_sizing": Target(
        "trl_nft/dynamic_sampling/round_sizing.py", ("tests/dynamic_sampling/test_round_sizing.py",),
    ),
    "evaluate_scoring": Target(
        "trl_nft/math_recipe/evaluate.py",
        ("tests/math_recipe/test_evaluate.py",),
        ("trl_nft.math_recipe.evaluate.x_evaluate_benchmarks__mutmut_*",),
    ),
}


def scratch_copy(destination: Path) -> None:
    """The tracked files of the working tree (with uncommitted edits), without caches or virtual environments."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO_ROOT, check=True,
                            capture_output=True, text=True).stdout.splitlines()
    for relative in listed:
        source = REPO_ROOT / relative
        if source.is_file():
            target = destination / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def mutmut_section(target: Target) -> str:
    tests = "\n    ".join(target.tests)
    return (
        "\n[mutmut]\n"
        "source_paths =\n    trl_nft\n"
        f"only_mutate =\n    {target.source}\n"
        f"pytest_add_cli_args_test_selection =\n    {tests}\n"
        "pytest_add_cli_args =\n    -p\n    no:cacheprovider\n    -x\n    -q\n"
        "use_git_change_detection = false\n"
    )


def run_target(name: str, target: Target, max_children: int, niceness: int) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"mutation-{name}-") as scratch:
        work = Path(scratch)
        scratch_copy(work)
        with (work / "setup.cfg").open("a") as handle:
            handle.write(mutmut_section(target))
        # Offline: a mutant that reaches for the hub fails at once instead of waiting for the network.
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH="", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
        command = ["nice", "-n", str(niceness), sys.executable, "-m", "mutmut", "run",
                   "--max-children", str(max_children), *target.functions]
        started = time.perf_counter()
        run = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        subprocess.run([sys.executable, "-m", "mutmut", "export-cicd-stats"], cwd=work, env=env, capture_output=True)
        stats_file = work / "mutants" / "mutmut-cicd-stats.json"
        if run.returncode != 0 or not stats_file.exists():
            raise RuntimeError(f"mutmut failed on {name}:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
        stats = json.loads(stats_file.read_text())
        results = subprocess.run([sys.executable, "-m", "mutmut", "results"], cwd=work, env=env,
                                 capture_output=True, text=True).stdout
        survivors = {}
        for line in results.splitlines():
            if line.strip().endswith("survived"):
                mutant = line.split(":")[0].strip()
                survivors[mutant] = subprocess.run([sys.executable, "-m", "mutmut", "show", mutant], cwd=work,
                                                   env=env, capture_output=True, text=True).stdout
    return {"module": name, "source": target.source, "tests": list(target.tests), "seconds": round(seconds),
            "stats": stats, "survivors": survivors}


def score_line(result: dict) -> str:
    stats = result["stats"]
    killed, survived, timeout = stats.get("killed", 0), stats.get("survived", 0), stats.get("timeout", 0)
    tried = killed + survived + timeout
    percent = 100.0 * (killed + timeout) / tried if tried else float("nan")
    return (f"{result['module']}: {killed} killed, {survived} survived, {timeout} timeout, "
            f"{percent:.1f}% caught, {result['seconds']} s")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", metavar="MODULE", help=f"which of {list(TARGETS)} (default: all)")
    parser.add_argument("--list", action="store_true", help="print the modules and their tests, then exit")
    parser.add_argument("--max-children", type=int, default=1, help="test processes at once (default 1)")
    parser.add_argument("--nice", type=int, default=10, help="niceness of the test processes (default 10)")
    args = parser.parse_args(argv)
    if args.list:
        for name, target in TARGETS.items():
            print(f"{name}: {target.source} {' '.join(target.functions)} <- {' '.join(target.tests)}")
        return
    unknown = [name for name in args.modules if name not in TARGETS]
    if unknown:
        parser.error(f"unknown modules {unknown}; choose from {list(TARGETS)}")
    RAW_RESULTS.mkdir(parents=True, exist_ok=True)
    for name in args.modules or list(TARGETS):
        result = run_target(name, TARGETS[name], args.max_children, args.nice)
        (RAW_RESULTS / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
        print(score_line(result), flush=True)


if __name__ == "__main__":
    main()
