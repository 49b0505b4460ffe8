"""Checkpointing what TRL keeps between the optimizer steps of one generation batch, so a resumed run continues it.

`GRPOTrainer` generates once per `steps_per_generation × num_iterations` micro-steps, keeps the split batch in
`_buffered_inputs` and counts micro-steps in `_step`; neither is in a TRL/transformers checkpoint. A run resumed
from a checkpoint taken in the middle of a generation batch would therefore generate a new batch from the moved
policy (and shift every later generation), instead of training on the rest of the buffered one. This module writes
and reads one file per process (each process buffers its own slice) holding:

- ``step``: TRL's micro-step counter `_step`;
- ``buffered_inputs``: the buffered micro-batches (tensors moved to CPU);
- ``dynamic_sampling_state``: the trainer's `_dynamic_sampling_state` (refill draw counter, carried-over groups).
"""

from __future__ import annotations

import os

import torch
from accelerate.utils import send_to_device

STATE_FILE = "nft_generation_state_rank{rank}.pt"
FORMAT_VERSION = 1


def state_path(checkpoint_dir: str, rank: int) -> str:
    return os.path.join(checkpoint_dir, STATE_FILE.format(rank=rank))


def save_generation_state(checkpoint_dir: str, rank: int, world_size: int, step: int, buffered_inputs,
                          dynamic_sampling_state) -> str:
    """Write this process's generation state into `checkpoint_dir`; returns the file written."""
    os.makedirs(checkpoint_dir, exist_ok=True)
    path = state_path(checkpoint_dir, rank)
    payload = {
        "format_version": FORMAT_VERSION,
        "world_size": world_size,
        "step": step,
        "buffered_inputs": send_to_device(buffered_inputs, "cpu"),
        "dynamic_sampling_state": send_to_device(dynamic_sampling_state, "cpu"),
    }
    temporary = f"{path}.tmp"
    torch.save(payload, temporary)
    os.replace(temporary, path)  # a kill while writing leaves no half-written state behind
    return path


def load_generation_state(checkpoint_dir: str, rank: int, world_size: int, device) -> dict | None:
    """This process's saved generation state (buffered tensors on `device`); None if the checkpoint has none.

    Raises ValueError when the checkpoint was written by a different number of processes: each process buffered
    its own slice of the batch, so the buffers cannot be redistributed.
    """
    path = state_path(checkpoint_dir, rank)
    if not os.path.isfile(path):
        return None
    # Written by `save_generation_state` into the user's own checkpoint: plain Python containers and tensors.
    payload = torch.load(path, map_location="cpu", weights_only=False)
    if payload.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: unknown generation-state format {payload.get('format_version')!r}")
    if payload["world_size"] != world_size:
        raise ValueError(
            f"{path} was written by {payload['world_size']} processes, this run has {world_size}: resume with "
            f"{payload['world_size']} processes, or delete the nft_generation_state_rank*.pt files to start a fresh "
            "generation batch at the checkpoint"
        )
    payload["buffered_inputs"] = send_to_device(payload["buffered_inputs"], device)  # dynamic sampling's stays on CPU
    return payload
