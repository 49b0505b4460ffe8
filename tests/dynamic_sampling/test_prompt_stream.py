"""The prompt stream of dynamic sampling: TRL's dataloader order, no repeats in an epoch, resumable from its cursor."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from trl.trainer.utils import RepeatSampler

from trl_nft.dynamic_sampling.prompt_stream import PromptStream, epoch_order, new_stream_state


def test_epoch_orders_are_trl_repeat_sampler_epochs():
    sampler = RepeatSampler(list(range(23)), mini_repeat_count=1, batch_size=1, seed=7)
    for epoch in range(3):
        assert epoch_order(23, seed=7, epoch=epoch) == list(sampler)
    assert epoch_order(5, seed=7, epoch=2, shuffle=False) == [0, 1, 2, 3, 4]


def test_rounds_walk_one_epoch_without_repeats_then_the_next():
    stream, cursor = PromptStream(30, seed=0), new_stream_state()
    drawn = []
    for count in (4, 12, 12, 2):  # 30 prompts: exactly epoch 0
        drawn += stream.draw(cursor, count, set())  # a new set per call: every round its own generation batch
    assert drawn == epoch_order(30, seed=0, epoch=0)
    assert cursor == {"epoch": 0, "position": 30, "postponed": []}
    assert stream.draw(cursor, 3, set()) == epoch_order(30, seed=0, epoch=1)[:3]
    assert stream.progress(cursor) == pytest.approx(1.1)


def test_a_batch_straddling_two_epochs_postpones_what_it_already_used():
    stream, cursor = PromptStream(10, seed=3), new_stream_state()
    stream.draw(cursor, 6, set())
    used = set()
    first = stream.draw(cursor, 4, used)  # the rest of epoch 0
    second = stream.draw(cursor, 6, used)  # same generation batch, now in epoch 1
    assert not set(first) & set(second) and len(set(second)) == 6
    postponed = [i for i in epoch_order(10, seed=3, epoch=1)[: cursor["position"]] if i in first]
    assert cursor["postponed"] == postponed and postponed  # seed 3 puts some of them early in epoch 1
    # the next generation batch takes the postponed prompts first
    assert stream.draw(cursor, len(postponed), set()) == postponed


def test_a_batch_larger_than_the_dataset_repeats_only_when_it_must():
    stream, cursor = PromptStream(4, seed=0), new_stream_state()
    used = set()
    drawn = stream.draw(cursor, 6, used)
    assert sorted(drawn[:4]) == [0, 1, 2, 3] and len(drawn) == 6


def test_the_cursor_alone_reproduces_the_draws_after_a_pickle_round_trip():
    stream, cursor = PromptStream(50, seed=1), new_stream_state()
    stream.draw(cursor, 37, set())
    saved = pickle.loads(pickle.dumps(copy.deepcopy(cursor)))
    expected = stream.draw(cursor, 20, set())
    assert PromptStream(50, seed=1).draw(saved, 20, set()) == expected  # a fresh stream object, as after a resume


def test_empty_dataset_is_refused():
    with pytest.raises(ValueError, match="0 rows"):
        PromptStream(0, seed=0)


def test_order_depends_on_the_seed_and_leaves_the_global_rng_alone():
    before = torch.get_rng_state()
    assert epoch_order(100, seed=0, epoch=0) != epoch_order(100, seed=1, epoch=0)
    assert sorted(epoch_order(100, seed=0, epoch=4)) == list(range(100))
    assert torch.equal(torch.get_rng_state(), before)
