"""`nft_per_token_loss` against an independent, element-by-element float64 transcription of the formula."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from trl_nft.loss import log_of_straight_through_max, nft_log_ratio, nft_loss_terms, nft_per_token_loss


def reference_loss_and_grad(logps, old, mask, correct, rate, *, neg_weight, prompt_weighting, level, negative_clip,
                            positive_clip, correct_rate_clip, max_log_ratio):
    """Python-float loss and d(loss)/d(logp) per token, straight from the paper's formula (no torch autograd)."""
    batch, length = len(logps), len(logps[0])
    losses, grads = [], []
    for b in range(batch):
        if not 0 < rate[b] < 1:
            losses.append([0.0] * (1 if level == "sequence" else length))
            grads.append([0.0] * length)
            continue
        r_hat = min(max(rate[b], correct_rate_clip), 1 - correct_rate_clip)
        omega = {"none": 1.0, "dr_grpo": 1 - r_hat, "grpo": math.sqrt((1 - r_hat) / r_hat)}[prompt_weighting]

        def term(log_ratio):
            """Loss value and d(loss)/d(log ratio) for one ratio."""
            capped = min(log_ratio, max_log_ratio)
            ratio = math.exp(capped)
            d_ratio = ratio if log_ratio < max_log_ratio else 0.0  # the cap has no gradient
            positive = max(ratio, positive_clip)
            negative_x = (1 - r_hat * ratio) / (1 - r_hat)
            negative = max(negative_x, negative_clip)
            value = -(correct[b] * math.log(positive) + (1 - correct[b]) * neg_weight * math.log(negative))
            grad = -(correct[b] * d_ratio / positive
                     + (1 - correct[b]) * neg_weight * (-r_hat / (1 - r_hat)) * d_ratio / negative)
            return omega * value, omega * grad

        if level == "token":
            pairs = [term(logps[b][t] - old[b][t]) for t in range(length)]
            losses.append([p[0] for p in pairs])
            grads.append([p[1] * mask[b][t] for t, p in enumerate(pairs)])  # the caller masks
        else:
            seq_log_ratio = sum((logps[b][t] - old[b][t]) * mask[b][t] for t in range(length))
            value, grad = term(seq_log_ratio)
            losses.append([value])
            # every token's loss is the same broadcast value; the gradient below is of its masked token sum
            n_tokens = sum(mask[b])
            grads.append([grad * mask[b][t] * n_tokens for t in range(length)])
    return losses, grads


def random_batch(seed, batch=6, length=5, spread=0.6):
    generator = torch.Generator().manual_seed(seed)
    logps = -torch.rand(batch, length, generator=generator, dtype=torch.float64) * 3
    old = logps + (torch.rand(batch, length, generator=generator, dtype=torch.float64) - 0.5) * 2 * spread
    mask = torch.ones(batch, length, dtype=torch.float64)
    mask[0, 3:] = 0
    mask[4, 1:] = 0
    correct = torch.tensor([1, 0, 1, 0, 1, 0], dtype=torch.float64)[:batch]
    rate = torch.tensor([0.5, 0.5, 0.25, 0.25, 0.75, 0.01], dtype=torch.float64)[:batch]
    return logps, old, mask, correct, rate


KNOBS = {
    "neg_weight": [1.0, 0.0, 0.5],
    "prompt_weighting": ["none", "dr_grpo", "grpo"],
    "level": ["token", "sequence"],
    "negative_clip": [1.0, 0.3],
    "positive_clip": [0.0, 1.05],
    "correct_rate_clip": [0.02, 0.1],
    "max_log_ratio": [10.0, 0.1],
}
DEFAULTS = dict(neg_weight=1.0, prompt_weighting="dr_grpo", level="token", negative_clip=1.0, positive_clip=0.0,
                correct_rate_clip=0.02, max_log_ratio=10.0)


def knob_settings():
    """Each knob's values with the others at their defaults, plus every weighting × level × clip combination."""
    settings = [dict(DEFAULTS, **{name: value}) for name, values in KNOBS.items() for value in values]
    for weighting, level, clip in itertools.product(KNOBS["prompt_weighting"], KNOBS["level"], KNOBS["negative_clip"]):
        settings.append(dict(DEFAULTS, prompt_weighting=weighting, level=level, negative_clip=clip))
    return settings


