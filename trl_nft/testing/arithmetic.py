"""An offline RL testbed: multi-digit addition learned from data with a systematic carry bug.

The recipe, all on CPU and without any download:

1. a character tokenizer over digits, "+" and "=", and a ~0.25M-parameter Qwen2-style model (`MODEL_SIZE`);
2. supervised pretraining on prompts like ``"372+459="`` whose answers come from a *buggy teacher* that forgets each
   carry with probability ``carry_bug_rate`` (``"372+459=" → "721"`` instead of ``"831"``), so the pretrained policy
   samples the right answer only on some attempts — more rarely the more carries a problem has;
3. RL with an exact-match verifier (`exact_match_reward`) on the training split, and held-out accuracy (greedy and
   sampled) to watch the carry bug being unlearned.

Held-out problems are (a, b) pairs never used for pretraining nor RL. Everything is deterministic per seed
(single-threaded CPU).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from datasets import Dataset
from transformers import PreTrainedTokenizerFast, TrainerCallback

from trl_nft.testing.tiny_models import build_char_tokenizer, build_tiny_qwen2

ALPHABET = "0123456789+="
# ~0.25M parameters. A 1M model (hidden 128) costs 4x per step on CPU and, measured, sat on a loss plateau for >1000
# steps on forward-order addition; this one learns 3-digit addition in ~1000 steps.
MODEL_SIZE = dict(hidden_size=64, num_layers=4, num_heads=4, intermediate_size=256)
SPLIT_SALT = 0x9E3779B1  # fixed: the held-out split is the same for every seed, so runs are comparable


# ----------------------------------------------------------------------------------------------------- the task
@dataclass(frozen=True)
class AdditionTask:
    """Addition of two ``num_digits``-digit numbers, with a teacher that drops each carry with some probability."""

    num_digits: int = 3
    carry_bug_rate: float = 0.6
    heldout_fraction: float = 0.2

    @property
    def max_answer_length(self) -> int:
        return self.num_digits + 1

    def prompt(self, a: int, b: int) -> str:
        return f"{a}+{b}="

    def is_heldout(self, a: int, b: int) -> bool:
        """Deterministic split on the (a, b) pair, independent of any seed."""
        key = (a * 1_000_003 + b) * SPLIT_SALT % 2**32
        return key < self.heldout_fraction * 2**32

    def sample_pair(self, rng: random.Random, heldout: bool) -> tuple[int, int]:
        low, high = 10 ** (self.num_digits - 1), 10**self.num_digits - 1
        while True:
            a, b = rng.randint(low, high), rng.randint(low, high)
            if self.is_heldout(a, b) == heldout:
                return a, b

    def sample_problems(self, count: int, *, heldout: bool, seed: int) -> list[tuple[int, int]]:
        rng = random.Random(f"problems-{heldout}-{seed}")
        return [self.sample_pair(rng, heldout) for _ in range(count)]

    def teacher_answer(self, a: int, b: int, rng: random.Random) -> tuple[str, int, int]:
        """The buggy teacher's answer, the number of carries the problem has, and how many the teacher dropped."""
        digits, carry, carries, dropped = [], 0, 0, 0
        while a or b or carry:
            column = a % 10 + b % 10 + carry
            digits.append(column % 10)
            carry = column // 10
            if carry:
                carries += 1
                if rng.random() < self.carry_bug_rate:
                    carry, dropped = 0, dropped + 1
            a, b = a // 10, b // 10
        text = "".join(str(digit) for digit in reversed(digits)).lstrip("0") or "0"
        return text, carries, dropped


def correct_answer(a: int, b: int) -> str:
    return str(a + b)


def count_carries(a: int, b: int) -> int:
    return AdditionTask(carry_bug_rate=0.0).teacher_answer(a, b, random.Random(0))[1]


# ---------------------------------------------------------------------------------------------- model & data
def build_tokenizer() -> PreTrainedTokenizerFast:
    return build_char_tokenizer(ALPHABET)


