"""The NFT objective (arXiv 2505.18116, Eq. 10) as a pure tensor function.

    loss = - ω(q) [ r · log R  +  (1 − r) · λ · log max_v( (1 − r̂ R) / (1 − r̂), ε ) ]

R is the ratio π_θ/π_old (per token, or for the whole sequence), r the correctness of a completion, r̂ the correct
rate of its group, λ = ``neg_weight`` and ``max_v`` a straight-through clamp: its forward value is max(x, ε) but its
gradient is that of x. Everything here is stateless so it can be checked against the formula line by line.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

PROMPT_WEIGHTINGS = ("none", "dr_grpo", "grpo")
LEVELS = ("token", "sequence")


def log_of_straight_through_max(value: torch.Tensor, floor: float) -> torch.Tensor:
    """``log(max_v(value, floor))``: forward log(max(value, floor)), gradient d(value) / max(value, floor).

    The forward part is detached and the gradient part is ``(value - value.detach()) / max(value, floor)``, whose
    forward value is exactly zero; so the result stays finite however small ``value`` gets.
    """
    clamped = value.clamp(min=floor) if floor > 0 else value
    clamped = clamped.detach()
    return torch.log(clamped) + (value - value.detach()) / clamped


def prompt_weight(correct_rate: torch.Tensor, prompt_weighting: str) -> torch.Tensor:
    """ω(q) from the (already clipped) group correct rate r̂."""
    if prompt_weighting == "none":
        return torch.ones_like(correct_rate)
    if prompt_weighting == "dr_grpo":
        return 1.0 - correct_rate
    if prompt_weighting == "grpo":
        return torch.sqrt((1.0 - correct_rate) / correct_rate)
    raise ValueError(f"prompt_weighting={prompt_weighting!r} is not one of {PROMPT_WEIGHTINGS}")


def nft_log_ratio(
    per_token_logps: torch.Tensor,
    old_per_token_logps: torch.Tensor,
    mask: torch.Tensor,
    level: str = "token",
    max_log_ratio: float = 10.0,
) -> torch.Tensor:
    """log R capped at ``max_log_ratio``: (B, T) at token level, (B, 1) at sequence level (Eq. 9: Σ_t over the mask)."""
    log_ratio = per_token_logps - old_per_token_logps
    if level == "token":
        pass
    elif level == "sequence":
        log_ratio = (log_ratio * mask).sum(dim=-1, keepdim=True)
    else:
        raise ValueError(f"level={level!r} is not one of {LEVELS}")
    return log_ratio.clamp(max=max_log_ratio)


class NFTLossTerms(NamedTuple):
    """The per-token NFT loss split as ``loss = positive + negative``, with the ratios it was computed from.

    ``positive`` = −ω·r·log max_v(R, ·) and ``negative`` = −ω·(1 − r)·λ·log max_v((1 − r̂R)/(1 − r̂), ε), both already
    zero on degenerate rows; ``ratio`` is R and ``negative_ratio`` the unclamped (1 − r̂R)/(1 − r̂). (B, T) at token
    level, (B, 1) at sequence level. Metrics read these instead of recomputing the loss.
    """

    positive: torch.Tensor
    negative: torch.Tensor
    ratio: torch.Tensor
    negative_ratio: torch.Tensor

    @property
    def loss(self) -> torch.Tensor:
        return self.positive + self.negative


def nft_loss_terms(
    per_token_logps: torch.Tensor,
    old_per_token_logps: torch.Tensor,
    mask: torch.Tensor,
    correct: torch.Tensor,
    correct_rate: torch.Tensor,
    *,
    neg_weight: float = 1.0,
    prompt_weighting: str = "dr_grpo",
    level: str = "token",
    negative_clip: float = 1.0,
    positive_clip: float = 0.0,
    correct_rate_clip: float = 0.02,
    max_log_ratio: float = 10.0,
) -> NFTLossTerms:
    """The NFT loss as its positive and negative terms (`NFTLossTerms`); arguments as in `nft_per_token_loss`."""
    if negative_clip <= 0:
        raise ValueError(f"negative_clip={negative_clip!r} must be > 0 (log of the negative ratio needs a floor)")
    if not 0.0 <= correct_rate_clip < 0.5:
        raise ValueError(f"correct_rate_clip={correct_rate_clip!r} must lie in [0, 0.5)")

    log_ratio = nft_log_ratio(per_token_logps, old_per_token_logps, mask, level, max_log_ratio)
    ratio = torch.exp(log_ratio)

    correct = correct.to(log_ratio.dtype).unsqueeze(-1)
    rate = correct_rate.to(log_ratio.dtype)
    informative = ((rate > 0) & (rate < 1)).to(log_ratio.dtype).unsqueeze(-1)
    rate = rate.clamp(correct_rate_clip, 1.0 - correct_rate_clip).unsqueeze(-1)
    # A degenerate row has rate 1 after clamping when correct_rate_clip == 0; keep its (discarded) arithmetic finite.
    safe_rate = torch.where(informative.bool(), rate, torch.full_like(rate, 0.5))

    if positive_clip > 0:
        positive_log = log_of_straight_through_max(ratio, positive_clip)
    else:
        positive_log = log_ratio  # log max_v(R, 0) = log R, computed without the exp round trip
    negative_ratio = (1.0 - safe_rate * ratio) / (1.0 - safe_rate)
    negative_log = log_of_straight_through_max(negative_ratio, negative_clip)

    # One (B, 1) factor per term: −ω·r for the positive log, −ω·(1 − r)·λ for the negative one.
    weight = -prompt_weight(safe_rate, prompt_weighting) * informative
    return NFTLossTerms(
        positive=positive_log * (weight * correct),
        negative=negative_log * (weight * (1.0 - correct) * neg_weight),
        ratio=ratio,
        negative_ratio=negative_ratio,
    )


def nft_per_token_loss(
    per_token_logps: torch.Tensor,
    old_per_token_logps: torch.Tensor,
    mask: torch.Tensor,
    correct: torch.Tensor,
    correct_rate: torch.Tensor,
    *,
    neg_weight: float = 1.0,
    prompt_weighting: str = "dr_grpo",
    level: str = "token",
    negative_clip: float = 1.0,
    positive_clip: float = 0.0,
    correct_rate_clip: float = 0.02,
    max_log_ratio: float = 10.0,
) -> torch.Tensor:
    """Per-token NFT loss, not yet masked nor aggregated (the caller multiplies by ``mask`` and reduces).

    Args:
        per_token_logps: log π_θ of each completion token, (B, T), with gradient.
        old_per_token_logps: log π_old of the same tokens, (B, T); the sampling policy.
        mask: 1 for completion tokens that count, 0 for padding, (B, T). Used for the sequence-level ratio.
        correct: correctness r ∈ [0, 1] of each completion, (B,). Fractional values act as soft labels.
        correct_rate: r̂, the mean of ``correct`` over the completion's group, (B,).
        neg_weight: λ, weight of the negative (incorrect-answer) term. 1.0 = NFT, 0.0 = RFT.
        prompt_weighting: ω(q): "none" → 1, "dr_grpo" → 1 − r̂, "grpo" → sqrt((1 − r̂) / r̂).
        level: "token" → one ratio per token; "sequence" → exp(Σ_t log-ratio), returned as (B, 1).
        negative_clip: ε of the straight-through floor of the negative ratio (1 − r̂R)/(1 − r̂); must be > 0.
        positive_clip: straight-through floor of the positive ratio R (0.0 = no floor).
        correct_rate_clip: r̂ is clipped to [c, 1 − c] inside the loss.
        max_log_ratio: log R is capped at this value before exp.

    Returns:
        (B, T) for token level, (B, 1) for sequence level. Rows whose unclipped ``correct_rate`` is ≤ 0 or ≥ 1 (the
        group is all wrong or all right, so it carries no signal) are exactly zero with zero gradient.
    """
    return nft_loss_terms(
        per_token_logps, old_per_token_logps, mask, correct, correct_rate, neg_weight=neg_weight,
        prompt_weighting=prompt_weighting, level=level, negative_clip=negative_clip, positive_clip=positive_clip,
        correct_rate_clip=correct_rate_clip, max_log_ratio=max_log_ratio,
    ).loss


def spread_sequence_loss(sequence_loss: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, 1) sequence losses as (B, T) token values that add up to each sequence's loss exactly once.

    Eq. 9 sums sequence losses, one per completion. TRL's aggregations sum token values; broadcasting L_i over
    |o_i| tokens would weigh it by its length. Spreading L_i / |o_i| over the completion tokens makes every
    aggregation see L_i where a token-level loss has Σ_t ℓ_t, so on-policy both levels give the same gradient.
    """
    return sequence_loss * mask / mask.sum(dim=-1, keepdim=True).clamp(min=1.0)


def loss_token_mask(batch: dict) -> torch.Tensor:
    """Completion tokens that count in the loss: TRL's completion mask, without tool-output tokens when present."""
    if "tool_mask" in batch:
        return batch["completion_mask"] * batch["tool_mask"]
    return batch["completion_mask"]


__all__ = [
    "LEVELS",
    "NFTLossTerms",
    "PROMPT_WEIGHTINGS",
    "log_of_straight_through_max",
    "loss_token_mask",
    "nft_loss_terms",
    "nft_log_ratio",
    "nft_per_token_loss",
    "prompt_weight",
    "spread_sequence_loss",
]
