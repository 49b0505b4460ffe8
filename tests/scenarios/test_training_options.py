"""GRPOConfig options GRPO users combine with their runs: entropy bonus (static, adaptive), PEFT, KL to a reference."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import first_char_parity_reward, import_optional, tiny_args
from tests.scenarios.conftest import NFT_METRICS, logged, trains
from trl_nft import NFTConfig, NFTTrainer


def make_trainer(model, dataset, tokenizer, tmp_path, **overrides):
    args = tiny_args(NFTConfig, tmp_path, **{"per_device_train_batch_size": 16, "optim": "adamw_torch", **overrides})
    return NFTTrainer(model=model, reward_funcs=first_char_parity_reward, args=args, train_dataset=dataset,
                      processing_class=tokenizer)


def test_static_entropy_bonus_logs_policy_loss_with_trls_meaning(model, prompt_dataset, tokenizer, tmp_path):
    """`policy_loss` is the loss before the entropy bonus: the NFT term aggregated by `loss_type` (bnpo here: the token
    mean, so it equals nft/positive_loss + nft/negative_loss) per micro-batch, and `loss` is it minus coef x entropy.

    Two accumulation steps per optimizer step and a second pass over the batch (num_iterations=2), so the NFT term is
    off-policy and not zero, and the accumulation scaling is exercised.
    """
    coef = 0.1
    trainer = make_trainer(model, prompt_dataset, tokenizer, tmp_path, entropy_coef=coef, loss_type="bnpo",
                           per_device_train_batch_size=8, gradient_accumulation_steps=2, num_iterations=2,
                           max_steps=2, learning_rate=0.05)
    trains(trainer, expected_metrics=(*NFT_METRICS, "policy_loss", "entropy_coef"))
    entries = [e for e in trainer.state.log_history if "policy_loss" in e]
    assert len(entries) == 2 and [e["entropy_coef"] for e in entries] == [coef, coef]
    assert abs(entries[1]["policy_loss"]) > 1e-6  # the second pass is off-policy
    for entry in entries:
        assert entry["policy_loss"] == pytest.approx(entry["nft/positive_loss"] + entry["nft/negative_loss"],
                                                     rel=1e-5, abs=1e-9)
        assert entry["policy_loss"] - entry["loss"] == pytest.approx(coef * entry["entropy"], rel=1e-4)


def test_adaptive_entropy_bonus(model, prompt_dataset, tokenizer, tmp_path):
    """TRL's controller: the coefficient rises by delta while entropy is under the target, and a step applies the
    coefficient set at the end of the previous one (none on the first step)."""
    delta = 0.005
    trainer = make_trainer(model, prompt_dataset, tokenizer, tmp_path, entropy_coef=0.01, use_adaptive_entropy=True,
                           entropy_target=100.0, entropy_coef_delta=delta, max_steps=3)
    trains(trainer, expected_metrics=(*NFT_METRICS, "policy_loss", "entropy_coef"))
    assert logged(trainer, "entropy_coef") == pytest.approx([0.01 + delta, 0.01 + 2 * delta, 0.01 + 3 * delta])
    bonus = [p - loss for p, loss in zip(logged(trainer, "policy_loss"), logged(trainer, "loss"))]
    applied = [0.0, 0.01 + delta, 0.01 + 2 * delta]
    entropy = logged(trainer, "entropy")
    assert bonus == pytest.approx([c * h for c, h in zip(applied, entropy)], rel=1e-4, abs=1e-7)


def test_peft_with_kl_to_the_base_model(model, prompt_dataset, tokenizer, tmp_path):
    """LoRA with beta > 0: TRL's reference is the model with the adapter disabled; only the adapter trains."""
    peft = import_optional("peft")
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    base = {name: p.detach().clone() for name, p in model.named_parameters()}
    args = tiny_args(NFTConfig, tmp_path, per_device_train_batch_size=16, optim="adamw_torch", beta=0.1, max_steps=2,
                     learning_rate=0.05)
    trainer = NFTTrainer(model=model, reward_funcs=first_char_parity_reward, args=args, train_dataset=prompt_dataset,
                         processing_class=tokenizer, peft_config=config)
    assert trainer.ref_model is None  # the base model (adapter off) is the reference
    trains(trainer, expected_metrics=(*NFT_METRICS, "kl"))
    kl = logged(trainer, "kl")
    assert kl[0] == pytest.approx(0.0, abs=1e-7) and kl[-1] > 0  # the adapter starts as a no-op, then moves away
    for name, p in trainer.model.named_parameters():
        if "lora_" not in name:
            original = name.replace("base_model.model.", "").replace(".base_layer", "")
            assert not p.requires_grad and torch.equal(p.detach(), base[original]), name


@pytest.mark.parametrize("sync_ref_model", [False, True])
def test_kl_to_a_reference_model(model, prompt_dataset, tokenizer, tmp_path, sync_ref_model):
    """beta > 0 loads a frozen reference from the policy's checkpoint; with sync_ref_model TRL mixes the policy into
    it every ref_model_sync_steps."""
    model.save_pretrained(tmp_path / "policy")
    tokenizer.save_pretrained(tmp_path / "policy")
    trainer = make_trainer(str(tmp_path / "policy"), prompt_dataset, tokenizer, tmp_path, beta=0.1, max_steps=2,
                           learning_rate=0.05, sync_ref_model=sync_ref_model, ref_model_sync_steps=1)
    reference = {name: p.detach().clone() for name, p in trainer.ref_model.named_parameters()}
    trains(trainer, expected_metrics=(*NFT_METRICS, "kl"))
    kl = logged(trainer, "kl")
    assert kl[0] == pytest.approx(0.0, abs=1e-7) and kl[-1] > 0
    moved = [not torch.equal(p.detach(), reference[name]) for name, p in trainer.ref_model.named_parameters()]
    assert all(moved) if sync_ref_model else not any(moved)