def build_model(tokenizer: PreTrainedTokenizerFast, seed: int, **size):
    """The testbed's policy: a random-init Qwen2 with `MODEL_SIZE` unless overridden (tests use smaller ones)."""
    return build_tiny_qwen2(tokenizer, seed=seed, max_position_embeddings=64, **{**MODEL_SIZE, **size})


def rl_dataset(task: AdditionTask, count: int, *, heldout: bool = False, seed: int = 0) -> Dataset:
    """Prompts with their correct answer (the `answer` column reaches the reward function)."""
    pairs = task.sample_problems(count, heldout=heldout, seed=seed)
    return Dataset.from_dict(
        {"prompt": [task.prompt(a, b) for a, b in pairs], "answer": [correct_answer(a, b) for a, b in pairs]}
    )


def exact_match_reward(completions: list[str], answer: list[str], **kwargs) -> list[float]:
    """Verifier: 1.0 when the completion (text before EOS) is exactly the answer, else 0.0."""
    return [1.0 if completion.strip() == target else 0.0 for completion, target in zip(completions, answer)]


@dataclass
class PretrainingBatch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor  # -100 on prompt and padding: only the answer and EOS are learned
    carries: int
    dropped: int


def pretraining_batch(
    task: AdditionTask, tokenizer: PreTrainedTokenizerFast, size: int, rng: random.Random
) -> PretrainingBatch:
    """`size` training-split problems answered by the buggy teacher, right-padded."""
    rows, carries, dropped = [], 0, 0
    for _ in range(size):
        a, b = task.sample_pair(rng, heldout=False)
        answer, problem_carries, problem_dropped = task.teacher_answer(a, b, rng)
        carries, dropped = carries + problem_carries, dropped + problem_dropped
        prompt_ids = tokenizer(task.prompt(a, b), add_special_tokens=False)["input_ids"]
        answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        rows.append((prompt_ids, answer_ids))
    width = max(len(p) + len(c) for p, c in rows)
    input_ids = torch.full((size, width), tokenizer.pad_token_id)
    attention_mask = torch.zeros((size, width), dtype=torch.long)
    labels = torch.full((size, width), -100)
    for row, (prompt_ids, answer_ids) in enumerate(rows):
        ids = prompt_ids + answer_ids
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention_mask[row, : len(ids)] = 1
        labels[row, len(prompt_ids) : len(ids)] = torch.tensor(answer_ids)
    return PretrainingBatch(input_ids, attention_mask, labels, carries, dropped)


