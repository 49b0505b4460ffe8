"""Strictly on-policy, one NFT step equals one (Dr.) GRPO step: the paper's equivalence, checked on real trainers.

Plain SGD with no gradient clipping makes the parameter update proportional to the gradient, so any scale error in
the loss shows up (Adam would normalise it away). Both trainers start from the same weights and seed and must sample
the same completions; that is asserted, not assumed.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from trl import GRPOConfig, GRPOTrainer

from tests.conftest import first_char_parity_reward, tiny_args
from trl_nft import NFTConfig, NFTTrainer


def train_and_get_update(trainer_cls, config_cls, model, dataset, tokenizer, tmp_path, **overrides):
    start = {name: p.detach().clone() for name, p in model.named_parameters()}
    args = tiny_args(config_cls, tmp_path, **overrides)
    trainer = trainer_cls(
        model=model, reward_funcs=first_char_parity_reward, args=args, train_dataset=dataset, processing_class=tokenizer
    )
    trainer.train()
    update = {name: p.detach() - start[name] for name, p in trainer.model.named_parameters()}
    return update, list(trainer._logs["completion"]), list(trainer._logs["rewards"]["first_char_parity_reward"])


def flat(update):
    return torch.cat([u.flatten() for u in update.values()])


def informative_groups(rewards, group_size):
    groups = [rewards[i : i + group_size] for i in range(0, len(rewards), group_size)]
    return [g for g in groups if 0 < sum(g) < len(g)]


@pytest.mark.parametrize(
    "shared",
    [
        dict(),
        dict(loss_type="dapo"),
        dict(loss_type="bnpo"),
        dict(loss_type="grpo"),
        dict(gradient_accumulation_steps=2, per_device_train_batch_size=8),
        dict(loss_type="grpo", gradient_accumulation_steps=2, per_device_train_batch_size=8),
        dict(loss_type="bnpo", gradient_accumulation_steps=2, per_device_train_batch_size=8),
        # one optimizer step of two micro-batches out of a generation batch of four: dapo's window factor is 1/2
        dict(loss_type="dapo", gradient_accumulation_steps=2, steps_per_generation=4, per_device_train_batch_size=4,
             max_steps=1),
        dict(entropy_coef=0.05),
        dict(use_adaptive_entropy=True, entropy_coef=0.05, entropy_target=10.0),
        dict(top_entropy_quantile=0.5),
        dict(mask_truncated_completions=True, max_completion_length=12),
    ],
    ids=["dr_grpo", "dapo", "bnpo", "grpo", "grad_accum", "grpo_grad_accum", "bnpo_grad_accum", "dapo_window",
         "entropy_bonus", "adaptive_entropy", "top_entropy",
         "mask_truncated"],
)
def test_nft_dr_grpo_weighting_equals_dr_grpo(base_model, prompt_dataset, tokenizer, tmp_path, shared):
    """Every TRL aggregation and option NFT keeps gives the same on-policy update as GRPOTrainer's."""
    common = dict(loss_type="dr_grpo", max_steps=2, per_device_train_batch_size=16, num_generations=4)
    common.update(shared)
    nft_update, nft_completions, rewards = train_and_get_update(
        NFTTrainer, NFTConfig, copy.deepcopy(base_model), prompt_dataset, tokenizer, tmp_path / "nft",
        prompt_weighting="dr_grpo", **common,
    )
    grpo_update, grpo_completions, _ = train_and_get_update(
        GRPOTrainer, GRPOConfig, copy.deepcopy(base_model), prompt_dataset, tokenizer, tmp_path / "grpo",
        scale_rewards="none", **common,
    )
    assert nft_completions == grpo_completions
    assert len(informative_groups(rewards, 4)) >= 2, "the test needs groups with mixed answers"
    assert flat(nft_update).abs().max() > 1e-5
    torch.testing.assert_close(flat(nft_update), flat(grpo_update), rtol=1e-4, atol=1e-7)


