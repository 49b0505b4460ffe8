"""Round sizes of dynamic sampling: the paper's fixed factors, the official first round, the adaptive rule."""

from __future__ import annotations

import pytest

from trl_nft.dynamic_sampling import round_sizing
from trl_nft.dynamic_sampling.round_sizing import RoundSizing


def test_fixed_rule_is_the_papers():
    paper = RoundSizing(batch_groups=512, first_round_oversample=1, oversample=3)
    assert [paper.prompts(r, missing, None) for r, missing in [(0, 512), (1, 300), (2, 1)]] == [512, 1536, 1536]
    official = RoundSizing(batch_groups=512, first_round_oversample=3, oversample=3)
    assert official.prompts(0, 512, 0.9) == 1536  # gen_batch_size = 3 x 512, whatever the estimate
    assert official.prompts(0, 200, None) == 600  # 312 groups came carried over: 3 x the 200 still missing


def test_adaptive_rule_aims_at_the_missing_groups_with_a_margin():
    sizing = RoundSizing(batch_groups=512, first_round_oversample=1, oversample=3, adaptive=True, margin=1.2)
    assert sizing.prompts(0, 512, None) == 512  # no estimate yet: the fixed rule
    assert sizing.prompts(0, 512, 0.8) == 768  # ceil(1.2 * 512 / 0.8)
    assert sizing.prompts(1, 10, 0.5) == 24
    assert sizing.prompts(1, 10, 0.001) == 1536  # capped at the fixed rule's largest round
    assert sizing.prompts(1, 10, 0.0) == 1536
    assert sizing.prompts(1, 10, 1.0) == 12
    assert sizing.prompts(0, 0, 0.5) == 0  # carried groups filled the batch: nothing to generate


def test_round_sizes_split_evenly_over_processes():
    sizing = RoundSizing(batch_groups=6, first_round_oversample=1, oversample=3, adaptive=True, granularity=4)
    assert sizing.prompts(1, 5, 0.9) == 8  # ceil(1.2 * 5 / 0.9) = 7 -> 8


def test_estimate_follows_recent_batches():
    estimate = round_sizing.new_estimate()
    assert round_sizing.informative_fraction(estimate) is None
    round_sizing.record_round(estimate, groups=100, informative=20)
    for _ in range(20):
        round_sizing.start_batch(estimate)
        round_sizing.record_round(estimate, groups=100, informative=80)
    assert round_sizing.informative_fraction(estimate) == pytest.approx(0.8, abs=1e-3)


def test_nothing_missing_asks_for_no_prompts_in_any_round():
    sizing = RoundSizing(batch_groups=8, first_round_oversample=3, oversample=3)
    assert [sizing.prompts(r, 0, None) for r in range(3)] == [0, 0, 0]


def test_a_fresh_estimate_starts_empty_and_survives_decay_below_one_group():
    estimate = round_sizing.new_estimate()
    assert round_sizing.informative_fraction(estimate) is None
    round_sizing.record_round(estimate, groups=4, informative=1)
    assert round_sizing.informative_fraction(estimate) == 0.25
    for _ in range(5):  # 4 x 0.7^5 < 1 group of weight left: still an estimate
        round_sizing.start_batch(estimate)
    assert estimate["groups"] < 1 and round_sizing.informative_fraction(estimate) == pytest.approx(0.25)
