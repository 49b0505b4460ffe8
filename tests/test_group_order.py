"""The whole-group order of a generation batch and the layouts it accepts."""

from __future__ import annotations

import pytest
import torch

from trl_nft.group_order import check_whole_group_layout, generation_batch_generator, whole_group_order


def global_groups_per_step(processes, per_device_batch, steps_per_generation, accumulation, group_size, seed=0):
    """For each optimizer step of one generation batch: the global group index of every row it trains, gathered over
    processes laid out as TRL lays them out (process p holds global rows [p*L, (p+1)*L))."""
    local_rows = per_device_batch * steps_per_generation
    rows_per_step = per_device_batch * accumulation
    steps = {}
    for process in range(processes):
        order = whole_group_order(local_rows, group_size, generation_batch_generator(seed, 0))
        for position, local_row in enumerate(order.tolist()):
            steps.setdefault(position // rows_per_step, []).append((process * local_rows + local_row) // group_size)
    return [sorted(groups) for _, groups in sorted(steps.items())]


@pytest.mark.parametrize(
    "processes, per_device_batch, steps_per_generation, accumulation, group_size",
    [
        (1, 4, 8, 2, 8),  # 4 steps of one group each
        (1, 8, 4, 1, 4),  # 4 steps of two groups each
        (2, 4, 4, 2, 8),  # each process holds whole groups
        (2, 2, 4, 4, 8),  # one step per batch: groups split between the two processes, still in that one step
        (3, 2, 2, 2, 3),  # group size coprime with a process's rows: one step per batch
    ],
)
def test_every_step_trains_whole_groups(processes, per_device_batch, steps_per_generation, accumulation, group_size):
    for groups in global_groups_per_step(processes, per_device_batch, steps_per_generation, accumulation, group_size):
        counts = torch.tensor(groups).bincount()
        assert set(counts[counts > 0].tolist()) == {group_size}, groups


def test_groups_are_shuffled_and_rows_kept():
    orders = [whole_group_order(32, 4, generation_batch_generator(seed, 0)) for seed in range(5)]
    for order in orders:
        assert sorted(order.tolist()) == list(range(32))
        slots = order.view(8, 4)
        assert torch.equal(slots - slots[:, :1], torch.arange(4).expand(8, 4))  # a group's rows stay in order
    assert len({tuple(order.tolist()) for order in orders}) == 5


def test_generator_depends_on_seed_and_batch_only():
    def draw(seed, step):
        return whole_group_order(64, 4, generation_batch_generator(seed, step)).tolist()

    torch.manual_seed(123)
    first = draw(0, 8)
    torch.manual_seed(456)  # the global random state must not matter (processes consume it differently)
    assert draw(0, 8) == first
    assert draw(0, 16) != first and draw(1, 8) != first


def test_trl_row_shuffle_splits_groups():
    """The control: TRL's row shuffle leaves a group in several optimizer steps."""
    order = torch.randperm(32, generator=torch.Generator().manual_seed(0))
    steps_of_group_zero = {position // 8 for position, row in enumerate(order.tolist()) if row // 8 == 0}
    assert len(steps_of_group_zero) > 1


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(group_size=4, per_device_batch=6, steps_per_generation=4, gradient_accumulation_steps=1),
         r"per_device_train_batch_size x gradient_accumulation_steps \(6 x 1 = 6\).*num_generations \(4\)"),
        (dict(group_size=4, per_device_batch=4, steps_per_generation=6, gradient_accumulation_steps=4),
         r"steps_per_generation \(6\).*gradient_accumulation_steps \(4\)"),
    ],
)
def test_layouts_that_split_groups_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        check_whole_group_layout(**settings)


@pytest.mark.parametrize(
    "settings",
    [
        dict(group_size=4, per_device_batch=2, steps_per_generation=8, gradient_accumulation_steps=2),
        dict(group_size=16, per_device_batch=2, steps_per_generation=2, gradient_accumulation_steps=4),  # one step
        dict(group_size=3, per_device_batch=5, steps_per_generation=1, gradient_accumulation_steps=1),
    ],
)
def test_layouts_with_whole_groups_per_step_are_accepted(settings):
    check_whole_group_layout(**settings)
