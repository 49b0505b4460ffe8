"""Multi-process training launched with `torchrun` on CPU: DDP (gloo) and DeepSpeed ZeRO-3 with real partitioning."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port, import_optional
from tests.step_records import check_group_tags_are_groups, rows_per_group_and_step, steps_with_split_groups

SCRIPT = Path(__file__).parent / "scripts" / "train_tiny.py"
ZERO3_CONFIG = Path(__file__).parent / "scripts" / "zero3_cpu.json"
REPO_ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def launch(tmp_path, name, processes, *extra_args):
    """Run the tiny training script under torchrun and return rank 0's report."""
    report = tmp_path / f"{name}.json"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_port",
        str(free_port()), str(SCRIPT), "--output-dir", str(tmp_path / name), "--report",
        str(report), *extra_args,
    ]
    # the repository first, then whatever the caller had (e.g. a folder of packages installed for the GPU checks)
    python_path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=python_path)
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return json.loads(report.read_text())


def test_ddp_two_processes_matches_grpo_on_policy(tmp_path):
    """Each rank trains on its own slice of the gathered labels; a wrong slice would break the GRPO equivalence."""
    common = ["--max-steps", "1", "--extra", json.dumps({"optim": "sgd", "max_grad_norm": 0.0, "loss_type": "dr_grpo",
                                                        "lr_scheduler_type": "constant"})]
    nft = launch(tmp_path, "ddp_nft", 2, *common)
    grpo = launch(tmp_path, "ddp_grpo", 2, "--trainer", "grpo", *common[:-1],
                  json.dumps({**json.loads(common[-1]), "scale_rewards": "none"}))
    assert nft["world_size"] == 2 and nft["distributed_type"] == "DistributedType.MULTI_CPU"
    assert all(nft["changed"].values())
    assert nft["log_history"][0]["nft/degenerate_group_frac"] < 1.0
    for name, value in grpo["update_sum"].items():
        assert nft["update_sum"][name] == pytest.approx(value, rel=1e-3, abs=1e-7), name
        assert nft["update_norm2"][name] == pytest.approx(grpo["update_norm2"][name], rel=1e-3, abs=1e-12), name


@pytest.mark.parametrize("processes", [1, 2])
def test_deepspeed_zero3_partitions_and_trains(tmp_path, processes):
    import_optional("deepspeed")
    report = launch(tmp_path, f"zero3_{processes}", processes, "--deepspeed", str(ZERO3_CONFIG))
    assert report["world_size"] == processes
    assert report["distributed_type"] == "DistributedType.DEEPSPEED" and report["zero_stage"] == 3
    assert report["partitioned"], "stage3_param_persistence_threshold=0 should leave no parameter whole"
    assert all(report["changed"].values()), [n for n, c in report["changed"].items() if not c]
    assert "nft/positive_loss" in report["log_history"][0]


def check_dynamic_sampling_batches(tmp_path, name, processes, group_size=4):
    """Ranks' rows, concatenated in rank order, must form whole informative groups of equal per-rank size."""
    per_rank = [json.loads((tmp_path / f"{name}.json.rank{rank}").read_text()) for rank in range(processes)]
    generations = {len(records) for records in per_rank}
    assert len(generations) == 1 and generations.pop() >= 1
    for step_records in zip(*per_rank):
        sizes = {len(record["prompts"]) for record in step_records}
        assert len(sizes) == 1, f"ranks hold different batch sizes: {sizes}"
        prompts = [p for record in step_records for p in record["prompts"]]
        correct = [c for record in step_records for c in record["correct"]]
        rates = [r for record in step_records for r in record["correct_rate"]]
        for start in range(0, len(prompts), group_size):
            group = slice(start, start + group_size)
            assert len(set(prompts[group])) == 1, f"group split across prompts: {prompts[group]}"
            assert 0 < rates[start] < 1 and len(set(rates[group])) == 1
            assert rates[start] == pytest.approx(sum(correct[group]) / group_size)


