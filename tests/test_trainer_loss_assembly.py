"""NFTTrainer's loss assembly (`_compute_loss`, `_aggregate`, `_log_metrics`) against a reference written out here.

A hand-made micro-batch is genuinely off-policy: π_old (and vLLM's sampling policy, where faked) differ from the
current policy by known per-row amounts, so ratio caps, floors, the correct-rate clip and TRL's off-policy mask all
act on some tokens and not on others. The reference recomputes the model's log-probs and Eq. 10 from scratch (it does
not call `trl_nft.loss`), then applies TRL's masks and `loss_type` normaliser as TRL documents them. Every option
below is set away from its default, so one dropped between `NFTConfig` and the loss changes the result.
"""

from __future__ import annotations

import math

import pytest
import torch

from tests.conftest import first_char_parity_reward, tiny_args, variable_length_batch
from trl_nft import NFTConfig, NFTTrainer

# Non-default loss options, chosen so that each one changes some tokens of the batch below (asserted in the tests).
LOSS_OPTIONS = dict(neg_weight=0.6, negative_clip=0.6, positive_clip=0.7, correct_rate_clip=0.3, max_log_ratio=0.4)
LENGTHS = [5, 9, 3, 8, 6, 9, 1, 7]  # a one-token completion: per-sequence normalisers must not clamp it
# Per-row shift of log π_old − log π_θ: rows 1, 3 (wrong, group 1) and 6 (wrong, group 2) drift far, so TRL's
# off-policy mask drops them while it keeps the other negative-advantage rows.
ROW_SHIFT = torch.tensor([0.3, 0.5, -0.4, 0.6, -0.2, 0.1, 0.7, -0.5])
OFF_POLICY_THRESHOLD = 0.35
GRADIENT_ACCUMULATION, STEPS_PER_GENERATION = 2, 4


def make_trainer(model, dataset, tokenizer, tmp_path, **overrides):
    settings = dict(LOSS_OPTIONS, gradient_accumulation_steps=GRADIENT_ACCUMULATION,
                    steps_per_generation=STEPS_PER_GENERATION, max_completion_length=12)
    settings.update(overrides)
    args = tiny_args(NFTConfig, tmp_path, **settings)
    trainer = NFTTrainer(model=model, reward_funcs=first_char_parity_reward, args=args, train_dataset=dataset,
                         processing_class=tokenizer)
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = GRADIENT_ACCUMULATION  # set by the training loop in a real run
    return trainer


def current_logps(model, batch, with_entropy=False):
    """log π_θ of each completion token (and the entropy of π_θ there), from the model's logits (temperature 1)."""
    input_ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
    attention = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
    with torch.no_grad():
        logits = model(input_ids=input_ids, attention_mask=attention).logits
    prompt_length = batch["prompt_ids"].size(1)
    log_probs = torch.log_softmax(logits[:, prompt_length - 1 : -1].float(), dim=-1)
    logps = log_probs.gather(-1, batch["completion_ids"].unsqueeze(-1)).squeeze(-1)
    if with_entropy:
        return logps, -(log_probs.exp() * log_probs).sum(-1)
    return logps


def off_policy_batch(model, tokenizer, seed=0):
    """The crafted micro-batch, with π_old = π_θ · exp(−shift − noise) per token."""
    batch = variable_length_batch(tokenizer, LENGTHS, seed=seed)
    now = current_logps(model, batch)
    noise = torch.randn(now.shape, generator=torch.Generator().manual_seed(seed + 1)) * 0.3
    batch["old_per_token_logps"] = now + ROW_SHIFT[:, None] + noise
    batch["num_items_in_batch"] = batch["completion_mask"].sum().float() * STEPS_PER_GENERATION
    return batch, now


