"""The GPU checks: `pytest -m gpu tests/gpu` on a CUDA machine.

Without CUDA every test here skips with its reason. `TRL_NFT_GPU_TESTS_ON_CPU=1` runs the same tests on the CPU
(bf16 autocast where the CPU supports it), skipping only what needs CUDA, so that the checks are rehearsed before
GPU time is spent on them.
"""

from __future__ import annotations

import os

import pytest
import torch

RUN_ON_CPU_VARIABLE = "TRL_NFT_GPU_TESTS_ON_CPU"


def rehearsing_on_cpu() -> bool:
    return os.environ.get(RUN_ON_CPU_VARIABLE) == "1"


@pytest.fixture(scope="session")
def device() -> torch.device:
    """CUDA when present; the CPU when rehearsing; otherwise the test skips."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if rehearsing_on_cpu():
        return torch.device("cpu")
    pytest.skip(f"no CUDA device (set {RUN_ON_CPU_VARIABLE}=1 to rehearse the GPU checks on the CPU)")


def require_cuda(device: torch.device, what: str) -> None:
    """Skip the CUDA-only part of a check when rehearsing on the CPU."""
    if device.type != "cuda":
        pytest.skip(f"{what} needs CUDA (CPU rehearsal)")


# A random-init Qwen2-style model over the real Qwen2.5 vocabulary: big enough for the LM head to dominate, as at
# scale (151,665 × 64), small enough for a step to take seconds on a CPU.
TINY_QWEN = dict(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128)


@pytest.fixture(scope="session")
def qwen_model(qwen_tokenizer):
    from trl_nft.testing.tiny_models import build_tiny_qwen2

    return build_tiny_qwen2(qwen_tokenizer, **TINY_QWEN)


def gpu_args(config_cls, tmp_path, device: torch.device, **overrides):
    """The shared fast test settings, on `device`, with bf16 autocast (fp32 master weights, as the recipes train)."""
    from tests.conftest import tiny_args

    return tiny_args(config_cls, tmp_path, use_cpu=device.type != "cuda", bf16=True, **overrides)
