"""DeepSpeed ZeRO-3 on one device, launched by torchrun as a user would: bf16, parameters partitioned, one step.

On CUDA the run uses the GPU (`use_cpu` off); the CPU rehearsal runs DeepSpeed's CPU accelerator.
"""

from __future__ import annotations

import json

import pytest

from tests.test_distributed import ZERO3_CONFIG, launch

pytestmark = pytest.mark.gpu


def test_zero3_one_device_partitions_and_trains(device, tmp_path):
    pytest.importorskip("deepspeed")
    extra = {"use_cpu": device.type != "cuda", "max_completion_length": 8}
    # ZERO3_CONFIG holds no device settings: ZeRO-3 without offload, bf16 "auto" (on, from the trainer's bf16)
    report = launch(tmp_path, "zero3", 1, "--deepspeed", str(ZERO3_CONFIG), "--tokenizer", "qwen2.5",
                    "--max-steps", "1", "--extra", json.dumps(extra))
    assert report["world_size"] == 1 and report["zero_stage"] == 3
    assert report["distributed_type"] == "DistributedType.DEEPSPEED"
    assert report["partitioned"], "stage3_param_persistence_threshold=0 should leave no parameter whole"
    assert all(report["changed"].values()), [name for name, changed in report["changed"].items() if not changed]
    assert "nft/positive_loss" in report["log_history"][0]
