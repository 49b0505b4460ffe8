"""Killed with SIGKILL inside a generation batch, resumed from the last checkpoint: nothing is lost.

The runs use `steps_per_generation=4` (one generation batch feeds optimizer steps 1-4 and 5-8), checkpoints every
2 steps and dynamic sampling with refills; the kill comes at the end of step 3, after checkpoint-2 and before
checkpoint-4. The resumed run must end with the uninterrupted run's weights (≤ 1e-6) and log the same metrics.
The end-to-end tests launch fresh processes (a kill must not take pytest down): about 1-2 minutes each on 2 cores.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO_ROOT, free_port
from trl_nft import generation_state

SCRIPT = REPO_ROOT / "tests" / "scripts" / "train_tiny.py"
TIMING_KEYS = {"step_time", "train_runtime", "train_samples_per_second", "train_steps_per_second", "train_loss"}
SETTINGS = {"dynamic_sampling": True, "steps_per_generation": 4}
MAX_STEPS, KILL_AT = 6, 3


def train(tmp_path, name, processes, *extra):
    """Run tests/scripts/train_tiny.py (plain python for 1 process, torchrun for more); returns the process."""
    launcher = [sys.executable]
    if processes > 1:
        launcher += ["-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_port",
                     str(free_port())]
    command = [*launcher, str(SCRIPT), "--output-dir", str(tmp_path / "run"),
               "--report", str(tmp_path / f"{name}.json"), "--reward", "half_degenerate", "--max-steps", str(MAX_STEPS), "--save-steps", "2",
               "--final-weights", str(tmp_path / f"{name}.pt"), "--extra", json.dumps(SETTINGS), *extra]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT))
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)


def finished(tmp_path, name, processes, *extra):
    result = train(tmp_path, name, processes, *extra)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    report = json.loads((tmp_path / f"{name}.json").read_text())
    logged = {entry["step"]: {key: value for key, value in entry.items() if key not in TIMING_KEYS}
              for entry in report["log_history"] if "loss" in entry}
    return torch.load(tmp_path / f"{name}.pt"), logged, result


def max_weight_difference(first: dict, second: dict) -> float:
    return max((first[name] - second[name]).abs().max().item() for name in first)


def kill_and_resume(tmp_path, processes):
    """Uninterrupted run, killed run, resumed run; returns (full, resumed) weights and metrics, and the checkpoint."""
    full_weights, full_logs, _ = finished(tmp_path / "full", "full", processes)
    killed = train(tmp_path / "killed", "killed", processes, "--kill-at-step", str(KILL_AT))
    assert killed.returncode != 0, "the run was meant to be killed"
    checkpoints = sorted(p.name for p in (tmp_path / "killed" / "run").iterdir() if p.name.startswith("checkpoint-"))
    assert checkpoints == ["checkpoint-2"], checkpoints  # killed between two checkpoints
    checkpoint = tmp_path / "killed" / "run" / "checkpoint-2"
    assert sorted(p.name for p in checkpoint.glob("nft_generation_state_rank*.pt")) == [
        f"nft_generation_state_rank{rank}.pt" for rank in range(processes)
    ]
    resumed_weights, resumed_logs, _ = finished(tmp_path / "killed", "resumed", processes,
                                                "--resume-from", str(checkpoint))
    assert sorted(resumed_logs) == list(range(1, MAX_STEPS + 1))
    assert any(full_logs[step]["dynamic_sampling/rounds"] > 1 for step in full_logs
               if "dynamic_sampling/rounds" in full_logs[step])  # refills happened
    return (full_weights, full_logs), (resumed_weights, resumed_logs), checkpoint


def assert_same_run(full, resumed):
    (full_weights, full_logs), (resumed_weights, resumed_logs) = full, resumed
    assert max_weight_difference(full_weights, resumed_weights) <= 1e-6
    for step in range(KILL_AT, MAX_STEPS + 1):
        assert resumed_logs[step] == pytest.approx(full_logs[step], rel=1e-6, abs=1e-7), step


@pytest.mark.slow
def test_killed_single_process_run_resumes_to_the_same_weights_and_metrics(tmp_path):
    full, resumed, checkpoint = kill_and_resume(tmp_path, processes=1)
    assert_same_run(full, resumed)
    # Negative control: the same checkpoint without the generation state regenerates steps 3-4's batch.
    bare = tmp_path / "bare" / "checkpoint-2"
    shutil.copytree(checkpoint, bare)
    for path in bare.glob("nft_generation_state_rank*.pt"):
        path.unlink()
    (tmp_path / "bare" / "run").mkdir()
    bare_weights, _, result = finished(tmp_path / "bare", "bare", 1, "--resume-from", str(bare))
    assert "has no NFT generation state" in result.stderr
    assert max_weight_difference(full[0], bare_weights) > 1e-4


@pytest.mark.slow
def test_killed_two_process_run_resumes_to_the_same_weights_and_metrics(tmp_path):
    full, resumed, _ = kill_and_resume(tmp_path, processes=2)
    assert_same_run(full, resumed)


# ------------------------------------------------------------------------------------------- the state file
def test_state_round_trips_and_refuses_another_world_size(tmp_path):
    buffered = [{"completion_ids": torch.arange(6).view(2, 3), "num_items_in_batch": torch.tensor(5.0)}] * 2
    carry = {"generation_batch": 3, "carry": [{"rows": {"x": torch.ones(2)}, "born_step": 1}]}
    path = generation_state.save_generation_state(str(tmp_path), rank=1, world_size=2, step=6,
                                                  buffered_inputs=buffered, dynamic_sampling_state=carry)
    assert Path(path).name == "nft_generation_state_rank1.pt" and not list(tmp_path.glob("*.tmp"))
    loaded = generation_state.load_generation_state(str(tmp_path), rank=1, world_size=2, device="cpu")
    assert loaded["step"] == 6 and loaded["dynamic_sampling_state"]["generation_batch"] == 3
    assert torch.equal(loaded["buffered_inputs"][1]["completion_ids"], buffered[1]["completion_ids"])
    assert generation_state.load_generation_state(str(tmp_path), rank=0, world_size=2, device="cpu") is None
    with pytest.raises(ValueError, match="written by 2 processes, this run has 4"):
        generation_state.load_generation_state(str(tmp_path), rank=1, world_size=4, device="cpu")
