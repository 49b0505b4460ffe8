"""`GRPOTrainer` warnings that are false for NFT: kept out of the log while TRL's constructor runs.

TRL warns that `importance_sampling_level="sequence"` with the `dr_grpo`, `bnpo` or `dapo` loss type weighs each
sequence by its completion length, and recommends `loss_type="grpo"`. That holds for GRPO's surrogate, which gives
every token of a sequence the sequence's loss. NFT instead spreads a sequence's loss over its tokens so that it is
counted once under every loss type (`trl_nft.loss.spread_sequence_loss`); `"grpo"` would then divide it by its
length, the opposite of what TRL's advice is for. Only this one message is dropped; every other TRL warning passes.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager

from trl import GRPOTrainer

# Two parts of TRL 1.16's message that together identify it (accelerate's logger may prefix it with the rank).
SEQUENCE_LEVEL_WARNING_START = "When using `importance_sampling_level='sequence'`, the "
SEQUENCE_LEVEL_WARNING_CLAIM = "effectively weights each sequence by its completion length"

SEQUENCE_LEVEL_NOTE = (
    "importance_sampling_level='sequence': NFT uses the whole-sequence ratio exp(sum_t log-ratio) (Eq. 9) and counts "
    "each sequence's loss once under every loss_type; on-policy its gradient equals the token level's."
)


def _is_false_for_nft(record: logging.LogRecord) -> bool:
    message = record.getMessage()
    return SEQUENCE_LEVEL_WARNING_START in message and SEQUENCE_LEVEL_WARNING_CLAIM in message


class _DropFalseForNFT(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not _is_false_for_nft(record)


@contextmanager
def without_warnings_false_for_nft():
    """Within the block, `GRPOTrainer`'s logger drops the warnings listed above (and nothing else)."""
    trl_logger = logging.getLogger(GRPOTrainer.__module__)
    drop = _DropFalseForNFT()
    trl_logger.addFilter(drop)
    try:
        yield
    finally:
        trl_logger.removeFilter(drop)
