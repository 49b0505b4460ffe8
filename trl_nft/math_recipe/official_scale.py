"""The official NFT run's loss scale, and the `max_grad_norm` that clips as strongly as its `grad_clip` did.

The official implementation (NVlabs/NFT `dp_actor.py`, token level) sums each sequence's token losses and divides by
a fixed 1000, sums those over the sequences a rank holds in the mini-batch (no division by micro-batches:
`use_dynamic_bsz=True`, `bugged_dynamic_scale=0`), and FSDP averages gradients over its data-parallel groups
(GPUs / Ulysses sequence-parallel size: the ranks of one group share its sequences):

    official loss = Σ_sequences Σ_t ℓ_t / (1000 · official_world_size)

`loss_type="dr_grpo"` (ours, and TRL's) divides the same sum by sequences_per_step · max_completion_length,
whatever the number of processes. Both give the same direction, so AdamW takes the same steps, but gradient clipping
compares the norm with a fixed threshold: to clip as the official run did, divide its threshold by the scale ratio.
AdamW is scale-invariant except for its ε (update = m / (sqrt(v) + ε)): with gradients F times smaller, ε must be F
times smaller too, or every update is damped as if the official run had used an ε F times larger.
"""

from __future__ import annotations

OFFICIAL_SEQUENCE_DIVISOR = 1000.0  # dp_actor.py: torch.sum(pg_losses * response_mask, dim=1) / 1000.0
# Data-parallel groups of the official runs. NVlabs/NFT README: 7B on 4×8 H100s, 32B on 16×8 H100s; train_32B.sh:68
# sp_size=8, and fsdp_workers.py:109,136 split the mini-batch over world_size // sp_size groups: 128 / 8 = 16.
OFFICIAL_WORLD_SIZES = {"7b": 32, "32b": 16}
# The paper's text trains 7B on 64 GPUs, which would halve the official loss (and double our factor): see
# docs/paper_recipes.md "Recipe audit". The official scripts' numbers (README, train_*.sh) are the ones used.
OFFICIAL_ADAM_EPSILON = 1e-8  # fsdp_workers.py:293-296 builds torch.optim.AdamW without eps: torch's default 1e-8


def official_loss_scale(sequences_per_step: int, max_completion_length: int, official_world_size: int) -> float:
    """F such that the official run's gradient = F × the `dr_grpo` gradient of the same optimizer step."""
    for name, value in (("sequences_per_step", sequences_per_step), ("max_completion_length", max_completion_length),
                        ("official_world_size", official_world_size)):
        if not value > 0:
            raise ValueError(f"{name}={value!r} must be > 0")
    return sequences_per_step * max_completion_length / (OFFICIAL_SEQUENCE_DIVISOR * official_world_size)


def equivalent_max_grad_norm(
    official_grad_clip: float, sequences_per_step: int, max_completion_length: int, official_world_size: int
) -> float:
    """`max_grad_norm` for `loss_type="dr_grpo"` that clips exactly when the official run's `grad_clip` would.

    7B recipe: 1.0 / (512 sequences × 3584 tokens / (1000 × 32 ranks)) = 1.0 / 57.34 = 0.01744.
    """
    return official_grad_clip / official_loss_scale(sequences_per_step, max_completion_length, official_world_size)


def equivalent_adam_epsilon(
    sequences_per_step: int, max_completion_length: int, official_world_size: int,
    official_adam_epsilon: float = OFFICIAL_ADAM_EPSILON,
) -> float:
    """`adam_epsilon` for `loss_type="dr_grpo"` with which every AdamW update equals the official run's.

    AdamW's update m / (sqrt(v) + ε) is unchanged when the gradient and ε are divided by the same factor, so ε is
    divided by the factor `max_grad_norm` is divided by. 7B recipe: 1e-8 / 57.34 = 1.744e-10.
    """
    return official_adam_epsilon / official_loss_scale(sequences_per_step, max_completion_length, official_world_size)
