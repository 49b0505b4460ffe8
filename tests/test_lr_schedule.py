"""`lr_scheduler_per_generation`: the official warm-up lr × min(1, k / 10), constant over rollout step k."""

from __future__ import annotations

import pytest
import torch
from transformers import TrainerCallback, get_scheduler

from tests.conftest import first_char_parity_reward, tiny_args
from trl_nft import NFTConfig, NFTTrainer
from trl_nft.lr_schedule import generation_batches, paced_by_generation


def official_lr(lr: float, optimizer_step: int, optimizer_steps_per_generation: int, warmup: int) -> float:
    """verl's `get_constant_schedule_with_warmup`, stepped once per rollout step (k counted from 0)."""
    k = optimizer_step // optimizer_steps_per_generation
    return lr * min(1.0, k / max(1, warmup))


def sgd(lr=1.0):
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def test_paced_schedule_holds_each_generation_batch():
    optimizer = sgd()
    inner = get_scheduler("constant_with_warmup", optimizer, num_warmup_steps=3, num_training_steps=5)
    scheduler = paced_by_generation(inner, optimizer_steps_per_generation=4)
    seen = []
    for _ in range(20):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen == pytest.approx([official_lr(1.0, step, 4, 3) for step in range(20)])


def test_resumed_schedule_continues_where_it_stopped():
    def paced():
        optimizer = sgd()
        inner = get_scheduler("constant_with_warmup", optimizer, num_warmup_steps=4, num_training_steps=8)
        return optimizer, paced_by_generation(inner, optimizer_steps_per_generation=3)

    optimizer, scheduler = paced()
    for _ in range(5):
        optimizer.step()
        scheduler.step()
    state = scheduler.state_dict()
    resumed_optimizer, resumed = paced()
    resumed.load_state_dict(state)
    resumed_optimizer.param_groups[0]["lr"] = optimizer.param_groups[0]["lr"]  # restored from the optimizer state
    for step in range(5, 12):
        assert resumed_optimizer.param_groups[0]["lr"] == pytest.approx(official_lr(1.0, step, 3, 4))
        resumed_optimizer.step()
        resumed.step()


def test_schedule_length_counts_generation_batches():
    assert generation_batches(5120, 16) == 320 and generation_batches(17, 16) == 2


def test_a_schedule_without_multipliers_is_refused():
    optimizer = sgd()
    plateau = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1)
    with pytest.raises(ValueError, match="LambdaLR.*StepLR"):
        paced_by_generation(plateau, 2)


def test_generation_batch_must_hold_whole_optimizer_steps(tmp_path):
    with pytest.raises(ValueError, match=r"steps_per_generation=3 x num_iterations=1 .*gradient_accumulation_steps=2"):
        tiny_args(NFTConfig, tmp_path, lr_scheduler_per_generation=True, steps_per_generation=3,
                  gradient_accumulation_steps=2)


class RecordLearningRate(TrainerCallback):
    """The learning rate each optimizer step used (read before the scheduler moves on)."""

    def __init__(self):
        self.seen = []

    def on_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        self.seen.append(optimizer.param_groups[0]["lr"])


@pytest.mark.parametrize(
    "gradient_accumulation_steps, steps_per_generation, num_iterations",
    [(2, 4, 1), (1, 2, 2)],  # 2 and 4 optimizer steps per generation batch
)
def test_trainer_lr_follows_the_official_warm_up(model, prompt_dataset, tokenizer, tmp_path,
                                                 gradient_accumulation_steps, steps_per_generation, num_iterations):
    lr, warmup, max_steps = 1e-2, 2, 8
    args = tiny_args(
        NFTConfig, tmp_path, learning_rate=lr, lr_scheduler_type="constant_with_warmup", warmup_steps=warmup,
        lr_scheduler_per_generation=True, max_steps=max_steps, per_device_train_batch_size=4,
        gradient_accumulation_steps=gradient_accumulation_steps, steps_per_generation=steps_per_generation,
        num_iterations=num_iterations, max_completion_length=4,
    )
    trainer = NFTTrainer(model=model, reward_funcs=first_char_parity_reward, args=args, train_dataset=prompt_dataset,
                         processing_class=tokenizer)
    record = RecordLearningRate()
    trainer.add_callback(record)
    trainer.train()
    per_generation = steps_per_generation * num_iterations // gradient_accumulation_steps
    assert record.seen == pytest.approx([official_lr(lr, step, per_generation, warmup) for step in range(max_steps)])


def test_default_scheduler_steps_per_optimizer_step(model, prompt_dataset, tokenizer, tmp_path):
    args = tiny_args(NFTConfig, tmp_path, lr_scheduler_type="constant_with_warmup", warmup_steps=2, max_steps=4,
                     per_device_train_batch_size=4, gradient_accumulation_steps=2, steps_per_generation=4,
                     max_completion_length=4)
    trainer = NFTTrainer(model=model, reward_funcs=first_char_parity_reward, args=args, train_dataset=prompt_dataset,
                         processing_class=tokenizer)
    record = RecordLearningRate()
    trainer.add_callback(record)
    trainer.train()
    assert record.seen == pytest.approx([0.0, 0.5e-2, 1e-2, 1e-2])  # TRL's: warm-up over optimizer steps


def test_metric_driven_schedules_are_refused(tmp_path):
    with pytest.raises(ValueError, match="lr_scheduler_type='reduce_lr_on_plateau'"):
        tiny_args(NFTConfig, tmp_path, lr_scheduler_per_generation=True, lr_scheduler_type="reduce_lr_on_plateau",
                  eval_strategy="steps", eval_steps=1, metric_for_best_model="loss")
