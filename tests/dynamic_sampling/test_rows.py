"""Dynamic sampling's row plumbing (`trl_nft.dynamic_sampling.rows`): padding sides and values, group rows, slices."""

from __future__ import annotations

import pytest
import torch

from trl_nft.dynamic_sampling import rows

PAD = 9


def round_batch(prompt_width, completion_width, first_row):
    """Two rows of one round: prompt / completion tokens numbered from `first_row`, masks, labels, a tool mask."""
    prompt_ids = torch.arange(2 * prompt_width).view(2, prompt_width) + 10 * first_row
    completion_ids = torch.arange(2 * completion_width).view(2, completion_width) + 10 * first_row + 5
    return {
        "prompt_ids": prompt_ids,
        "prompt_mask": torch.ones_like(prompt_ids),
        "completion_ids": completion_ids,
        "completion_mask": torch.ones_like(completion_ids),
        "tool_mask": torch.zeros_like(completion_ids),
        "old_per_token_logps": -torch.ones(2, completion_width),
        "correct": torch.tensor([1.0, 0.0]) + first_row,
        "num_items_in_batch": torch.tensor(99.0),
    }


def test_concat_pads_each_key_on_its_side_with_its_value():
    merged = rows.concat_batches([round_batch(1, 3, 0), round_batch(2, 1, 1)], pad_token_id=PAD)
    assert merged["prompt_ids"].tolist() == [[PAD, 0], [PAD, 1], [10, 11], [12, 13]]
    assert merged["prompt_mask"].tolist() == [[0, 1], [0, 1], [1, 1], [1, 1]]
    assert merged["completion_ids"].tolist() == [[5, 6, 7], [8, 9, 10], [15, PAD, PAD], [16, PAD, PAD]]
    assert merged["completion_mask"].tolist() == [[1, 1, 1], [1, 1, 1], [1, 0, 0], [1, 0, 0]]
    assert merged["tool_mask"].tolist() == [[0, 0, 0], [0, 0, 0], [0, 1, 1], [0, 1, 1]]  # TRL pads tool masks with 1
    assert merged["old_per_token_logps"].tolist() == [[-1, -1, -1]] * 2 + [[-1, 0, 0]] * 2
    assert merged["correct"].tolist() == [1.0, 0.0, 2.0, 1.0]
    assert "num_items_in_batch" not in merged  # recomputed for the final batch


def test_recomputed_keys_are_skipped_wherever_they_come_in_the_batch():
    first, second = ({"num_items_in_batch": b.pop("num_items_in_batch"), **b} for b in (round_batch(1, 1, 0),
                                                                                       round_batch(1, 1, 1)))
    assert list(first)[0] == "num_items_in_batch"
    merged = rows.concat_batches([first, second], pad_token_id=PAD)
    assert set(merged) == set(first) - {"num_items_in_batch"}
    gathered = rows.gather_rows(FakeAccelerator([first, second]), first, pad_token_id=PAD)
    assert set(gathered) == set(first) - {"num_items_in_batch"}


def test_concat_of_one_batch_is_that_batch():
    batch = round_batch(2, 3, 0)
    merged = rows.concat_batches([batch], pad_token_id=PAD)
    assert all(torch.equal(merged[key], batch[key]) for key in merged) and len(merged) == len(batch) - 1


def test_pad_to_length_leaves_a_long_enough_tensor_alone():
    tensor = torch.ones(2, 3)
    assert rows.pad_to_length(tensor, 3, 0, left=True) is tensor
    assert rows.pad_to_length(tensor, 2, 0, left=False) is tensor
    assert rows.pad_to_length(tensor, 4, 7, left=True).tolist() == [[7, 1, 1, 1]] * 2


@pytest.mark.parametrize("key, expected", [("prompt_ids", PAD), ("completion_ids", PAD), ("tool_mask", 1),
                                           ("completion_mask", 0), ("old_per_token_logps", 0)])
def test_pad_values(key, expected):
    assert rows.pad_value(key, PAD) == expected


def test_group_rows_in_the_order_given():
    assert rows.group_rows([2, 0], 3).tolist() == [6, 7, 8, 0, 1, 2]
    none = rows.group_rows([], 3)
    assert none.dtype == torch.long and rows.take_rows(round_batch(1, 1, 0), none)["correct"].numel() == 0


def test_take_rows_drops_recomputed_keys():
    batch = round_batch(1, 1, 0)
    taken = rows.take_rows(batch, torch.tensor([1]))
    assert taken["correct"].tolist() == [0.0] and "num_items_in_batch" not in taken


def test_local_slices_are_equal_and_row_aligned():
    slices = [rows.local_slice(12, rank, 3) for rank in range(3)]
    assert slices == [slice(0, 4), slice(4, 8), slice(8, 12)]
    assert torch.arange(12)[slices[1]].tolist() == [4, 5, 6, 7]  # integer bounds: usable on a tensor
    with pytest.raises(ValueError, match="10 rows cannot be split evenly over 3 processes"):
        rows.local_slice(10, 0, 3)


def test_every_supported_key_passes_and_others_are_named():
    rows.check_supported({key: None for key in rows.SUPPORTED_KEYS})
    with pytest.raises(ValueError, match=r"\['image_sizes', 'pixel_values'\]"):
        rows.check_supported({"prompt_ids": None, "pixel_values": None, "image_sizes": None})


class FakeAccelerator:
    """Two processes' rows, already known: padding across processes and gathering, as accelerate does."""

    def __init__(self, per_process):
        self.per_process, self.padded, self.all_processes = per_process, {}, {}

    def key_of(self, tensor):
        return next(k for k, v in self.per_process[0].items() if v is tensor)

    def pad_across_processes(self, tensor, dim, pad_index, pad_first):
        assert dim == 1, "rows are padded along the sequence"
        key = self.key_of(tensor)
        self.padded[key] = (pad_index, pad_first)
        width = max(batch[key].size(1) for batch in self.per_process)
        padded = [rows.pad_to_length(batch[key], width, pad_index, pad_first) for batch in self.per_process]
        self.all_processes[id(padded[0])] = padded
        return padded[0]

    def gather(self, tensor):
        if id(tensor) in self.all_processes:
            return torch.cat(self.all_processes[id(tensor)])
        return torch.cat([batch[self.key_of(tensor)] for batch in self.per_process])


def test_gather_rows_pads_across_processes_on_each_keys_side():
    first, second = round_batch(1, 3, 0), round_batch(2, 1, 1)
    accelerator = FakeAccelerator([first, second])
    gathered = rows.gather_rows(accelerator, first, pad_token_id=PAD)
    assert accelerator.padded["prompt_ids"] == (PAD, True) and accelerator.padded["completion_ids"] == (PAD, False)
    assert accelerator.padded["tool_mask"] == (1, False)
    assert gathered["prompt_ids"].tolist() == [[PAD, 0], [PAD, 1], [10, 11], [12, 13]]
    assert gathered["completion_ids"].tolist() == [[5, 6, 7], [8, 9, 10], [15, PAD, PAD], [16, PAD, PAD]]
    assert gathered["correct"].tolist() == [1.0, 0.0, 2.0, 1.0]
    assert "num_items_in_batch" not in gathered