def reference_terms(now, batch, mask, options, level="token", prompt_weighting="dr_grpo"):
    """Eq. 10 written out: (positive, negative, ratio, negative ratio) per token (or per sequence), before masking."""
    log_ratio = now - batch["old_per_token_logps"]
    if level == "sequence":
        log_ratio = (log_ratio * mask).sum(-1, keepdim=True)
    ratio = torch.exp(log_ratio.clamp(max=options["max_log_ratio"]))
    rate = batch["correct_rate"]
    informative = ((rate > 0) & (rate < 1)).float()[:, None]
    rate = rate.clamp(options["correct_rate_clip"], 1 - options["correct_rate_clip"])[:, None]
    omega = {"none": torch.ones_like(rate), "dr_grpo": 1 - rate, "grpo": torch.sqrt((1 - rate) / rate)}
    correct = batch["correct"][:, None]
    negative_ratio = (1 - rate * ratio) / (1 - rate)
    positive = -omega[prompt_weighting] * informative * correct * torch.log(ratio.clamp(min=options["positive_clip"]))
    negative = (-omega[prompt_weighting] * informative * (1 - correct) * options["neg_weight"]
                * torch.log(negative_ratio.clamp(min=options["negative_clip"])))
    return positive, negative, ratio, negative_ratio


def reference_off_policy_mask(now, sampling, batch, mask, threshold):
    """TRL's sequence mask (DeepSeek-V3.2): keep a sequence if its advantage r − r̂ ≥ 0 or its mean KL ≤ threshold."""
    mean_kl = ((sampling - now) * mask).sum(-1, keepdim=True) / mask.sum(-1, keepdim=True)
    advantage = (batch["correct"] - batch["correct_rate"])[:, None]
    return ((advantage >= 0) | (mean_kl <= threshold)).float()


def reference_aggregate(per_token, mask, loss_type, num_items, max_completion_length, accumulation=None,
                        processes=1):
    """TRL's `loss_type` normalisers; in training each divides by the accumulation steps (dapo: its window)."""
    accumulation = GRADIENT_ACCUMULATION if accumulation is None else accumulation
    masked = per_token * mask
    if loss_type == "dr_grpo":
        return masked.sum() / (mask.size(0) * max_completion_length) / accumulation
    if loss_type == "grpo":
        return (masked.sum(-1) / mask.sum(-1)).mean() / accumulation
    if loss_type == "bnpo":
        return masked.sum() / mask.sum() / accumulation
    # dapo: tokens of the whole generation batch on all processes, scaled to this process's accumulation window
    return masked.sum() / (num_items / processes * accumulation / STEPS_PER_GENERATION)


def spread(sequence_values, mask):
    return sequence_values * mask / mask.sum(-1, keepdim=True)


@pytest.mark.parametrize("loss_type", ["dr_grpo", "grpo", "bnpo", "dapo"])
@pytest.mark.parametrize("prompt_weighting", ["dr_grpo", "grpo", "none"])
def test_loss_equals_the_reference_with_every_option_set(model, prompt_dataset, tokenizer, tmp_path, loss_type,
                                                         prompt_weighting):
    """Every loss option reaches the loss; every normaliser divides by the accumulation steps (dapo: its window)."""
    trainer = make_trainer(model, prompt_dataset, tokenizer, tmp_path, loss_type=loss_type,
                           prompt_weighting=prompt_weighting)
    batch, now = off_policy_batch(trainer.model, tokenizer)
    mask = batch["completion_mask"].float()
    positive, negative, ratio, negative_ratio = reference_terms(now, batch, mask, LOSS_OPTIONS,
                                                                prompt_weighting=prompt_weighting)
    # The batch exercises each option: some tokens are capped, floored or clipped, and some are not.
    tokens = mask.bool()
    log_ratio = now - batch["old_per_token_logps"]
    assert 0 < (log_ratio[tokens] > LOSS_OPTIONS["max_log_ratio"]).float().mean() < 1
    assert 0 < (ratio[tokens] < LOSS_OPTIONS["positive_clip"]).float().mean() < 1
    assert 0 < (negative_ratio[tokens] < LOSS_OPTIONS["negative_clip"]).float().mean() < 1
    expected = reference_aggregate(positive + negative, mask, loss_type, batch["num_items_in_batch"],
                                   trainer.max_completion_length)
    loss = trainer.compute_loss(trainer.model, batch)
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-5, atol=1e-7)


