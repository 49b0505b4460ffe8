"""A trainer subclass that records which completions every optimizer step trains (shared by 1- and 2-process tests).

Each generated row is tagged with its group: generation batch number × `BATCH_STRIDE` + the group's index in the
global batch (process p holds global rows [p·L, (p+1)·L), as TRL and dynamic sampling lay them out).
"""

from __future__ import annotations

from collections import Counter, defaultdict

import torch

BATCH_STRIDE = 100_000


def step_recording(trainer_cls):
    class StepRecording(trainer_cls):
        def _generate_and_score_completions(self, inputs):
            batch = super()._generate_and_score_completions(inputs)
            if self.model.training:
                self.generated_batches = getattr(self, "generated_batches", 0) + 1
                rows = batch["completion_ids"].size(0)
                first = self.accelerator.process_index * rows
                group = (first + torch.arange(rows)) // self.num_generations
                batch["group_tag"] = self.generated_batches * BATCH_STRIDE + group
            return batch

        def _compute_loss(self, model, inputs):
            if self.model.training:
                prompts = self.processing_class.batch_decode(inputs["prompt_ids"], skip_special_tokens=True)
                self.step_records = getattr(self, "step_records", []) + [{
                    "step": self.state.global_step, "groups": inputs["group_tag"].tolist(), "prompts": prompts,
                }]
            return super()._compute_loss(model, inputs)

    return StepRecording


def rows_per_group_and_step(records: list[dict]) -> dict[int, Counter]:
    """{optimizer step: Counter(group tag -> rows trained in that step)}, over all records (all processes)."""
    steps = defaultdict(Counter)
    for record in records:
        steps[record["step"]].update(record["groups"])
    return dict(steps)


def check_group_tags_are_groups(records: list[dict]) -> None:
    """A tag must stand for one prompt, or the tagging (not the trainer) would be wrong."""
    prompts_of = defaultdict(set)
    for record in records:
        for tag, prompt in zip(record["groups"], record["prompts"]):
            prompts_of[tag].add(prompt)
    assert all(len(prompts) == 1 for prompts in prompts_of.values()), prompts_of


def steps_with_split_groups(records: list[dict], rows_per_pass: int) -> dict[int, Counter]:
    """Steps that train some group with a row count that is not a whole number of passes over it."""
    return {step: counts for step, counts in rows_per_group_and_step(records).items()
            if any(count % rows_per_pass for count in counts.values())}
