"""How many prompts each dynamic-sampling round generates: the paper's fixed factors, or sized from an estimate.

Fixed (the paper): the first round generates `first_round_oversample` × the groups still needed (× the whole batch
when nothing was carried over; the official runs use 3: `gen_batch_size` 1,536 = 3 × 512, NVlabs/NFT `train_7B.sh`
lines 26-27), every refill round `oversample` × the batch's groups, whatever is still missing.

Adaptive: a round generates margin × missing / p̂ prompts, where p̂ is a running estimate of the informative fraction,
so that the batch fills in about one round with little surplus. It never generates more than the fixed rule's
largest round, nor fewer than the groups still missing. Before any estimate exists the fixed rule is used.

The estimate is a pair of decayed counts (groups generated, informative groups) kept in a plain dict, so that it
is saved with the rest of the dynamic-sampling state and identical on every process.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Per generation batch: the estimate weighs about the last three batches, so it follows the drift of the informative
# fraction as the policy learns without jumping with one batch's noise.
ESTIMATE_DECAY = 0.7


def new_estimate() -> dict:
    return {"groups": 0.0, "informative": 0.0}


def start_batch(estimate: dict) -> None:
    estimate["groups"] *= ESTIMATE_DECAY
    estimate["informative"] *= ESTIMATE_DECAY


def record_round(estimate: dict, groups: int, informative: int) -> None:
    estimate["groups"] += groups
    estimate["informative"] += informative


def informative_fraction(estimate: dict) -> float | None:
    """p̂, or None before the first round."""
    return estimate["informative"] / estimate["groups"] if estimate["groups"] > 0 else None


@dataclass(frozen=True)
class RoundSizing:
    batch_groups: int  # groups (= prompts) one generation batch trains on
    first_round_oversample: int
    oversample: int
    adaptive: bool = False
    margin: float = 1.2
    granularity: int = 1  # round sizes are multiples of this, so that every process gets the same number of rows

    @property
    def largest_round(self) -> int:
        return max(self.first_round_oversample, self.oversample) * self.batch_groups

    def prompts(self, round_index: int, missing_groups: int, fraction: float | None) -> int:
        """Prompts to generate in round `round_index` (0 = first) when `missing_groups` groups are still missing."""
        if missing_groups <= 0:
            return 0
        if self.adaptive and fraction is not None:
            wanted = self.largest_round if fraction <= 0 else math.ceil(self.margin * missing_groups / fraction)
            count = min(max(wanted, missing_groups), self.largest_round)
        elif round_index == 0:
            count = self.first_round_oversample * missing_groups
        else:
            count = self.oversample * self.batch_groups
        return math.ceil(count / self.granularity) * self.granularity