def test_each_option_changes_the_loss(model, prompt_dataset, tokenizer, tmp_path):
    """Negative control of the reference test: each option, put back to its default, gives a different loss."""
    trainer = make_trainer(model, prompt_dataset, tokenizer, tmp_path)
    batch, _ = off_policy_batch(trainer.model, tokenizer)
    with_options = trainer.compute_loss(trainer.model, batch).item()
    defaults = NFTConfig.__dataclass_fields__
    for name in LOSS_OPTIONS:
        setattr(trainer.args, name, defaults[name].default)
        changed = trainer.compute_loss(trainer.model, batch).item()
        setattr(trainer.args, name, LOSS_OPTIONS[name])
        assert not math.isclose(changed, with_options, rel_tol=1e-4), f"{name} has no effect on this batch"


def test_sequence_level_equals_the_reference(model, prompt_dataset, tokenizer, tmp_path):
    trainer = make_trainer(model, prompt_dataset, tokenizer, tmp_path, importance_sampling_level="sequence",
                           max_log_ratio=0.8)
    batch, now = off_policy_batch(trainer.model, tokenizer)
    mask = batch["completion_mask"].float()
    options = dict(LOSS_OPTIONS, max_log_ratio=0.8)
    positive, negative, _, _ = reference_terms(now, batch, mask, options, level="sequence")
    expected = reference_aggregate(spread(positive + negative, mask), mask, "dr_grpo", None,
                                   trainer.max_completion_length)
    torch.testing.assert_close(trainer.compute_loss(trainer.model, batch).detach(), expected, rtol=1e-5, atol=1e-7)


def test_off_policy_mask_drops_far_negative_sequences(model, prompt_dataset, tokenizer, tmp_path):
    """Off-policy, TRL's mask must drop negative-advantage sequences whose mean KL to π_old exceeds the threshold."""
    trainer = make_trainer(model, prompt_dataset, tokenizer, tmp_path, off_policy_mask_threshold=OFF_POLICY_THRESHOLD)
    batch, now = off_policy_batch(trainer.model, tokenizer)
    mask = batch["completion_mask"].float()
    keep = reference_off_policy_mask(now, batch["old_per_token_logps"], batch, mask, OFF_POLICY_THRESHOLD)
    negative_rows = (batch["correct"] < batch["correct_rate"])
    assert 0 < keep[negative_rows].sum() < negative_rows.sum(), "the batch must have kept and dropped negative rows"
    positive, negative, _, _ = reference_terms(now, batch, mask, LOSS_OPTIONS)
    expected = reference_aggregate((positive + negative) * keep, mask, "dr_grpo", None, trainer.max_completion_length)
    loss = trainer.compute_loss(trainer.model, batch).detach()
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-7)
    unmasked = reference_aggregate(positive + negative, mask, "dr_grpo", None, trainer.max_completion_length)
    assert not torch.isclose(loss, unmasked, rtol=1e-4)


