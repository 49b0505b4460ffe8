"""The order in which dynamic sampling draws prompts: one shuffled pass over the dataset per epoch, like a dataloader.

The official NFT loop (NVlabs/NFT `ray_nft_trainer.py`, `RayNFTTrainer.fit`) takes every generation round, the
first and the refills alike, from the next batch of one `RandomSampler` dataloader, so no prompt repeats within an
epoch. TRL's dataloader cannot hand out extra batches in the middle of a training step, so the trainer walks the same
order itself: epoch e is the (e + 1)-th `torch.randperm` of a generator seeded with `seed`, exactly the sequence
TRL's `RepeatSampler` produces (no shuffle: 0, 1, 2, ...). Each round takes the next prompts; when a pass is used
up the next epoch's pass starts.

A cursor is all the state there is (`new_stream_state`): a plain dict, so a checkpoint can store it and a resumed run
draws the same prompts. One corner needs care: a generation batch that straddles two epochs must not meet a prompt
its earlier rounds already used. Such a prompt is postponed and drawn first by the next generation batch instead.
"""

from __future__ import annotations

import torch


def new_stream_state() -> dict:
    """Cursor at the start of epoch 0; `postponed` holds prompts deferred by the generation batch that met them."""
    return {"epoch": 0, "position": 0, "postponed": []}


def epoch_order(dataset_size: int, seed: int, epoch: int, shuffle: bool = True) -> list[int]:
    """Dataset indices in the order of `epoch`: TRL's RepeatSampler order (its generator is seeded once)."""
    if not shuffle:
        return list(range(dataset_size))
    generator = torch.Generator().manual_seed(seed)
    order = None
    for _ in range(epoch + 1):
        order = torch.randperm(dataset_size, generator=generator)
    return order.tolist()


class PromptStream:
    """Draws prompt indices from a cursor dict (`new_stream_state`), updating it in place.

    `exclude` is the set of prompts the current generation batch already used; `draw` adds what it returns to it.
    If every prompt of the dataset is excluded (a batch bigger than the dataset), repeats are unavoidable and the
    exclusion is lifted.
    """

    def __init__(self, dataset_size: int, seed: int, shuffle: bool = True):
        if dataset_size < 1:
            raise ValueError(f"dynamic sampling needs a non-empty train_dataset, got {dataset_size} rows")
        self.dataset_size, self.seed, self.shuffle = dataset_size, seed, shuffle
        self._order_epoch, self._order = None, None

    def _order_of(self, epoch: int) -> list[int]:
        if self._order_epoch != epoch:
            self._order_epoch, self._order = epoch, epoch_order(self.dataset_size, self.seed, epoch, self.shuffle)
        return self._order

    def draw(self, cursor: dict, count: int, exclude: set[int]) -> list[int]:
        drawn = []
        while len(drawn) < count:
            if len(exclude) >= self.dataset_size:
                exclude.clear()
            ready = [index for index in cursor["postponed"] if index not in exclude]
            if ready:
                index = ready[0]
                cursor["postponed"].remove(index)
            else:
                order = self._order_of(cursor["epoch"])
                if cursor["position"] == len(order):
                    cursor["epoch"], cursor["position"] = cursor["epoch"] + 1, 0
                    continue
                index = order[cursor["position"]]
                cursor["position"] += 1
                if index in exclude:
                    if index not in cursor["postponed"]:  # met again only by a batch bigger than an epoch
                        cursor["postponed"].append(index)
                    continue
            drawn.append(index)
            exclude.add(index)
        return drawn

    def progress(self, cursor: dict) -> float:
        """Epochs of the dataset drawn so far (fractional)."""
        return cursor["epoch"] + cursor["position"] / self.dataset_size