def test_dynamic_sampling_two_processes_agree(tmp_path):
    report = launch(tmp_path, "ds_ddp", 2, "--reward", "half_degenerate", "--record-batches", "--max-steps", "2",
                    "--extra", json.dumps({"dynamic_sampling": True, "per_device_train_batch_size": 6}))
    check_dynamic_sampling_batches(tmp_path, "ds_ddp", 2)
    rounds = [e["dynamic_sampling/rounds"] for e in report["log_history"] if "dynamic_sampling/rounds" in e]
    assert rounds and all(r >= 1 for r in rounds)


def test_dynamic_sampling_with_deepspeed_zero3(tmp_path):
    import_optional("deepspeed")
    report = launch(tmp_path, "ds_zero3", 2, "--deepspeed", str(ZERO3_CONFIG), "--reward", "half_degenerate",
                    "--record-batches", "--extra", json.dumps({"dynamic_sampling": True}))
    check_dynamic_sampling_batches(tmp_path, "ds_zero3", 2)
    assert report["partitioned"] and all(report["changed"].values())


def test_dynamic_sampling_carry_over_and_adaptive_rounds_two_processes_agree(tmp_path):
    """Carried groups (π_old computed in equal shares on both ranks), adaptive and official-size rounds: the ranks
    must still hold whole, informative, equal-sized slices of one batch."""
    options = {"dynamic_sampling": True, "per_device_train_batch_size": 6, "dynamic_sampling_carry_over": True,
               "dynamic_sampling_adaptive": True, "dynamic_sampling_first_round_oversample": 3}
    report = launch(tmp_path, "ds_carry", 2, "--reward", "half_degenerate", "--record-batches", "--max-steps", "4",
                    "--extra", json.dumps(options))
    check_dynamic_sampling_batches(tmp_path, "ds_carry", 2)
    history = [e for e in report["log_history"] if "dynamic_sampling/carried_frac" in e]
    assert any(e["dynamic_sampling/carried_frac"] > 0 for e in history), history
    records = [r for rank in range(2) for r in json.loads((tmp_path / f"ds_carry.json.rank{rank}").read_text())]
    # π_old stored with a carried group (computed in shares, gathered) is the log-probs of the policy that sampled it
    stored = [d for r in records for d in r.get("stored_old_minus_now", [])]
    assert stored and max(stored) < 1e-5, stored
    # trained later, a carried row's π_old is no longer the current policy; a fresh row's still is
    trained = [d for r in records for d in r.get("old_minus_now", [])]
    assert trained and max(trained) > 1e-4 and min(trained) < 1e-5, trained


@pytest.mark.parametrize("dynamic_sampling", [False, True])
def test_keep_groups_together_two_processes(tmp_path, dynamic_sampling):
    """Every optimizer step trains whole groups, counted over both ranks; with dynamic sampling also carried ones."""
    options = {"keep_groups_together": True, "per_device_train_batch_size": 4, "gradient_accumulation_steps": 2,
               "steps_per_generation": 4, "max_completion_length": 4}
    reward, steps = "parity", 4
    if dynamic_sampling:
        options.update(dynamic_sampling=True, dynamic_sampling_carry_over=True, dynamic_sampling_adaptive=True,
                       dynamic_sampling_first_round_oversample=3)
        reward, steps = "half_degenerate", 6
    name = f"keep_groups_{dynamic_sampling}"
    report = launch(tmp_path, name, 2, "--reward", reward, "--record-steps", "--max-steps", str(steps),
                    "--extra", json.dumps(options))
    records = [r for rank in range(2) for r in json.loads((tmp_path / f"{name}.json.steps.rank{rank}").read_text())]
    check_group_tags_are_groups(records)
    per_step = rows_per_group_and_step(records)
    assert sorted(per_step) == list(range(steps))
    assert steps_with_split_groups(records, rows_per_pass=4) == {}
    assert all(sum(counts.values()) == 16 for counts in per_step.values())  # 2 ranks x 4 rows x 2 micro-batches
    if dynamic_sampling:
        history = report["log_history"]
        assert any(entry.get("dynamic_sampling/carried_frac", 0) > 0 for entry in history), history