def supervised_pretrain(
    model,
    tokenizer: PreTrainedTokenizerFast,
    task: AdditionTask,
    *,
    steps: int = 2000,
    batch_size: int = 64,
    learning_rate: float = 3e-3,
    seed: int = 0,
    progress=None,
) -> list[float]:
    """Plain-torch next-token training on the buggy teacher's data; returns the loss per step.

    AdamW with a linear warm-up over the first 10% and a cosine decay, so a few hundred steps are enough.
    `progress`, if given, is called as progress(step, loss).
    """
    rng = random.Random(f"pretrain-{seed}")
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.01)
    warmup = max(1, steps // 10)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    model.train()
    losses = []
    for step in range(steps):
        batch = pretraining_batch(task, tokenizer, batch_size, rng)
        loss = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if progress is not None:
            progress(step, losses[-1])
    model.eval()
    return losses


# ------------------------------------------------------------------------------------------------ evaluation
@torch.no_grad()
def _generate_in_batches(model, tokenizer: PreTrainedTokenizerFast, prompts: list[str], *, seed: int,
                         batch_size: int, **generate_kwargs):
    """Yield (new tokens, `generate` output) per batch of `prompts`, in eval mode, on a forked RNG seeded with `seed`
    so that evaluation never perturbs a training run; the model's train/eval mode is restored afterwards."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            for start in range(0, len(prompts), batch_size):
                encoded = tokenizer(
                    prompts[start : start + batch_size], return_tensors="pt", padding=True, add_special_tokens=False
                ).to(device)
                output = model.generate(
                    **encoded, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                    **generate_kwargs,
                )
                sequences = output.sequences if generate_kwargs.get("return_dict_in_generate") else output
                yield sequences[:, encoded["input_ids"].size(1) :], output
    finally:
        model.train(was_training)


@torch.no_grad()
def generate_answers(
    model,
    tokenizer: PreTrainedTokenizerFast,
    prompts: list[str],
    *,
    greedy: bool,
    max_new_tokens: int,
    seed: int = 0,
    batch_size: int = 512,
) -> list[str]:
    """Answers (text before EOS) by batched `model.generate`; sampling is at temperature 1 with no top-k/top-p, as
    TRL's defaults sample during training. The global RNG is forked so evaluation never perturbs a training run."""
    sampling = {"do_sample": False} if greedy else dict(do_sample=True, temperature=1.0, top_k=0, top_p=1.0)
    answers = []
    for new_tokens, _ in _generate_in_batches(model, tokenizer, prompts, seed=seed, batch_size=batch_size,
                                              max_new_tokens=max_new_tokens, **sampling):
        answers.extend(tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
    return answers


def accuracy(
    model,
    tokenizer,
    prompts: list[str],
    targets: list[str],
    *,
    greedy: bool,
    max_new_tokens: int,
    samples_per_prompt: int = 1,
    seed: int = 0,
) -> float:
    """Fraction of exact-match answers; sampled accuracy averages `samples_per_prompt` attempts per prompt."""
    repeats = 1 if greedy else samples_per_prompt
    answers = generate_answers(
        model,
        tokenizer,
        [p for p in prompts for _ in range(repeats)],
        greedy=greedy,
        max_new_tokens=max_new_tokens,
        seed=seed,
    )
    scores = exact_match_reward(answers, [t for t in targets for _ in range(repeats)])
    return sum(scores) / len(scores)


@dataclass
class HeldoutEvaluator:
    """Held-out greedy and sampled accuracy of a model, on a fixed problem set and sampling seed (common random
    numbers: two checkpoints are compared on the same draws)."""

    tokenizer: PreTrainedTokenizerFast
    task: AdditionTask
    num_problems: int = 256
    samples_per_prompt: int = 2
    seed: int = 12345
    prompts: list[str] = field(init=False)
    targets: list[str] = field(init=False)

    def __post_init__(self):
        pairs = self.task.sample_problems(self.num_problems, heldout=True, seed=self.seed)
        self.prompts = [self.task.prompt(a, b) for a, b in pairs]
        self.targets = [correct_answer(a, b) for a, b in pairs]

    def __call__(self, model) -> dict[str, float]:
        common = dict(max_new_tokens=self.task.max_answer_length + 1, seed=self.seed)
        greedy = accuracy(model, self.tokenizer, self.prompts, self.targets, greedy=True, **common)
        sampled = accuracy(
            model,
            self.tokenizer,
            self.prompts,
            self.targets,
            greedy=False,
            samples_per_prompt=self.samples_per_prompt,
            **common,
        )
        return {"greedy": greedy, "sampled": sampled}


class HeldoutAccuracyCallback(TrainerCallback):
    """Evaluates held-out accuracy at step 0 and every `every` optimizer steps (and at the end); `history` holds
    dicts {step, greedy, sampled}. `on_record`, if given, is called with each new record."""

    def __init__(self, evaluator: HeldoutEvaluator, every: int, on_record=None):
        self.evaluator = evaluator
        self.every = every
        self.on_record = on_record
        self.history: list[dict] = []

    def _record(self, step: int, model) -> None:
        if self.history and self.history[-1]["step"] == step:
            return
        record = {"step": step, **self.evaluator(model)}
        self.history.append(record)
        if self.on_record is not None:
            self.on_record(record)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._record(state.global_step, model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.every == 0:
            self._record(state.global_step, model)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self._record(state.global_step, model)


# ------------------------------------------------------------------------------------- policy diagnostics
def pass_at_k(num_samples: int, num_correct: int, k: int) -> float:
    """Unbiased pass@k from `num_samples` attempts of which `num_correct` are right: 1 − C(n − c, k) / C(n, k)."""
    if not 1 <= k <= num_samples:
        raise ValueError(f"pass@k needs 1 <= k <= num_samples, got k={k}, num_samples={num_samples}")
    if not 0 <= num_correct <= num_samples:
        raise ValueError(f"num_correct={num_correct} must lie in [0, num_samples={num_samples}]")
    return 1.0 - math.comb(num_samples - num_correct, k) / math.comb(num_samples, k)


@torch.no_grad()
def sample_with_entropy(
    model, tokenizer: PreTrainedTokenizerFast, prompts: list[str], *, max_new_tokens: int, seed: int = 0,
    batch_size: int = 512,
) -> tuple[list[str], list[float], list[int]]:
    """Temperature-1 answers, each with the summed per-token entropy (nats) of the policy along it and its token
    count (answer tokens and EOS; nothing after EOS). Forks the global RNG like `generate_answers`."""
    answers, entropy_sums, token_counts = [], [], []
    batches = _generate_in_batches(
        model, tokenizer, prompts, seed=seed, batch_size=batch_size, max_new_tokens=max_new_tokens, do_sample=True,
        temperature=1.0, top_k=0, top_p=1.0, output_logits=True, return_dict_in_generate=True,
    )
    for new_tokens, output in batches:
        log_probs = torch.stack(output.logits, dim=1).float().log_softmax(-1)  # raw logits: temperature 1
        entropy = -(log_probs.exp() * log_probs).sum(-1)
        is_eos = (new_tokens == tokenizer.eos_token_id).long()
        # a position counts until and including the first EOS; generate pads finished rows afterwards
        counted = (is_eos.cumsum(-1) - is_eos) == 0
        entropy_sums.extend((entropy * counted).sum(-1).tolist())
        token_counts.extend(counted.sum(-1).tolist())
        answers.extend(tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
    return answers, entropy_sums, token_counts


@dataclass
class PolicyDiagnostics:
    """What late training can hide behind accuracy: on a fixed held-out set with `samples_per_prompt` temperature-1
    samples each, pass@1 and pass@k, sampled accuracy on the problems the teacher's bug affects (at least one carry)
    and on the others, and the policy's mean per-token entropy on its own samples (nats)."""

    tokenizer: PreTrainedTokenizerFast
    task: AdditionTask
    num_problems: int = 128
    samples_per_prompt: int = 8
    k: int = 8
    seed: int = 12345
    prompts: list[str] = field(init=False)
    targets: list[str] = field(init=False)
    affected: list[bool] = field(init=False)

    def __post_init__(self):
        if not 1 <= self.k <= self.samples_per_prompt:
            raise ValueError(
                f"PolicyDiagnostics.k={self.k} must lie in [1, samples_per_prompt={self.samples_per_prompt}]"
            )
        pairs = self.task.sample_problems(self.num_problems, heldout=True, seed=self.seed)
        self.prompts = [self.task.prompt(a, b) for a, b in pairs]
        self.targets = [correct_answer(a, b) for a, b in pairs]
        self.affected = [count_carries(a, b) > 0 for a, b in pairs]

    def __call__(self, model) -> dict[str, float]:
        n = self.samples_per_prompt
        answers, entropy_sums, token_counts = sample_with_entropy(
            model, self.tokenizer, [p for p in self.prompts for _ in range(n)],
            max_new_tokens=self.task.max_answer_length + 1, seed=self.seed,
        )
        scores = exact_match_reward(answers, [t for t in self.targets for _ in range(n)])
        correct = [int(sum(scores[i * n : (i + 1) * n])) for i in range(len(self.prompts))]

        def mean_rate(selected: list[int]) -> float:
            return sum(correct[i] for i in selected) / (n * len(selected)) if selected else float("nan")

        return {
            "pass@1": sum(correct) / (n * len(correct)),
            f"pass@{self.k}": sum(pass_at_k(n, c, self.k) for c in correct) / len(correct),
            "sampled_affected": mean_rate([i for i, hit in enumerate(self.affected) if hit]),
            "sampled_unaffected": mean_rate([i for i, hit in enumerate(self.affected) if not hit]),
            "entropy": sum(entropy_sums) / max(1, sum(token_counts)),
        }


class UpdateNormCallback(TrainerCallback):
    """The L2 norm of the parameter change made by each optimizer step, ‖θ_after − θ_before‖, in `norms`. Losses
    with the same learning rate can take steps of different size (Adam rescales the gradient's magnitude, not its
    noise), so this is the step size to compare methods at."""

    def __init__(self):
        self.norms: list[float] = []
        self._before = None

    @staticmethod
    def _flat(model) -> torch.Tensor:
        return torch.cat([parameter.detach().reshape(-1).float() for parameter in model.parameters()])

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        self._before = self._flat(model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.norms.append((self._flat(model) - self._before).norm().item())


def rl_trainer_options(
    task: AdditionTask,
    *,
    prompts_per_step: int,
    num_generations: int,
    eval_every: int,
    max_steps: int,
    seed: int,
    learning_rate: float,
) -> dict:
    """(NFT/GRPO)Config options shared by the demo and the benchmarks: CPU, quiet, constant lr, short answers."""
    return dict(
        use_cpu=True,
        bf16=False,
        report_to=[],
        save_strategy="no",
        disable_tqdm=True,
        logging_steps=eval_every,
        seed=seed,
        learning_rate=learning_rate,
        lr_scheduler_type="constant",  # every point of a curve is taken at the same step size
        per_device_train_batch_size=prompts_per_step * num_generations,
        num_generations=num_generations,
        max_completion_length=task.max_answer_length + 1,  # digits + EOS
        max_steps=max_steps,
    )


# ------------------------------------------------------------------------------------------------- the bundle
@dataclass
class Testbed:
    task: AdditionTask
    tokenizer: PreTrainedTokenizerFast
    model: object
    train_dataset: Dataset
    evaluator: HeldoutEvaluator
    pretraining_losses: list[float]


def build_testbed(
    task: AdditionTask | None = None,
    *,
    pretrain_seed: int = 0,
    pretrain_steps: int = 2000,
    pretrain_batch_size: int = 64,
    pretrain_learning_rate: float = 3e-3,
    num_train_prompts: int = 4096,
    num_eval_problems: int = 256,
    eval_samples_per_prompt: int = 2,
    model_size: dict | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress=None,
) -> Testbed:
    """Tokenizer, supervised base policy, RL training prompts and held-out evaluator.

    `pretrain_seed` fixes the base model (init and pretraining data) and the RL prompt set; RL seeds are the trainer's.
    Forward-order addition is learned after a loss plateau whose length depends on the init: with the defaults,
    pretrain seeds 0 and 4 escaped it within 2000 steps, seeds 1-3 did not (sampled accuracy ~0). Like an RL study on
    one base LLM, the benchmarks therefore vary the RL seed on the seed-0 base model. With `cache_dir`, the pretrained
    weights are saved there and reused by later calls with the same settings.
    """
    task = task or AdditionTask()
    tokenizer = build_tokenizer()
    size = {**MODEL_SIZE, **(model_size or {})}
    model = build_model(tokenizer, pretrain_seed, **size)
    pretraining = dict(steps=pretrain_steps, batch_size=pretrain_batch_size, learning_rate=pretrain_learning_rate)
    cache_file = None
    if cache_dir is not None:
        key = json.dumps(
            {"task": asdict(task), "size": size, "pretraining": pretraining, "seed": pretrain_seed}, sort_keys=True
        )
        cache_file = Path(cache_dir) / f"pretrained-{hashlib.sha1(key.encode()).hexdigest()[:16]}.pt"
    if cache_file is not None and cache_file.exists():
        saved = torch.load(cache_file)
        model.load_state_dict(saved["state_dict"])
        losses = saved["losses"]
        model.eval()
    else:
        losses = supervised_pretrain(model, tokenizer, task, seed=pretrain_seed, progress=progress, **pretraining)
        if cache_file is not None:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"state_dict": model.state_dict(), "losses": losses}, cache_file)
    return Testbed(
        task=task,
        tokenizer=tokenizer,
        model=model,
        train_dataset=rl_dataset(task, num_train_prompts, seed=pretrain_seed),
        evaluator=HeldoutEvaluator(tokenizer, task, num_eval_problems, eval_samples_per_prompt),
        pretraining_losses=losses,
    )
