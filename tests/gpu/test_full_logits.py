"""No op of a bf16 training step returns a full (batch × tokens × vocabulary) tensor, and on CUDA TRL's Triton
log-prob kernels do the tiling.

TRL 1.16 needs no option for this: GRPOTrainer always patches the policy with `add_fused_lm_head`
(`trl.trainer.utils`), whose forward runs the backbone and projects only the scored positions through the LM head in
tiles of 4,096 tokens × 32,768 vocabulary entries (`trl.kernels.chunked_logprob`). Each tile is folded into online
log-sum-exp statistics by a Triton kernel where Triton runs the device (`_use_triton`: CUDA or XPU with Triton
importable), else by torch ops. `cast_lm_head_to_fp32` only changes the tiles' dtype.
"""

from __future__ import annotations

import copy

import pytest
from datasets import Dataset

from tests.gpu.conftest import gpu_args
from tests.test_trainer_real_tokenizer import LargestOpOutput
from trl_nft import NFTConfig, NFTTrainer

pytestmark = pytest.mark.gpu


class CountingFold:
    """Stands in for one of TRL's tile folds (a Triton kernel, launched as `kernel[grid](...)`, or a torch
    function) and counts its uses."""

    def __init__(self, original):
        self.original = original
        self.uses = 0

    def __getitem__(self, grid):
        self.uses += 1
        return self.original[grid]

    def __call__(self, *args, **kwargs):
        self.uses += 1
        return self.original(*args, **kwargs)


def test_bf16_step_keeps_logits_tiled(device, qwen_model, qwen_tokenizer, tmp_path, monkeypatch):
    from trl.kernels import chunked_logprob

    triton_fold = CountingFold(chunked_logprob._forward_kernel)
    torch_fold = CountingFold(chunked_logprob._forward_tile)
    monkeypatch.setattr(chunked_logprob, "_forward_kernel", triton_fold)
    monkeypatch.setattr(chunked_logprob, "_forward_tile", torch_fold)

    batch, completion_tokens = 8, 32
    dataset = Dataset.from_dict({"prompt": [f"{n} plus {n} is" for n in range(8)]})
    args = gpu_args(NFTConfig, tmp_path, device, per_device_train_batch_size=batch, num_generations=4,
                    max_completion_length=completion_tokens, max_steps=1)
    trainer = NFTTrainer(model=copy.deepcopy(qwen_model), reward_funcs=lambda completions, **kw: [1.0, 0.0] * (
        len(completions) // 2), args=args, train_dataset=dataset, processing_class=qwen_tokenizer)
    with LargestOpOutput() as tracker:
        trainer.train()

    prompt_tokens = min(len(qwen_tokenizer(text).input_ids) for text in dataset["prompt"])
    full_logits = batch * (prompt_tokens + completion_tokens) * len(qwen_tokenizer)
    print(f"largest op output {tracker.largest:,} elements; full logits {full_logits:,}; "
          f"tile folds: Triton {triton_fold.uses}, torch {torch_fold.uses}")
    assert tracker.largest < full_logits / 2, (tracker.largest, full_logits)
    assert tracker.largest >= batch * completion_tokens * 1024, "the LM head's tiles must have been seen"
    if device.type == "cuda":
        assert chunked_logprob._use_triton(device), "Triton is not importable: TRL folds the tiles in torch ops"
        assert triton_fold.uses > 0 and torch_fold.uses == 0, (triton_fold.uses, torch_fold.uses)
    else:
        assert torch_fold.uses > 0