def test_vllm_importance_sampling_and_mask_use_the_sampling_policy(model, prompt_dataset, tokenizer, tmp_path):
    """With vLLM, TRL hands over vLLM's log-probs and the truncated importance ratio π_old / π_vLLM per token: the
    off-policy mask reads the sampling log-probs and the per-token loss is multiplied by the ratio."""
    trainer = make_trainer(model, prompt_dataset, tokenizer, tmp_path, off_policy_mask_threshold=OFF_POLICY_THRESHOLD)
    trainer.use_vllm, trainer.vllm_importance_sampling_correction = True, True  # no vLLM server on a CPU test machine
    batch, now = off_policy_batch(trainer.model, tokenizer)
    mask = batch["completion_mask"].float()
    # vLLM's log-probs: the old policy's, except that rows 0 (kept: positive advantage) and 2 (then dropped) drift.
    sampling = batch["old_per_token_logps"] + torch.tensor([0.5, 0, 0.9, 0, 0, 0, 0, 0])[:, None]
    sampling = sampling.masked_fill(mask == 0, 0.0)
    batch["sampling_per_token_logps"] = sampling
    batch["importance_sampling_ratio"] = torch.exp(batch["old_per_token_logps"] - sampling).clamp(max=2.0)
    keep = reference_off_policy_mask(now, sampling, batch, mask, OFF_POLICY_THRESHOLD)
    assert not torch.equal(keep, reference_off_policy_mask(now, batch["old_per_token_logps"], batch, mask,
                                                           OFF_POLICY_THRESHOLD))
    positive, negative, _, _ = reference_terms(now, batch, mask, LOSS_OPTIONS)
    per_token = (positive + negative) * keep * batch["importance_sampling_ratio"]
    expected = reference_aggregate(per_token, mask, "dr_grpo", None, trainer.max_completion_length)
    torch.testing.assert_close(trainer.compute_loss(trainer.model, batch).detach(), expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("use_bias_correction_kl", [False, True])
def test_kl_term_and_its_bias_correction(model, prompt_dataset, tokenizer, tmp_path, use_bias_correction_kl):
    """β·KL(π_θ‖π_ref) per token (k3 estimator); with `use_bias_correction_kl` it is weighted by π_θ / π_old."""
    trainer = make_trainer(model, prompt_dataset, tokenizer, tmp_path, use_bias_correction_kl=use_bias_correction_kl)
    trainer.beta = 0.3  # the reference model's log-probs come with the batch, so none is built here
    batch, now = off_policy_batch(trainer.model, tokenizer)
    mask = batch["completion_mask"].float()
    batch["ref_per_token_logps"] = now - 0.2 * torch.randn(now.shape, generator=torch.Generator().manual_seed(5))
    log_ref_ratio = batch["ref_per_token_logps"] - now
    kl = torch.exp(log_ref_ratio) - log_ref_ratio - 1
    if use_bias_correction_kl:
        kl = kl * torch.exp(now - batch["old_per_token_logps"])
    positive, negative, _, _ = reference_terms(now, batch, mask, LOSS_OPTIONS)
    expected = reference_aggregate(positive + negative + 0.3 * kl, mask, "dr_grpo", None,
                                   trainer.max_completion_length)
    torch.testing.assert_close(trainer.compute_loss(trainer.model, batch).detach(), expected, rtol=1e-5, atol=1e-7)
    logged_kl = trainer._metrics["train"]["kl"][-1]
    assert logged_kl == pytest.approx(((kl * mask).sum() / mask.sum()).item(), rel=1e-5)


def test_tool_output_tokens_are_left_out_of_the_loss(model, prompt_dataset, tokenizer, tmp_path):
    """TRL's `tool_mask` (0 on tokens a tool wrote) removes those tokens from the loss and from its normaliser."""
    trainer = make_trainer(model, prompt_dataset, tokenizer, tmp_path, loss_type="bnpo")
    batch, now = off_policy_batch(trainer.model, tokenizer)
    tool_mask = torch.ones_like(batch["completion_mask"])
    tool_mask[:, 1:3] = 0  # a tool's answer inside every completion
    batch["tool_mask"] = tool_mask
    mask = (batch["completion_mask"] * tool_mask).float()
    positive, negative, _, _ = reference_terms(now, batch, mask, LOSS_OPTIONS)
    expected = reference_aggregate(positive + negative, mask, "bnpo", None, trainer.max_completion_length)
    torch.testing.assert_close(trainer.compute_loss(trainer.model, batch).detach(), expected, rtol=1e-5, atol=1e-7)


def test_nft_metrics_equal_independently_computed_values(model, prompt_dataset, tokenizer, tmp_path):
    trainer = make_trainer(model, prompt_dataset, tokenizer, tmp_path)
    batch, now = off_policy_batch(trainer.model, tokenizer)
    mask = batch["completion_mask"].float()
    trainer.compute_loss(trainer.model, batch)
    positive, negative, ratio, negative_ratio = reference_terms(now, batch, mask, LOSS_OPTIONS)
    wrong_informative = ((1 - batch["correct"]) * (batch["correct_rate"] > 0) * (batch["correct_rate"] < 1))[:, None]
    negative_tokens = mask * wrong_informative
    at_floor = (negative_ratio < LOSS_OPTIONS["negative_clip"]).float()
    expected = {
        "nft/positive_loss": ((positive * mask).sum() / mask.sum()).item(),
        "nft/negative_loss": ((negative * mask).sum() / mask.sum()).item(),
        "nft/ratio_mean": ((ratio * mask).sum() / mask.sum()).item(),
        "nft/ratio_max": ratio[mask.bool()].max().item(),
        "nft/negative_floor_frac": ((at_floor * negative_tokens).sum() / negative_tokens.sum()).item(),
    }
    # Values far enough apart that a swap or an inversion cannot pass.
    assert abs(expected["nft/positive_loss"] - expected["nft/negative_loss"]) > 1e-2
    assert abs(expected["nft/negative_floor_frac"] - 0.5) > 0.05 and abs(expected["nft/ratio_mean"] - 1) > 1e-2
    logged = {name: trainer._metrics["train"][name][-1] for name in expected}
    assert logged == pytest.approx(expected, rel=1e-5)


def test_on_policy_without_pi_old_uses_the_current_policy(model, prompt_dataset, tokenizer, tmp_path):
    """On-policy without vLLM TRL hands over no π_old: R = 1 and the loss is the one at π_old = π_θ."""
    trainer = make_trainer(model, prompt_dataset, tokenizer, tmp_path)
    batch, now = off_policy_batch(trainer.model, tokenizer)
    del batch["old_per_token_logps"]
    mask = batch["completion_mask"].float()
    positive, negative, _, _ = reference_terms(now, dict(batch, old_per_token_logps=now), mask, LOSS_OPTIONS)
    expected = reference_aggregate(positive + negative, mask, "dr_grpo", None, trainer.max_completion_length)
    torch.testing.assert_close(trainer.compute_loss(trainer.model, batch).detach(), expected, rtol=1e-5, atol=1e-7)
    assert trainer._metrics["train"]["nft/ratio_max"][-1] == pytest.approx(1.0)


def test_dapo_normaliser_shares_the_generation_batch_tokens_between_processes(model, prompt_dataset, tokenizer,
                                                                              tmp_path, monkeypatch):
    trainer = make_trainer(model, prompt_dataset, tokenizer, tmp_path, loss_type="dapo")
    monkeypatch.setattr(type(trainer.accelerator), "num_processes", property(lambda self: 2))
    monkeypatch.setattr(type(trainer.accelerator), "reduce", lambda self, tensor, reduction: tensor)
    monkeypatch.setattr(type(trainer.accelerator), "gather", lambda self, tensor: tensor)
    batch, now = off_policy_batch(trainer.model, tokenizer)
    mask = batch["completion_mask"].float()
    positive, negative, _, _ = reference_terms(now, batch, mask, LOSS_OPTIONS)
    expected = reference_aggregate(positive + negative, mask, "dapo", batch["num_items_in_batch"],
                                   trainer.max_completion_length, processes=2)
    torch.testing.assert_close(trainer.compute_loss(trainer.model, batch).detach(), expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("loss_type", ["dr_grpo", "dapo"])
def test_evaluation_loss_is_not_divided_by_the_accumulation_steps(model, prompt_dataset, tokenizer, tmp_path,
                                                                  loss_type):
    """In eval, no accumulation (dapo: the whole generation batch is the window) and metrics go to the eval side."""
    trainer = make_trainer(model, prompt_dataset, tokenizer, tmp_path, loss_type=loss_type)
    trainer.model.eval()
    batch, now = off_policy_batch(trainer.model, tokenizer)
    mask = batch["completion_mask"].float()
    positive, negative, _, _ = reference_terms(now, batch, mask, LOSS_OPTIONS)
    if loss_type == "dapo":  # eval divides by every completion token of the generation batch
        expected = ((positive + negative) * mask).sum() / batch["num_items_in_batch"]
    else:
        expected = reference_aggregate(positive + negative, mask, loss_type, None, trainer.max_completion_length,
                                       accumulation=1)
    torch.testing.assert_close(trainer.compute_loss(trainer.model, batch).detach(), expected, rtol=1e-5, atol=1e-7)
    assert trainer._metrics["eval"]["nft/positive_loss"] and not trainer._metrics["train"]["nft/positive_loss"]


@pytest.mark.parametrize("quantile", [0.5, 1.0])
def test_high_entropy_mask_and_entropy_bonus(model, prompt_dataset, tokenizer, tmp_path, quantile):
    """`top_entropy_quantile` keeps the policy term on the most uncertain tokens; the entropy bonus (averaged over
    the same tokens) is subtracted after the aggregation, and `policy_loss` logs the loss before it."""
    coef = 0.1
    trainer = make_trainer(model, prompt_dataset, tokenizer, tmp_path, top_entropy_quantile=quantile,
                           entropy_coef=coef)
    batch, _ = off_policy_batch(trainer.model, tokenizer)
    now, entropy = current_logps(trainer.model, batch, with_entropy=True)
    mask = batch["completion_mask"].float()
    cut = torch.quantile(entropy[mask.bool()], 1 - quantile)
    high = mask * (entropy >= cut).float()
    assert 0 < high.sum() < mask.sum() if quantile < 1 else torch.equal(high, mask)
    positive, negative, _, _ = reference_terms(now, batch, mask, LOSS_OPTIONS)
    policy = reference_aggregate((positive + negative) * high, mask, "dr_grpo", None, trainer.max_completion_length)
    bonus = coef * (entropy * high).sum() / high.sum() / GRADIENT_ACCUMULATION
    loss = trainer.compute_loss(trainer.model, batch).detach()
    torch.testing.assert_close(loss, policy - bonus, rtol=1e-5, atol=1e-7)
    assert trainer._metrics["train"]["policy_loss"][-1] == pytest.approx(policy.item() * GRADIENT_ACCUMULATION,
                                                                         rel=1e-5)


def test_an_unsupported_loss_type_is_named(model, prompt_dataset, tokenizer, tmp_path):
    trainer = make_trainer(model, prompt_dataset, tokenizer, tmp_path)
    trainer.loss_type = "cispo"  # NFTConfig refuses it; this checks the trainer's own guard
    batch, _ = off_policy_batch(trainer.model, tokenizer)
    with pytest.raises(ValueError, match="loss_type='cispo' is not supported by NFTTrainer"):
        trainer.compute_loss(trainer.model, batch)


def test_moe_router_loss_is_added_per_accumulation_step_and_logged(prompt_dataset, tokenizer, tmp_path):
    """A mixture-of-experts policy: the router's load-balancing loss, weighted by `router_aux_loss_coef`, is added
    after the aggregation (divided by the accumulation steps) and logged as `aux_loss`."""
    from trl_nft.testing.tiny_models import build_tiny_qwen2_moe

    policy = build_tiny_qwen2_moe(tokenizer, hidden_size=16, num_layers=1, max_position_embeddings=64)
    coef = 0.5
    trainer = make_trainer(policy, prompt_dataset, tokenizer, tmp_path, router_aux_loss_coef=coef)
    assert trainer.aux_loss_enabled
    batch, now = off_policy_batch(trainer.model, tokenizer)
    mask = batch["completion_mask"].float()
    with torch.no_grad():
        aux = trainer.model(input_ids=torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1),
                            attention_mask=torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1),
                            output_router_logits=True).aux_loss
    positive, negative, _, _ = reference_terms(now, batch, mask, LOSS_OPTIONS)
    nft = reference_aggregate(positive + negative, mask, "dr_grpo", None, trainer.max_completion_length)
    loss = trainer.compute_loss(trainer.model, batch).detach()
    torch.testing.assert_close(loss, nft + coef * aux / GRADIENT_ACCUMULATION, rtol=1e-5, atol=1e-7)
    assert trainer._metrics["train"]["aux_loss"][-1] == pytest.approx(aux.item(), rel=1e-5)


@pytest.mark.parametrize("loss_type", ["bnpo", "dapo"])
def test_a_single_counted_token_is_not_clamped_away(model, prompt_dataset, tokenizer, tmp_path, loss_type):
    """The token-count normalisers are clamped at 1 only to avoid 0 / 0: a batch of one counted token divides by 1."""
    trainer = make_trainer(model, prompt_dataset, tokenizer, tmp_path, loss_type=loss_type)
    batch, now = off_policy_batch(trainer.model, tokenizer)
    tool_mask = torch.zeros_like(batch["completion_mask"])
    tool_mask[1, 0] = 1  # every other token was written by a tool
    batch["tool_mask"], batch["num_items_in_batch"] = tool_mask, torch.tensor(1.0)
    mask = (batch["completion_mask"] * tool_mask).float()
    positive, negative, _, _ = reference_terms(now, batch, mask, LOSS_OPTIONS)
    expected = reference_aggregate(positive + negative, mask, loss_type, batch["num_items_in_batch"],
                                   trainer.max_completion_length)
    assert expected.abs() > 0
    torch.testing.assert_close(trainer.compute_loss(trainer.model, batch).detach(), expected, rtol=1e-5, atol=1e-7)
