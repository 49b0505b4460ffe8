"""In bf16, one on-policy NFT step still equals one Dr. GRPO step (the paper's equivalence, on the GPU's numerics).

Both trainers start from the same fp32 weights, train under bf16 autocast (as the recipes do) with plain SGD and no
clipping, so the update is the gradient times the learning rate, and must sample the same completions.

Tolerance: the two losses are different fp32 formulas for the same gradient, so their per-token gradients agree to
fp32 rounding (~1e-7); the backward then runs through bf16 matmuls (unit roundoff 2^-8 ≈ 3.9e-3), where such a tiny
difference can flip the rounding of an element by one bf16 unit. The updates may therefore differ by a few bf16
units in places, not more: a relative L2 difference of at most 2e-2 (about five units of roundoff). A real
difference in the loss is far larger: RFT (the negative term dropped) must differ by more than ten times that.
"""

from __future__ import annotations

import copy

import pytest
import torch
from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer

from tests.conftest import first_char_parity_reward
from tests.gpu.conftest import gpu_args
from trl_nft import NFTConfig, NFTTrainer

pytestmark = pytest.mark.gpu

BF16_RELATIVE_TOLERANCE = 2e-2
GROUP_SIZE = 4


def one_step_update(trainer_cls, config_cls, model, tokenizer, device, tmp_path, **overrides):
    dataset = Dataset.from_dict({"prompt": [f"{a} plus {b} is" for a in range(4) for b in range(4)]})
    start = torch.cat([p.detach().float().flatten().cpu() for p in model.parameters()])
    args = gpu_args(config_cls, tmp_path, device, loss_type="dr_grpo", per_device_train_batch_size=16,
                    num_generations=GROUP_SIZE, max_completion_length=16, max_steps=1, learning_rate=0.5,
                    **overrides)
    trainer = trainer_cls(model=model, reward_funcs=first_char_parity_reward, args=args, train_dataset=dataset,
                          processing_class=tokenizer)
    trainer.train()
    after = torch.cat([p.detach().float().flatten().cpu() for p in trainer.model.parameters()])
    rewards = trainer._logs["rewards"]["first_char_parity_reward"]
    return after - start, list(trainer._logs["completion"]), list(rewards)


def test_bf16_nft_step_equals_dr_grpo_on_policy(device, qwen_model, qwen_tokenizer, tmp_path):
    run = dict(tokenizer=qwen_tokenizer, device=device)
    nft, nft_completions, rewards = one_step_update(
        NFTTrainer, NFTConfig, copy.deepcopy(qwen_model), tmp_path=tmp_path / "nft", prompt_weighting="dr_grpo", **run)
    grpo, grpo_completions, _ = one_step_update(
        GRPOTrainer, GRPOConfig, copy.deepcopy(qwen_model), tmp_path=tmp_path / "grpo", scale_rewards="none", **run)
    rft, _, _ = one_step_update(
        NFTTrainer, NFTConfig, copy.deepcopy(qwen_model), tmp_path=tmp_path / "rft", prompt_weighting="dr_grpo",
        neg_weight=0.0, **run)

    assert nft_completions == grpo_completions, "both trainers must sample the same completions"
    groups = [rewards[i : i + GROUP_SIZE] for i in range(0, len(rewards), GROUP_SIZE)]
    assert sum(0 < sum(group) < GROUP_SIZE for group in groups) >= 2, "the test needs groups with mixed answers"
    assert grpo.norm() > 0
    difference = ((nft - grpo).norm() / grpo.norm()).item()
    control = ((rft - grpo).norm() / grpo.norm()).item()
    print(f"bf16 relative update difference NFT vs Dr. GRPO: {difference:.2e} (RFT vs Dr. GRPO: {control:.2e})")
    assert difference <= BF16_RELATIVE_TOLERANCE
    assert control > 10 * BF16_RELATIVE_TOLERANCE, "the control must be far outside the tolerance"
