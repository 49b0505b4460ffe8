"""The order of a generation batch's rows when every optimizer step must train whole groups (`keep_groups_together`).

TRL shuffles a process's share of the generation batch row by row and cuts it into `steps_per_generation`
micro-batches, so a prompt's group is spread over all the optimizer steps of that batch. Here whole groups are
shuffled instead. The unit of the shuffle is a *slot*: gcd(group size, rows per process) consecutive rows, which
always lie inside one group (groups and process shares are both contiguous in TRL's layout). Every process draws the
same permutation of slot indices (same seed), so the parts of a group that live on different processes land in the
same optimizer step.

This only works when an optimizer step can hold whole groups; `check_whole_group_layout` says when, in terms of the
config fields, and is what both `NFTConfig` and the trainer call.
"""

from __future__ import annotations

import math

import torch


def check_whole_group_layout(
    *, group_size: int, per_device_batch: int, steps_per_generation: int, gradient_accumulation_steps: int
) -> None:
    """Raise a `ValueError` naming the fields when some optimizer step would train part of a group.

    An optimizer step trains `gradient_accumulation_steps` consecutive micro-batches of the buffered generation batch
    (cycling through it `num_iterations` times). Its micro-batches are an aligned block of the buffer when
    `steps_per_generation` is a multiple of `gradient_accumulation_steps`, and whole passes over it when it is a
    divisor; otherwise the blocks shift from pass to pass and no order can keep groups whole. When a step covers
    less than the whole buffer, each process's rows per step must be whole groups: a group split between two
    processes would need its two parts in the same step on both, which a process holding whole groups next to it
    cannot provide.
    """
    spg, accumulation = steps_per_generation, gradient_accumulation_steps
    if spg % accumulation and accumulation % spg:
        raise ValueError(
            f"keep_groups_together=True needs steps_per_generation ({spg}) to be a multiple or a divisor of "
            f"gradient_accumulation_steps ({accumulation}): otherwise optimizer steps cut generation batches at "
            "shifting places and some step trains part of a group"
        )
    rows_per_step = per_device_batch * accumulation
    if spg > accumulation and rows_per_step % group_size:
        raise ValueError(
            f"keep_groups_together=True needs per_device_train_batch_size x gradient_accumulation_steps "
            f"({per_device_batch} x {accumulation} = {rows_per_step}) to be a multiple of num_generations "
            f"({group_size}), so that each process's share of an optimizer step holds whole groups (or "
            f"steps_per_generation ({spg}) <= gradient_accumulation_steps, so that one step trains the whole batch)"
        )


def whole_group_order(local_rows: int, group_size: int, generator: torch.Generator) -> torch.Tensor:
    """A permutation of a process's `local_rows` rows that moves whole slots (see the module doc), never single rows.

    With `local_rows` a multiple of `group_size` a slot is one group. Called with generators seeded alike on every
    process, it returns the same slot permutation on each, so slot i of every process lands in the same place.
    """
    if local_rows < 1 or group_size < 1:
        raise ValueError(f"local_rows={local_rows} and group_size={group_size} must be >= 1")
    slot = math.gcd(group_size, local_rows)
    slot_order = torch.randperm(local_rows // slot, generator=generator)
    return (slot_order[:, None] * slot + torch.arange(slot)).flatten()


def generation_batch_generator(seed: int, micro_step: int) -> torch.Generator:
    """The generator for the generation batch that starts at `micro_step`: the same on every process, and the same
    again when a run resumes there, whatever else consumed the global random state."""
    generator = torch.Generator()
    generator.manual_seed(seed * 1_000_003 + micro_step)  # distinct per batch; a prime keeps seeds from colliding
    return generator
