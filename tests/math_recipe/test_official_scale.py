"""The official loss scale: the recipes' `max_grad_norm` conversion, checked on a real trainer's gradient."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import first_char_parity_reward, tiny_args, variable_length_batch
from trl_nft import NFTConfig, NFTTrainer
from trl_nft.loss import nft_per_token_loss
from trl_nft.math_recipe.official_scale import (
    OFFICIAL_ADAM_EPSILON,
    OFFICIAL_SEQUENCE_DIVISOR,
    OFFICIAL_WORLD_SIZES,
    equivalent_adam_epsilon,
    equivalent_max_grad_norm,
    official_loss_scale,
)


BATCH_LENGTHS = [3, 7, 5, 9, 2, 9, 4, 6]  # completion lengths of the test batch


def test_recipe_values():
    # 512 sequences per optimizer step; 3584 tokens over 32 data-parallel ranks (7B), 14,336 tokens over 16 (32B).
    assert equivalent_max_grad_norm(1.0, 512, 3584, OFFICIAL_WORLD_SIZES["7b"]) == pytest.approx(0.017439, abs=1e-6)
    assert equivalent_max_grad_norm(1.0, 512, 14_336, OFFICIAL_WORLD_SIZES["32b"]) == pytest.approx(0.0021798, abs=1e-7)
    assert equivalent_adam_epsilon(512, 3584, OFFICIAL_WORLD_SIZES["7b"]) == pytest.approx(1.7439e-10, rel=1e-4)
    assert equivalent_adam_epsilon(512, 14_336, OFFICIAL_WORLD_SIZES["32b"]) == pytest.approx(2.1798e-11, rel=1e-4)


@pytest.mark.parametrize("field", ["sequences_per_step", "max_completion_length", "official_world_size"])
def test_bad_sizes_name_the_field(field):
    sizes = dict(sequences_per_step=512, max_completion_length=3584, official_world_size=32)
    sizes[field] = 0
    with pytest.raises(ValueError, match=f"{field}=0"):
        official_loss_scale(**sizes)


def gradient(model, loss):
    model.zero_grad()
    loss.backward()
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def ours_and_official_gradients(model, prompt_dataset, tokenizer, tmp_path, max_completion_length,
                                official_world_size):
    """(trainer, our dr_grpo gradient, the official loss's gradient, scale) of one batch on a tiny model."""
    args = tiny_args(NFTConfig, tmp_path, max_completion_length=max_completion_length, loss_type="dr_grpo")
    trainer = NFTTrainer(model=model, reward_funcs=first_char_parity_reward, args=args, train_dataset=prompt_dataset,
                         processing_class=tokenizer)
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1  # normally set by the training loop
    batch = variable_length_batch(tokenizer, BATCH_LENGTHS)
    ours = gradient(trainer.model, trainer.compute_loss(trainer.model, batch))

    # The official normaliser, written out: Σ_t ℓ_t / 1000 per sequence, summed, averaged over the ranks.
    input_ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
    attention_mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
    logps, _, _ = trainer._get_per_token_logps_and_entropies(
        trainer.model, input_ids, attention_mask, batch["completion_ids"].size(1)
    )
    mask = batch["completion_mask"].float()
    per_token = nft_per_token_loss(logps, logps.detach(), mask, batch["correct"], batch["correct_rate"])
    official_loss = ((per_token * mask).sum(-1) / OFFICIAL_SEQUENCE_DIVISOR).sum() / official_world_size
    official = gradient(trainer.model, official_loss)
    return trainer, ours, official, official_loss_scale(len(batch["correct"]), max_completion_length,
                                                         official_world_size)


def test_dr_grpo_gradient_times_scale_is_the_official_gradient(model, prompt_dataset, tokenizer, tmp_path):
    _, ours, official, scale = ours_and_official_gradients(model, prompt_dataset, tokenizer, tmp_path, 16, 4)
    assert ours.abs().max() > 0
    torch.testing.assert_close(ours * scale, official, rtol=1e-5, atol=1e-9)


def adamw_update(parameters, flat_gradient, eps):
    """The parameter change of one AdamW step (the official settings: lr 1e-6 scaled up to be visible, decay 0.1)."""
    copies = [p.detach().double().requires_grad_(True) for p in parameters]
    offset = 0
    for copy in copies:
        copy.grad = flat_gradient[offset:offset + copy.numel()].view_as(copy).clone()
        offset += copy.numel()
    optimizer = torch.optim.AdamW(copies, lr=1e-3, betas=(0.9, 0.999), eps=eps, weight_decay=0.1)
    optimizer.step()
    return torch.cat([(copy.detach() - p.detach().double()).flatten() for copy, p in zip(copies, parameters)])


def test_scaled_adam_epsilon_gives_the_official_update(model, prompt_dataset, tokenizer, tmp_path):
    # 8 sequences over 64 ranks: our gradient is 1 / F = 500x the official one, far from 1 so that an unscaled ε
    # shows. The official gradient is a real one (tiny model, NFT loss); ours is it divided by F, in float64, which
    # the test above shows equals our trainer's gradient up to float32 rounding (rounding that would otherwise
    # dominate for the elements near ε).
    max_completion_length, official_world_size = 16, 64
    trainer, _, official, scale = ours_and_official_gradients(
        model, prompt_dataset, tokenizer, tmp_path, max_completion_length, official_world_size
    )
    parameters = [p for p in trainer.model.parameters() if p.grad is not None]
    official = official.double()
    official_update = adamw_update(parameters, official, OFFICIAL_ADAM_EPSILON)
    our_eps = equivalent_adam_epsilon(len(BATCH_LENGTHS), max_completion_length, official_world_size)
    our_update = adamw_update(parameters, official / scale, our_eps)
    assert (official.abs() < 10 * OFFICIAL_ADAM_EPSILON).sum() > 0  # elements where ε matters
    torch.testing.assert_close(our_update, official_update, rtol=1e-9, atol=1e-15)
