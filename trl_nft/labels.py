"""From TRL's reward matrix to NFT's labels: correctness r per completion and correct rate r̂ per group."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class CorrectnessLabels:
    """Labels for every completion of a (gathered) generation batch, in TRL's group-contiguous order."""

    correct: torch.Tensor  # (N,) r ∈ [0, 1]; 0 for unscorable completions
    loss_correct_rate: torch.Tensor  # (N,) r̂ of the completion's group; 0 for unscorable ones, so their loss is 0
    group_correct_rate: torch.Tensor  # (N / G,) r̂ per group, NaN where no completion of the group was scorable
    degenerate_groups: torch.Tensor  # (N / G,) bool: r̂ ∈ {0, 1} or nothing scorable, i.e. no learning signal


def correctness_from_rewards(
    rewards_per_func: torch.Tensor,
    reward_weights: torch.Tensor,
    group_size: int,
    *,
    reward_func_names: list[str],
    reward_threshold: float | None = None,
) -> CorrectnessLabels:
    """Derive NFT labels from the gathered `(N, n_funcs)` rewards TRL computed (NaN where a function returned None).

    The weighted sum of a completion's rewards is its score, as in TRL. With `reward_threshold=None` the score must lie
    in [0, 1] and is the label itself (binary verifier = the paper; fractional = soft label); otherwise the label is
    `score >= reward_threshold`. Completions all of whose rewards are None are unscorable: excluded from r̂, zero loss.
    """
    if rewards_per_func.size(0) % group_size != 0:
        raise ValueError(f"{rewards_per_func.size(0)} completions do not split into groups of {group_size}")
    weights = reward_weights.to(rewards_per_func.device, rewards_per_func.dtype)
    scorable = ~torch.isnan(rewards_per_func).all(dim=1)
    scores = (rewards_per_func * weights).nansum(dim=1)

    if reward_threshold is None:
        _check_rewards_in_unit_interval(rewards_per_func, weights, scores, scorable, reward_func_names)
        correct = scores.clamp(0.0, 1.0)
    else:
        correct = (scores >= reward_threshold).to(scores.dtype)
    correct = torch.where(scorable, correct, torch.zeros_like(correct))

    grouped = torch.where(scorable, correct, torch.full_like(correct, float("nan"))).view(-1, group_size)
    group_rate = grouped.nanmean(dim=1)  # NaN when the whole group is unscorable
    degenerate = ~((group_rate > 0) & (group_rate < 1))
    per_completion_rate = group_rate.nan_to_num(0.0).repeat_interleave(group_size)
    loss_rate = torch.where(scorable, per_completion_rate, torch.zeros_like(per_completion_rate))
    return CorrectnessLabels(correct, loss_rate, group_rate, degenerate)


# How to choose `reward_threshold`, appended to the errors below (the docs' "Rewards that are not correctness labels").
THRESHOLD_HINT = (
    "set NFTConfig.reward_threshold (--reward_threshold): a completion is then correct iff the weighted sum of its "
    "rewards is >= the threshold, so pick it on that sum's scale: 0.0 for +-1 rewards; for a reward model, the score "
    "above which an answer counts as right (0.0 for the logit of a right-vs-wrong classifier); for shaped rewards "
    "(correctness plus format or length terms), the lowest sum a correct answer can get, which no wrong answer may "
    "reach (the correctness reward minus the most the other terms can take away). Or return correctness in [0, 1] "
    "(a 0/1 verifier is the paper's setting)."
)


def _check_rewards_in_unit_interval(rewards_per_func, weights, scores, scorable, reward_func_names):
    """Raise a ValueError naming the reward function and value when a label would fall outside [0, 1]."""
    for index, name in enumerate(reward_func_names):
        if weights[index] == 0:  # a function kept only for its logged metric does not enter the label
            continue
        column = rewards_per_func[:, index]
        bad = ~torch.isnan(column) & ((column < 0) | (column > 1))
        if bad.any():
            value = column[bad][0].item()
            raise ValueError(
                f"reward function {name!r} returned {value!r}, outside [0, 1] ({_score_range(scores, scorable)}). "
                f"NFT trains on correctness labels in [0, 1]: {THRESHOLD_HINT}"
            )
    bad = scorable & ((scores < 0) | (scores > 1 + 1e-6))
    if bad.any():
        raise ValueError(
            f"the weighted sum of rewards {reward_func_names} with weights {weights.tolist()} is "
            f"{scores[bad][0].item()!r}, outside [0, 1] ({_score_range(scores, scorable)}). Make the weights sum to "
            f"at most 1, or {THRESHOLD_HINT}"
        )


def _score_range(scores, scorable) -> str:
    """The range of the scorable weighted sums, to choose a threshold from (not empty when a reward is out of range)."""
    valid = scores[scorable]
    return f"this batch's weighted sums range from {valid.min().item():.4g} to {valid.max().item():.4g}"
