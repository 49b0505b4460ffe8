"""`WholeGroupBatchesMixin`: TRL's `_prepare_inputs` with the row shuffle replaced by a whole-group shuffle.

TRL buffers a generation batch, shuffles its rows and hands out one slice per micro-step. With
`keep_groups_together` the shuffle moves whole groups (`trl_nft.group_order`), so every optimizer step trains
complete groups; generation, buffering, reuse over `num_iterations` and resuming stay TRL's. A mixin rather than
code in `NFTTrainer` so that a `GRPOTrainer` subclass can use it too (the group-batches benchmark compares both).
"""

from __future__ import annotations

import torch
from trl.trainer.utils import split_pixel_values_by_grid, split_tensor_dict, unsplit_pixel_values_by_grid

from trl_nft import group_order


class WholeGroupBatchesMixin:
    """For a `GRPOTrainer` subclass; active when `args.keep_groups_together` is true."""

    def _keeps_groups_together(self) -> bool:
        return bool(getattr(self.args, "keep_groups_together", False))

    def _check_whole_group_layout(self) -> None:
        if self._keeps_groups_together():
            group_order.check_whole_group_layout(
                group_size=self.num_generations,
                per_device_batch=self.args.per_device_train_batch_size,
                steps_per_generation=self.args.steps_per_generation,
                gradient_accumulation_steps=self.args.gradient_accumulation_steps,
            )

    def _prepare_inputs(self, generation_batch):
        if not (self._keeps_groups_together() and self.model.training):
            return super()._prepare_inputs(generation_batch)
        # TRL's training branch, its row shuffle replaced by the whole-group one; the rest as in trl 1.16.
        steps_per_generation = self.args.steps_per_generation
        if self._step % (steps_per_generation * self.num_iterations) == 0 or self._buffered_inputs is None:
            generation_batch = self._generate_and_score_completions(generation_batch)
            generation_batch = split_pixel_values_by_grid(generation_batch)
            generation_batch = self._shuffle_whole_groups(generation_batch)
            chunks = split_tensor_dict(generation_batch, steps_per_generation)
            self._buffered_inputs = [unsplit_pixel_values_by_grid(chunk) for chunk in chunks]
        return self._buffered_inputs[self._step % steps_per_generation]

    def _shuffle_whole_groups(self, batch: dict) -> dict:
        local_rows = batch["completion_ids"].size(0)
        # Seeded by the micro-step the batch starts at: the same on every process and after a resume.
        generator = group_order.generation_batch_generator(self.args.seed, self._step)
        order = group_order.whole_group_order(local_rows, self.num_generations, generator)
        return {key: take_rows(value, order) for key, value in batch.items()}


def take_rows(value, order: torch.Tensor):
    """Rows `order` of one batch entry, treated as TRL's shuffle treats entries: scalars and `None` stay."""
    if value is None or (isinstance(value, torch.Tensor) and value.ndim == 0):
        return value
    if isinstance(value, torch.Tensor):
        return value[order.to(value.device)]
    return [value[i] for i in order.tolist()]