@pytest.mark.parametrize("knobs", knob_settings(), ids=lambda k: "-".join(f"{v}" for v in k.values()))
@pytest.mark.parametrize("seed", [0, 1])
def test_values_and_gradients_match_reference(knobs, seed):
    logps, old, mask, correct, rate = random_batch(seed)
    logps.requires_grad_(True)
    loss = nft_per_token_loss(logps, old, mask, correct, rate, **knobs)
    (loss * mask).sum().backward()

    want_loss, want_grad = reference_loss_and_grad(
        logps.tolist(), old.tolist(), mask.tolist(), correct.tolist(), rate.tolist(), **knobs
    )
    expected_shape = (6, 1) if knobs["level"] == "sequence" else (6, 5)
    assert loss.shape == expected_shape
    torch.testing.assert_close(loss, torch.tensor(want_loss, dtype=torch.float64), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(logps.grad, torch.tensor(want_grad, dtype=torch.float64), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("level", ["token", "sequence"])
def test_loss_terms_split_the_loss_into_its_positive_and_negative_parts(level):
    """positive = the loss without its negative term (neg_weight 0); negative = the rest; the ratios are R and (1 − r̂R)/(1 − r̂)."""
    logps, old, mask, correct, rate = random_batch(3)
    correct = torch.tensor([1, 0, 0.5, 0, 1, 0], dtype=torch.float64)  # a soft label has both parts
    knobs = dict(DEFAULTS, level=level, neg_weight=0.7, negative_clip=0.3)
    terms = nft_loss_terms(logps, old, mask, correct, rate, **knobs)
    reference = lambda **changes: torch.tensor(reference_loss_and_grad(  # noqa: E731
        logps.tolist(), old.tolist(), mask.tolist(), correct.tolist(), rate.tolist(), **dict(knobs, **changes))[0],
        dtype=torch.float64)
    torch.testing.assert_close(terms.positive, reference(neg_weight=0.0), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(terms.negative, reference() - reference(neg_weight=0.0), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(terms.loss, nft_per_token_loss(logps, old, mask, correct, rate, **knobs))
    log_ratio = logps - old if level == "token" else ((logps - old) * mask).sum(-1, keepdim=True)
    torch.testing.assert_close(terms.ratio, log_ratio.exp())
    r_hat = rate.clamp(0.02, 0.98)[:, None]
    informative = ((rate > 0) & (rate < 1))[:, None]
    want_negative_ratio = (1 - r_hat * log_ratio.exp()) / (1 - r_hat)
    torch.testing.assert_close(terms.negative_ratio[informative.expand_as(terms.ratio)],
                               want_negative_ratio[informative.expand_as(terms.ratio)])


def test_negative_floor_is_straight_through():
    """Where (1 − r̂R)/(1 − r̂) < ε the value is log ε, yet the gradient is the unclamped one, −r̂/(1 − r̂)·dR/x̄."""
    logp = torch.tensor([[0.5]], dtype=torch.float64, requires_grad=True)  # R = e^0.5 > 1, so x < 1 = ε
    loss = nft_per_token_loss(logp, torch.zeros_like(logp), torch.ones_like(logp), torch.tensor([0.0]),
                              torch.tensor([0.5], dtype=torch.float64), prompt_weighting="none")
    loss.sum().backward()
    assert loss.item() == 0.0  # −log max(x, 1) = −log 1
    ratio = math.exp(0.5)
    assert logp.grad.item() == pytest.approx(-(-0.5 / 0.5) * ratio / 1.0)  # = +R: pushes log π down
    assert logp.grad.item() != 0.0


def test_log_of_straight_through_max_forward_and_backward():
    x = torch.tensor([0.2, 2.0], dtype=torch.float64, requires_grad=True)
    out = log_of_straight_through_max(x, 1.0)
    out.sum().backward()
    torch.testing.assert_close(out.detach(), torch.tensor([0.0, math.log(2.0)], dtype=torch.float64))
    torch.testing.assert_close(x.grad, torch.tensor([1.0, 0.5], dtype=torch.float64))


@pytest.mark.parametrize("rate", [0.0, 1.0])
@pytest.mark.parametrize("clip", [0.02, 0.0])
def test_degenerate_groups_are_exactly_zero(rate, clip):
    logps, old, mask, correct, _ = random_batch(3)
    logps.requires_grad_(True)
    rates = torch.full((6,), rate, dtype=torch.float64)
    loss = nft_per_token_loss(logps, old, mask, correct, rates, correct_rate_clip=clip, prompt_weighting="grpo")
    (loss * mask).sum().backward()
    assert torch.equal(loss, torch.zeros_like(loss))
    assert torch.equal(logps.grad, torch.zeros_like(logps.grad))


@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_extreme_inputs_stay_finite(level, dtype):
    logps = torch.tensor([[-50.0, 0.0, -0.01], [20.0, -50.0, 0.0], [0.0, 0.0, 0.0], [-50.0, 20.0, 5.0]], dtype=dtype)
    old = torch.tensor([[0.0, -50.0, -0.01], [0.0, 0.0, -50.0], [-20.0, 0.0, 0.0], [-0.0, -0.0, -50.0]], dtype=dtype)
    logps.requires_grad_(True)
    mask = torch.ones_like(old)
    correct = torch.tensor([1.0, 0.0, 0.0, 1.0])
    for rate in (0.02, 0.98, 0.5, 0.001, 0.999):
        rates = torch.full((4,), rate)
        loss = nft_per_token_loss(logps, old, mask, correct, rates, level=level, prompt_weighting="grpo")
        (loss * mask).sum().backward()
        assert torch.isfinite(loss).all(), (rate, loss)
        assert torch.isfinite(logps.grad).all(), (rate, logps.grad)
        logps.grad = None


def test_on_policy_gradient_is_dr_grpo_advantage():
    """At R = 1 the gradient per token is −(r − r̂)·d log π: Dr. GRPO's advantage, the paper's equivalence."""
    logps, _, mask, correct, rate = random_batch(5)
    logps.requires_grad_(True)
    loss = nft_per_token_loss(logps, logps.detach(), mask, correct, rate, correct_rate_clip=0.0)
    loss.sum().backward()
    informative = ((rate > 0) & (rate < 1)).double()
    expected = -((correct - rate) * informative)[:, None].expand_as(logps)
    torch.testing.assert_close(logps.grad, expected)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(negative_clip=0.0), "negative_clip=0.0"),
        (dict(correct_rate_clip=0.5), "correct_rate_clip=0.5"),
        (dict(prompt_weighting="sqrt"), "prompt_weighting='sqrt'"),
        (dict(level="chunk"), "level='chunk'"),
    ],
)
def test_bad_arguments_name_field_and_value(kwargs, message):
    logps, old, mask, correct, rate = random_batch(0)
    with pytest.raises(ValueError, match=message):
        nft_per_token_loss(logps, old, mask, correct, rate, **kwargs)


def test_spread_sequence_loss_adds_up_to_each_sequence_once():
    from trl_nft.loss import spread_sequence_loss

    sequence_loss = torch.tensor([[2.0], [-3.0], [0.5]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.float64)
    spread = spread_sequence_loss(sequence_loss, mask)
    torch.testing.assert_close(spread.sum(-1, keepdim=True), sequence_loss)
    assert torch.all(spread[mask == 0] == 0)
    empty = spread_sequence_loss(sequence_loss[:1], torch.zeros(1, 4, dtype=torch.float64))
    assert torch.all(empty == 0)  # a completion with no counted token contributes nothing (and no NaN)


def nft_config_loss_defaults() -> dict:
    from trl_nft import NFTConfig

    fields = NFTConfig.__dataclass_fields__
    names = ("neg_weight", "prompt_weighting", "negative_clip", "positive_clip", "correct_rate_clip", "max_log_ratio")
    return dict({name: fields[name].default for name in names}, level=fields["importance_sampling_level"].default)


@pytest.mark.parametrize("function", [nft_loss_terms, nft_per_token_loss, nft_log_ratio])
def test_keyword_defaults_are_nft_configs(function):
    """Called directly, the loss functions default to the paper's settings, the same as `NFTConfig`'s: the result
    with every keyword left out equals the one with NFTConfig's values spelled out. The batch is off-policy with one
    log-ratio above the cap of 10 and ratios on both sides of 1, so every default shows."""
    generator = torch.Generator().manual_seed(3)
    logps = torch.randn(4, 5, generator=generator) - 2
    old = logps + torch.randn(4, 5, generator=generator)
    old[0, 0] = logps[0, 0] - 10.5
    mask, correct, rate = torch.ones(4, 5), torch.tensor([1.0, 0, 0, 1]), torch.tensor([0.5, 0.5, 0.01, 0.99])
    config = nft_config_loss_defaults()
    if function is nft_log_ratio:
        defaulted = function(logps, old, mask)
        spelled = function(logps, old, mask, level=config["level"], max_log_ratio=config["max_log_ratio"])
    else:
        defaulted = function(logps, old, mask, correct, rate)
        spelled = function(logps, old, mask, correct, rate, **config)
    for got, want in zip(defaulted if isinstance(defaulted, tuple) else [defaulted],
                         spelled if isinstance(spelled, tuple) else [spelled]):
        assert torch.equal(got, want)


def test_a_very_unlikely_correct_token_keeps_a_finite_positive_term():
    """Without a positive floor the positive term uses log R directly: exp(−200) underflows to 0, log R does not."""
    logps, old = torch.tensor([[-200.0, -1.0]]), torch.zeros(1, 2)
    loss = nft_per_token_loss(logps, old, torch.ones(1, 2), torch.tensor([1.0]), torch.tensor([0.5]),
                              prompt_weighting="none", positive_clip=0.0)
    assert loss.tolist() == [[200.0, 1.0]]
