"""Dynamic sampling's row plumbing (DAPO-style, as in the official NFT runs), free of trainer state.

A group is informative when its correct rate r̂ is strictly between 0 and 1; others give NFT zero gradient. The
trainer (`trl_nft.dynamic_sampling.mixin`) generates rounds of completions and keeps informative groups until it
has as many groups as one normal generation batch. These helpers move rows:

* rows of a round are gathered from every process (a group may straddle two ranks), so that every rank sees the
  same global batch and makes the same selection;
* rounds are concatenated with the right padding side per tensor (prompts left-padded, completions right-padded);
* the final global batch is cut back into equal, row-aligned slices, one per process.
"""

from __future__ import annotations

import torch

# Output keys of GRPOTrainer._generate_and_score_completions and how each is padded along dim 1.
LEFT_PADDED = {"prompt_ids", "prompt_mask"}
RIGHT_PADDED = {
    "completion_ids",
    "completion_mask",
    "old_per_token_logps",
    "ref_per_token_logps",
    "sampling_per_token_logps",
    "importance_sampling_ratio",
    "tool_mask",
}
PER_ROW = {"advantages", "correct", "correct_rate"}
RECOMPUTED = {"num_items_in_batch"}
SUPPORTED_KEYS = LEFT_PADDED | RIGHT_PADDED | PER_ROW | RECOMPUTED


def check_supported(batch: dict) -> None:
    """Dynamic sampling regroups rows across processes; multimodal side inputs are not row tensors it can move."""
    unsupported = sorted(set(batch) - SUPPORTED_KEYS)
    if unsupported:
        raise ValueError(f"dynamic_sampling=True does not support batches with {unsupported} (e.g. images)")


def pad_value(key: str, pad_token_id: int) -> float:
    if key in ("prompt_ids", "completion_ids"):
        return pad_token_id
    if key == "tool_mask":
        return 1  # TRL pads tool masks with 1; the completion mask already zeroes padding
    return 0


def pad_to_length(tensor: torch.Tensor, length: int, value: float, left: bool) -> torch.Tensor:
    missing = length - tensor.size(1)
    if missing <= 0:
        return tensor
    padding = tensor.new_full((tensor.size(0), missing, *tensor.shape[2:]), value)
    return torch.cat([padding, tensor] if left else [tensor, padding], dim=1)


def concat_batches(batches: list[dict], pad_token_id: int) -> dict:
    """Concatenate row batches of differing sequence lengths, padding each key on its own side."""
    merged = {}
    for key in batches[0]:
        if key in RECOMPUTED:
            continue
        tensors = [batch[key] for batch in batches]
        if key in LEFT_PADDED or key in RIGHT_PADDED:
            length = max(t.size(1) for t in tensors)
            tensors = [pad_to_length(t, length, pad_value(key, pad_token_id), key in LEFT_PADDED) for t in tensors]
        merged[key] = torch.cat(tensors, dim=0)
    return merged


def gather_rows(accelerator, batch: dict, pad_token_id: int) -> dict:
    """Every process's rows, in process order (TRL's group order), on every process."""
    gathered = {}
    for key, tensor in batch.items():
        if key in RECOMPUTED:
            continue
        if key in LEFT_PADDED or key in RIGHT_PADDED:
            tensor = accelerator.pad_across_processes(
                tensor.contiguous(), dim=1, pad_index=pad_value(key, pad_token_id), pad_first=key in LEFT_PADDED
            )
        gathered[key] = accelerator.gather(tensor.contiguous())
    return gathered


def take_rows(batch: dict, rows: torch.Tensor | slice) -> dict:
    return {key: tensor[rows] for key, tensor in batch.items() if key not in RECOMPUTED}


def group_rows(group_indices: list[int], group_size: int) -> torch.Tensor:
    """Row indices of the given groups, in the order given."""
    if not group_indices:
        return torch.zeros(0, dtype=torch.long)
    groups = torch.tensor(group_indices, dtype=torch.long)
    return (groups[:, None] * group_size + torch.arange(group_size)[None, :]).flatten()


def local_slice(total_rows: int, process_index: int, num_processes: int) -> slice:
    if total_rows % num_processes:
        raise ValueError(f"{total_rows} rows cannot be split evenly over {num_processes} processes")
    per_process = total_rows // num_processes
    return slice(process_index * per_process, (process_index + 1) * per_process)