def test_nft_grpo_weighting_equals_grpo_up_to_sample_std(base_model, prompt_dataset, tokenizer, tmp_path):
    """With G = 2 every informative group has r̂ = 1/2, so TRL's advantage is NFT's times one known constant.

    TRL divides by the sample std plus 1e-4; ω = sqrt((1 − r̂)/r̂) corresponds to the population std. For r̂ = 1/2:
    population std 1/2, sample std 1/2 · sqrt(G/(G − 1)).
    """
    group = 2
    common = dict(loss_type="dr_grpo", max_steps=1, per_device_train_batch_size=16, num_generations=group)
    nft_update, nft_completions, rewards = train_and_get_update(
        NFTTrainer, NFTConfig, copy.deepcopy(base_model), prompt_dataset, tokenizer, tmp_path / "nft",
        prompt_weighting="grpo", correct_rate_clip=0.0, **common,
    )
    grpo_update, grpo_completions, _ = train_and_get_update(
        GRPOTrainer, GRPOConfig, copy.deepcopy(base_model), prompt_dataset, tokenizer, tmp_path / "grpo",
        scale_rewards="group", **common,
    )
    assert nft_completions == grpo_completions
    assert informative_groups(rewards, group), "the test needs groups with mixed answers"
    population_std = 0.5
    sample_std = population_std * math.sqrt(group / (group - 1))
    factor = population_std / (sample_std + 1e-4)
    torch.testing.assert_close(flat(nft_update) * factor, flat(grpo_update), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize(
    "nft_overrides, shared_overrides",
    [
        (dict(neg_weight=0.0), dict(max_steps=1)),  # RFT drops the negative term
        (dict(), dict(max_steps=2, num_iterations=2)),  # the second pass over a batch is off-policy
    ],
    ids=["neg_weight=0", "num_iterations=2"],
)
def test_negative_controls_differ(base_model, prompt_dataset, tokenizer, tmp_path, nft_overrides, shared_overrides):
    common = dict(loss_type="dr_grpo", per_device_train_batch_size=16, num_generations=4, learning_rate=0.5,
                  **shared_overrides)
    nft_update, nft_completions, _ = train_and_get_update(
        NFTTrainer, NFTConfig, copy.deepcopy(base_model), prompt_dataset, tokenizer, tmp_path / "nft",
        **nft_overrides, **common,
    )
    grpo_update, grpo_completions, _ = train_and_get_update(
        GRPOTrainer, GRPOConfig, copy.deepcopy(base_model), prompt_dataset, tokenizer, tmp_path / "grpo",
        scale_rewards="none", **common,
    )
    assert nft_completions == grpo_completions
    difference = (flat(nft_update) - flat(grpo_update)).norm() / flat(grpo_update).norm()
    assert difference > 1e-3


@pytest.mark.parametrize(
    "shared",
    [dict(), dict(top_entropy_quantile=0.5), dict(off_policy_mask_threshold=0.5)],
    ids=["kl", "kl+top_entropy", "kl+off_policy_mask"],
)
def test_kl_term_is_masked_as_in_trl(base_model, prompt_dataset, tokenizer, tmp_path, shared):
    """With beta > 0, TRL masks only the policy term; the KL term covers every completion token.

    Two steps: at the first the policy equals the reference (zero KL gradient), at the second it does not.
    """
    # TRL builds the reference model by loading the policy's checkpoint, so both trainers start from a path.
    base_model.save_pretrained(tmp_path / "policy")
    tokenizer.save_pretrained(tmp_path / "policy")
    start = {name: p.detach().clone() for name, p in base_model.named_parameters()}
    common = dict(loss_type="dr_grpo", max_steps=2, per_device_train_batch_size=16, num_generations=4, beta=0.5,
                  learning_rate=0.2, **shared)
    updates, completions = {}, {}
    for name, trainer_cls, config_cls, extra in (
        ("nft", NFTTrainer, NFTConfig, dict(prompt_weighting="dr_grpo")),
        ("grpo", GRPOTrainer, GRPOConfig, dict(scale_rewards="none")),
    ):
        args = tiny_args(config_cls, tmp_path / name, **common, **extra)
        trainer = trainer_cls(model=str(tmp_path / "policy"), reward_funcs=first_char_parity_reward, args=args,
                              train_dataset=prompt_dataset, processing_class=tokenizer)
        trainer.train()
        updates[name] = flat({n: p.detach() - start[n] for n, p in trainer.model.named_parameters()})
        completions[name] = list(trainer._logs["completion"])
        kl = [entry["kl"] for entry in trainer.state.log_history if "kl" in entry]
        assert kl[0] == pytest.approx(0.0, abs=1e-7) and kl[-1] > 0, "the second step must see a non-zero KL"
    assert completions["nft"] == completions["grpo"]
    torch.testing.assert_close(updates["nft"], updates["grpo"], rtol=1e-4, atol=1e-7)
