"""From TRL's gathered reward matrix to NFT labels: thresholds, soft labels, unscorable completions, errors."""

from __future__ import annotations

import math

import pytest
import torch

from trl_nft.labels import correctness_from_rewards

NAN = math.nan


def labels(rewards, weights=(1.0,), group=4, threshold=None, names=("verifier",)):
    return correctness_from_rewards(torch.tensor(rewards, dtype=torch.float32), torch.tensor(weights), group,
                                    reward_func_names=list(names), reward_threshold=threshold)


def test_binary_rewards_give_group_rates_and_degenerate_flags():
    out = labels([[1], [0], [0], [0], [1], [1], [1], [1], [0], [0], [0], [0]])
    assert out.correct.tolist() == [1, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0]
    assert out.group_correct_rate.tolist() == [0.25, 1.0, 0.0]
    assert out.degenerate_groups.tolist() == [False, True, True]
    assert out.loss_correct_rate.tolist() == [0.25] * 4 + [1.0] * 4 + [0.0] * 4


def test_soft_labels_are_kept():
    out = labels([[0.5], [0.0], [1.0], [0.25]])
    assert out.correct.tolist() == [0.5, 0.0, 1.0, 0.25]
    assert out.group_correct_rate.item() == pytest.approx(0.4375)


def test_threshold_turns_signed_or_shaped_rewards_into_labels():
    out = labels([[1.0], [-1.0], [-1.0], [0.2]], threshold=0.0)
    assert out.correct.tolist() == [1, 0, 0, 1]
    assert out.group_correct_rate.item() == 0.5


def test_unscorable_completions_are_left_out_of_the_rate_and_get_zero_loss():
    out = labels([[1, NAN], [NAN, NAN], [0, 0], [NAN, 1]], weights=(0.5, 0.5), names=("a", "b"))
    # scores: 0.5, unscorable, 0, 0.5 → rate over the three scorable ones
    assert out.group_correct_rate.item() == pytest.approx(1 / 3)
    assert out.loss_correct_rate[1].item() == 0.0  # degenerate for the loss → exactly zero
    assert out.correct[1].item() == 0.0
    all_none = labels([[NAN]] * 4)
    assert all_none.degenerate_groups.tolist() == [True] and math.isnan(all_none.group_correct_rate.item())


def test_out_of_range_reward_names_the_function_and_value():
    with pytest.raises(ValueError, match=r"reward function 'format' returned 2\.0"):
        labels([[1, 2.0], [0, 0], [0, 0], [0, 0]], weights=(1.0, 1.0), names=("acc", "format"))
    with pytest.raises(ValueError, match=r"weighted sum of rewards \['acc', 'format'\]"):
        labels([[1, 1], [0, 0], [0, 0], [0, 0]], weights=(1.0, 1.0), names=("acc", "format"))


def test_groups_must_be_whole():
    with pytest.raises(ValueError, match="groups of 4"):
        labels([[1]] * 6)


def test_out_of_range_error_says_how_to_choose_a_threshold():
    """A GRPO setup with a reward model, ±1 or shaped rewards gets an error that says how to pick reward_threshold,
    on the scale of the scores it saw."""
    with pytest.raises(ValueError) as error:
        labels([[2.5], [-1.25], [0.5], [0.0]], names=("reward-model",))
    message = str(error.value)
    assert "range from -1.25 to 2.5" in message
    assert "NFTConfig.reward_threshold" in message and "--reward_threshold" in message
    for case in ("0.0 for +-1 rewards", "for a reward model", "for shaped rewards"):
        assert case in message


def test_a_zero_weight_reward_is_logged_but_not_checked():
    """A shaped term kept with weight 0 (only to be logged) may lie outside [0, 1]: it is not part of the label."""
    out = labels([[1, -0.5], [0, 2.0], [1, 0.0], [0, 0.0]], weights=(1.0, 0.0), names=("correct", "format"))
    assert out.correct.tolist() == [1, 0, 1, 0]


# ------------------------------------------------------------------ edges found by mutation testing
def test_the_group_error_counts_completions():
    with pytest.raises(ValueError, match="6 completions do not split into groups of 4"):
        labels([[1, 0]] * 6, weights=(0.5, 0.5), names=("a", "b"))


def test_a_score_at_the_threshold_is_correct():
    assert labels([[0.5], [0.4], [0.6], [0.5]], threshold=0.5).correct.tolist() == [1, 0, 1, 1]


def test_a_sum_within_rounding_of_one_is_accepted_and_clipped_to_one():
    """Weights summing to 1 up to float error give sums a hair above 1: accepted up to 1 + 1e-6, labelled 1."""
    rewards = torch.tensor([[1.0], [0.0], [1.0], [0.0]], dtype=torch.float64)
    out = correctness_from_rewards(rewards, torch.tensor([1 + 1e-6], dtype=torch.float64), 4,
                                   reward_func_names=["verifier"])
    assert out.correct.tolist() == [1.0, 0.0, 1.0, 0.0]
    assert out.group_correct_rate.item() == 0.5


def test_a_zero_weight_reward_does_not_stop_the_check_of_the_next_one():
    with pytest.raises(ValueError, match="reward function 'verifier' returned 2.0"):
        labels([[5.0, 2.0], [0, 0], [0, 0], [0, 0]], weights=(0.0, 1.0), names=("logged_only", "verifier"))


def test_the_range_in_the_errors_leaves_unscorable_completions_out():
    with pytest.raises(ValueError, match=r"range from 0.5 to 2\)"):
        labels([[NAN], [0.5], [2.0], [0.5]])
    with pytest.raises(ValueError, match="range from 0.8 to 1.6"):
        labels([[1, 1], [0.5, 0.5], [NAN, NAN], [1, 1]], weights=(0.8, 0.8), names=("a", "b"))
