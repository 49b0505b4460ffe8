r"""Binary math-accuracy reward (1.0 correct, 0.0 wrong, ``None`` for an unusable gold or an answer whose verifier
worker died twice) for TRL trainers.

The predicted answer is the content of the LAST ``\boxed{...}`` of a completion (the NFT paper's rule), and
`math-verify <https://github.com/huggingface/Math-Verify>`_ decides whether it is equivalent to the gold answer.
Every answer is checked in a pool of worker subprocesses with a wall-clock limit (`trl_nft.rewards.verifier_pool`).

Typical use::

    from trl_nft.rewards import math_accuracy_reward, MathAccuracyReward
    trainer = NFTTrainer(..., reward_funcs=[math_accuracy_reward])          # gold in an `answer` column
    gsm8k_reward = MathAccuracyReward(answer_format="gsm8k", timeout=3.0)   # "#### N" / "A: N" answers
"""

from __future__ import annotations

import threading
from typing import Any

from trl_nft.rewards.answers import (
    ANSWER_FORMATS,
    completion_text,
    extract_final_answer,
    extract_gold_answer,
    gold_column,
    max_brace_depth,
)
from trl_nft.rewards.verification import score_answer
from trl_nft.rewards.verifier_pool import VerifierPool, default_num_workers

class MathAccuracyReward:
    r"""Configurable math-accuracy reward: 1.0 if the completion's final answer equals the gold, else 0.0.

    Args:
        answer_format: ``"boxed"`` (last ``\boxed{}``, the paper's rule), ``"gsm8k"`` (last ``#### N`` marker or
            ``A: N`` line) or ``"auto"`` (box first, then GSM8K markers).
        timeout: wall-clock seconds allowed to check one completion; slower ones score 0.0.
        num_workers: verifier subprocesses (default: CPUs available, at most 8). ``0`` verifies in the calling
            process with no timeout at all (trusted input only, e.g. debugging).
        max_answer_chars: longer extracted answers score 0.0 without being parsed.
        max_answer_brace_depth: answers nested deeper score 0.0 (LaTeX parsing is exponential-ish in depth).
        memory_limit_mb: address-space cap of each worker (None: no cap).
        name: ``__name__`` used by TRL for logging.

    Call it like any TRL reward function: ``reward(completions=..., answer=[...])`` (or ``solution=[...]``).
    Instances are picklable (the pool is not pickled; the copy starts its own).
    """

    gold_columns = ("answer", "solution")  # dataset columns the gold may come from (checked by NFTTrainer)

    def __init__(
        self,
        answer_format: str = "boxed",
        timeout: float = 5.0,
        num_workers: int | None = None,
        max_answer_chars: int = 1000,
        max_answer_brace_depth: int = 24,
        memory_limit_mb: int | None = 4096,
        name: str = "math_accuracy_reward",
    ):
        if answer_format not in ANSWER_FORMATS:
            raise ValueError(f"answer_format must be one of {ANSWER_FORMATS}, got {answer_format!r}")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.answer_format = answer_format
        self.timeout = float(timeout)
        self.num_workers = default_num_workers() if num_workers is None else int(num_workers)
        self.max_answer_chars = max_answer_chars
        self.max_answer_brace_depth = max_answer_brace_depth
        self.memory_limit_mb = memory_limit_mb
        self.__name__ = name
        self._pool: VerifierPool | None = None
        self._pool_lock = threading.Lock()

    def __call__(
        self,
        completions: list,
        answer: list | None = None,
        solution: list | None = None,
        log_extra=None,
        log_metric=None,
        **kwargs,
    ) -> list[float | None]:
        """Score ``completions`` against the ``answer`` column (or TRL's ``solution`` column); None = skip."""
        golds = gold_column(self.__name__, answer, solution)
        if len(golds) != len(completions):
            raise ValueError(f"got {len(completions)} completions but {len(golds)} gold answers")
        predictions = [self.extract(completion) for completion in completions]
        gold_answers = [extract_gold_answer(gold, self.answer_format) for gold in golds]
        deaths, unscorable = self.worker_deaths, self.unscorable
        rewards = self._score_pairs(list(zip(gold_answers, predictions)))
        if log_extra is not None:
            log_extra("extracted_answer", ["" if p is None else p for p in predictions])
        if log_metric is not None:
            log_metric("no_final_answer_frac", sum(p is None for p in predictions) / max(1, len(predictions)))
            # A verifier worker that died (out-of-memory kill, crash) is replaced; a completion whose worker died
            # twice is unscorable: reward None, not 0.0.
            log_metric("verifier_worker_deaths", float(self.worker_deaths - deaths))
            log_metric("unscorable_frac", (self.unscorable - unscorable) / max(1, len(predictions)))
        return rewards

    def extract(self, completion: Any) -> str | None:
        """The final answer of one completion after cheap safety filters (None: no usable answer, scores 0.0)."""
        predicted = extract_final_answer(completion_text(completion), self.answer_format)
        if predicted is None or not predicted.strip():
            return None
        if len(predicted) > self.max_answer_chars or max_brace_depth(predicted) > self.max_answer_brace_depth:
            return None
        return predicted

    def _score_pairs(self, pairs: list[tuple[str | None, str | None]]) -> list[float | None]:
        if self.num_workers == 0:
            return [score_answer(gold, predicted) for gold, predicted in pairs]
        rewards: list[float | None] = [None] * len(pairs)
        # Only golds and predictions that passed the filters travel to a worker; a missing gold is None right away.
        to_check = [i for i, (gold, _) in enumerate(pairs) if gold]
        results = self._get_pool().map([pairs[i] for i in to_check], self.timeout)
        for i, result in zip(to_check, results):
            rewards[i] = result
        return rewards

    def _get_pool(self) -> VerifierPool:
        with self._pool_lock:
            if self._pool is None:
                self._pool = VerifierPool(self.num_workers, self.memory_limit_mb)
            return self._pool

    @property
    def timeouts(self) -> int:
        """Completions whose worker had to be killed at the wall-clock limit so far (soft timeouts not counted)."""
        return 0 if self._pool is None else self._pool.timeouts

    @property
    def worker_deaths(self) -> int:
        """Verifier workers that died on their own (crash, out-of-memory kill, exit) and were replaced so far."""
        return 0 if self._pool is None else self._pool.worker_deaths

    @property
    def unscorable(self) -> int:
        """Completions left unscored (reward None) because their worker died on every attempt, so far."""
        return 0 if self._pool is None else self._pool.unscorable

    def close(self) -> None:
        """Stop the worker subprocesses now (they also stop at interpreter exit)."""
        if self._pool is not None:
            self._pool.close()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_pool"] = None
        state.pop("_pool_lock")
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._pool_lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"MathAccuracyReward(answer_format={self.answer_format!r}, timeout={self.timeout}, "
            f"num_workers={self.num_workers})"
        )


math_accuracy_reward = MathAccuracyReward()
"""Default instance: last ``\\boxed{}``, 5 s per completion, one worker per CPU (max 8). Pass it to TRL as is."""
