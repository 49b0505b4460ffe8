"""How many of the 16 optimizer steps of one rollout step a group's 16 answers reach in the official runs' order,
against TRL's row shuffle (the figures of the "Mini-batch composition" row in docs/paper_recipes.md).

The official order (NVlabs/NFT on verl 01ef718): `balance_batch` splits the 8192 rows of a rollout step into one
length-balanced, index-sorted partition per GPU (`ray_nft_trainer.py:875-886`, verl `seqlen_balancing.py:170-183`);
GPU i receives partition i; with Ulysses sequence parallelism a data-parallel group all-gathers its GPUs' partitions
in rank order (verl `fsdp_ulysses.py:57-67`); each data-parallel rank cuts its rows in order into mini-batches of
512 / (data-parallel ranks) rows (`fsdp_workers.py:135-136`, `dp_actor.py:266`). Sequence lengths are random: each
group draws a typical length, its answers scatter around it (the balancing only sees lengths).

Needs verl's balancing code, which is not a dependency: pass the path of `verl/utils/seqlen_balancing.py` from a verl
checkout at 01ef718 (its `tensordict` import is only needed by functions not used here).

    python benchmarks/official_minibatch_order.py --verl-balancing /path/to/verl/verl/utils/seqlen_balancing.py
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import statistics
import sys
import types
from collections import Counter

import torch

GROUPS, GROUP_SIZE, STEPS = 512, 16, 16
RUNS = {"7B": (32, 1), "32B": (128, 8)}  # (GPUs, Ulysses sequence-parallel size): README, train_*.sh sp_size


def load_balancer(path: str):
    sys.modules.setdefault("tensordict", types.SimpleNamespace(TensorDict=None))
    spec = importlib.util.spec_from_file_location("verl_seqlen_balancing", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_seqlen_balanced_partitions


def sequence_lengths(rng: random.Random) -> list[int]:
    lengths = []
    for _ in range(GROUPS):
        typical = rng.randint(300, 3500)
        lengths += [min(4096, max(20, int(rng.gauss(typical, 400)))) + rng.randint(50, 500) for _ in range(GROUP_SIZE)]
    return lengths


def official_steps(partition, gpus: int, sp: int, seed: int) -> list[Counter]:
    """Per group: Counter(optimizer step -> answers trained there)."""
    parts = partition(sequence_lengths(random.Random(seed)), k_partitions=gpus, equal_size=True)
    data_parallel = gpus // sp
    rows_per_step = GROUPS * GROUP_SIZE // STEPS // data_parallel
    steps = [Counter() for _ in range(GROUPS)]
    for rank in range(data_parallel):
        rows = [row for part in parts[rank * sp:(rank + 1) * sp] for row in part]
        for position, row in enumerate(rows):
            steps[row // GROUP_SIZE][position // rows_per_step] += 1
    return steps


def trl_steps(processes: int, seed: int) -> list[Counter]:
    """TRL: each process shuffles its 1024 rows (64 whole groups) and cuts 16 micro-batch blocks, one per step."""
    generator = torch.Generator().manual_seed(seed)
    local_rows = GROUPS * GROUP_SIZE // processes
    steps = []
    for _ in range(processes):
        local = [Counter() for _ in range(local_rows // GROUP_SIZE)]
        for position, row in enumerate(torch.randperm(local_rows, generator=generator).tolist()):
            local[row // GROUP_SIZE][position // (local_rows // STEPS)] += 1
        steps += local
    return steps


def describe(name: str, draws: list[list[Counter]]) -> str:
    spread = [statistics.fmean(len(c) for c in groups) for groups in draws]
    whole = [statistics.fmean(max(c.values()) / GROUP_SIZE for c in groups) for groups in draws]
    return (f"{name}: steps per group {statistics.fmean(spread):.2f} (draws {[round(s, 2) for s in spread]}), "
            f"share of a group in its main step {statistics.fmean(whole):.2f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--verl-balancing", required=True, help="path of verl/utils/seqlen_balancing.py (01ef718)")
    parser.add_argument("--draws", type=int, default=3)
    cli = parser.parse_args(argv)
    partition = load_balancer(cli.verl_balancing)
    for name, (gpus, sp) in RUNS.items():
        print(describe(f"official {name}", [official_steps(partition, gpus, sp, seed) for seed in range(cli.draws)]))
    print(describe("TRL row shuffle, 8 processes", [trl_steps(8, seed) for seed in range(cli.draws)]))


if __name__ == "__main__":
    main()
