"""The low-precision guard: its estimate matches what AdamW really does to bf16 weights, and the trainer warns."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

from tests.conftest import first_char_parity_reward, tiny_args
from trl_nft import NFTConfig, NFTTrainer
from trl_nft.precision import low_precision_warning, vanishing_update_fraction


@pytest.mark.parametrize("learning_rate", [1e-6, 1e-5, 1e-4])
def test_estimate_matches_adamw_on_bf16_weights(learning_rate):
    """AdamW's first step moves each weight by ≈ lr; the estimate must predict which bf16 entries stay put."""
    torch.manual_seed(0)
    weights = torch.nn.Parameter((torch.randn(300, 300) * 0.02).to(torch.bfloat16))
    predicted = vanishing_update_fraction([weights], learning_rate)
    start = weights.detach().clone()
    optimizer = torch.optim.AdamW([weights], lr=learning_rate, weight_decay=0.0)
    weights.grad = torch.randn_like(weights)
    optimizer.step()
    measured = (weights.detach() == start).float().mean().item()
    assert predicted == pytest.approx(measured, abs=0.03)


def test_fp32_weights_are_not_flagged():
    weights = torch.nn.Parameter(torch.randn(100, 100) * 0.02)
    assert vanishing_update_fraction([weights], 1e-6) is None


def trainer_warnings(model, prompt_dataset, tokenizer, tmp_path, learning_rate):
    args = tiny_args(NFTConfig, tmp_path, learning_rate=learning_rate, optim="adamw_torch")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        NFTTrainer(model=model, reward_funcs=first_char_parity_reward, args=args, train_dataset=prompt_dataset,
                   processing_class=tokenizer)
    return [str(w.message) for w in caught if "fp32 master weights" in str(w.message)]


def test_trainer_warns_for_bf16_weights_at_the_papers_learning_rate(base_model, prompt_dataset, tokenizer, tmp_path):
    bf16_model = copy.deepcopy(base_model).to(torch.bfloat16)
    messages = trainer_warnings(bf16_model, prompt_dataset, tokenizer, tmp_path, 1e-6)
    assert len(messages) == 1 and "learning_rate=1e-06" in messages[0] and "float32" in messages[0]
    assert trainer_warnings(copy.deepcopy(base_model), prompt_dataset, tokenizer, tmp_path, 1e-6) == []
    assert trainer_warnings(copy.deepcopy(base_model).to(torch.bfloat16), prompt_dataset, tokenizer, tmp_path, 0.5) == []


def test_master_weights_silence_the_warning(base_model):
    bf16_model = copy.deepcopy(base_model).to(torch.bfloat16)
    assert low_precision_warning(bf16_model, 1e-6, uses_master_weights=False) is not None
    assert low_precision_warning(bf16_model, 1e-6, uses_master_weights=True) is None
