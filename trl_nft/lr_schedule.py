"""A learning-rate schedule paced by generation batches (rollout steps), as verl paces the official NFT runs.

verl steps its scheduler once after each rollout step's policy update (NVlabs/NFT `fsdp_workers.py:462`), so its
warm-up `lr × min(1, k / 10)` holds the learning rate constant over the optimizer steps of rollout step k. The
transformers Trainer steps its scheduler after every optimizer step; `paced_by_generation` wraps the schedule the
Trainer built for the run's length in generation batches so that the Trainer's per-optimizer-step `step()` calls
advance it once every `optimizer_steps_per_generation` calls. Its state is the Trainer's optimizer-step count, so a
run resumed from a checkpoint continues the same schedule.
"""

from __future__ import annotations

import math

from torch.optim.lr_scheduler import LambdaLR, LRScheduler


def generation_batches(num_training_steps: int, optimizer_steps_per_generation: int) -> int:
    """The run's length in generation batches (the last one may be cut short by `max_steps`)."""
    return math.ceil(num_training_steps / optimizer_steps_per_generation)


def paced_by_generation(scheduler: LRScheduler, optimizer_steps_per_generation: int) -> LambdaLR:
    """`scheduler`'s multipliers, read at generation batch (optimizer step // `optimizer_steps_per_generation`)."""
    if not isinstance(scheduler, LambdaLR):
        raise ValueError(
            f"lr_scheduler_per_generation=True needs a multiplicative schedule (LambdaLR); the configured "
            f"lr_scheduler_type gives {type(scheduler).__name__}"
        )
    if optimizer_steps_per_generation < 1:
        raise ValueError(f"optimizer_steps_per_generation={optimizer_steps_per_generation!r} must be >= 1")

    def at_generation_batch(multiplier):
        return lambda optimizer_step: multiplier(optimizer_step // optimizer_steps_per_generation)

    # The optimizer's param groups keep `initial_lr` from the wrapped scheduler: the base learning rates are the same.
    return LambdaLR(scheduler.optimizer, [at_generation_batch(multiplier) for multiplier in scheduler.lr_lambdas])
