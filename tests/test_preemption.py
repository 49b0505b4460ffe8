"""SIGKILL inside a checkpoint save and inside a generation batch, requeue with `--resume-from auto`: same weights.

A representative subset of benchmarks/preemption.py's matrix (which also runs 2 processes, with and without
ZeRO-3): one process, the kill after the model weights of checkpoint-4 (transformers alone would then pick the
partial folder and fail on its missing trainer state; with `save_total_limit=1` checkpoint-2 must also survive), and
one inside the second generation batch. Five launches of tests/scripts/train_tiny.py, about 1-2 minutes.
"""

from __future__ import annotations

import pytest

from tests.benchmarks.test_benchmarks import load_script

CASES = (("model", 2), ("generation", 2))


@pytest.mark.slow
def test_killed_runs_resume_with_auto_to_the_uninterrupted_weights(tmp_path):
    preemption = load_script("benchmarks/preemption.py")
    outcomes = preemption.run_matrix(preemption.Launch(1), tmp_path, cases=CASES, log=lambda line: None)
    by_point = {outcome.point: outcome for outcome in outcomes}
    assert by_point["model"].checkpoints_left == ["checkpoint-2", "checkpoint-4"]  # the partial one, and its fallback
    assert by_point["model"].resumed_from == "checkpoint-2"
    assert by_point["generation"].resumed_from == "checkpoint-4"
    for outcome in outcomes:
        assert outcome.survived, outcome
        assert outcome.difference <= preemption.TOLERANCE
    table = preemption.report({"1 process": outcomes})
    assert "**2 of 2 kill points survived.**" in table and "| 1 process | `model` | 2 |" in table
