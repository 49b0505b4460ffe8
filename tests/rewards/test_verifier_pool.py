"""Verifier workers that die while scoring: replaced, the answer scored again or left unscored (None, never a 0.0
that reads as wrong), counted, and no worker process left behind. The workers run `tests.rewards.dying_scorers`."""

from __future__ import annotations

import os
import signal
import threading
import time

import psutil
import pytest
from datasets import Dataset

from tests.conftest import tiny_args
from trl_nft import NFTConfig, NFTTrainer
from trl_nft.rewards import MathAccuracyReward
from trl_nft.rewards.verifier_pool import VerifierPool

DYING_SCORER = "tests.rewards.dying_scorers:score"
TIMEOUT_S = 30.0  # per pair; none of these pairs comes near it


_EARLIER_CHILDREN: set[int] = set()


@pytest.fixture(autouse=True)
def earlier_children():
    """Children alive before the test (another test's shared verifier pool, say) are not this test's workers."""
    _EARLIER_CHILDREN.clear()
    _EARLIER_CHILDREN.update(child.pid for child in psutil.Process().children(recursive=True))
    yield


def verifier_workers(include_zombies=True):
    """This test's verifier worker subprocesses (zombies too: a dead worker nobody reaped still counts): children
    running the dying scorer, started after the test began."""
    workers = []
    for child in psutil.Process().children(recursive=True):
        if child.pid in _EARLIER_CHILDREN:
            continue
        try:
            if DYING_SCORER in " ".join(child.cmdline()) or (include_zombies and child.status() == "zombie"):
                workers.append(child)
        except psutil.ZombieProcess:
            workers.append(child)
        except psutil.NoSuchProcess:
            pass
    return workers


@pytest.fixture
def pool():
    pool = VerifierPool(num_workers=2, memory_limit_mb=None, scorer=DYING_SCORER)
    yield pool
    pool.close()


def test_worker_killed_while_scoring_is_replaced_and_the_answer_scored_again(pool, tmp_path):
    pid_file = tmp_path / "scoring.pid"
    jobs = [("5", "5"), (f"wait-for-kill:{pid_file}", "5"), ("5", "4")]
    results = {}
    scoring = threading.Thread(target=lambda: results.update(value=pool.map(jobs, TIMEOUT_S)))
    scoring.start()
    deadline = time.monotonic() + 120
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    victim = int(pid_file.read_text())
    os.kill(victim, signal.SIGKILL)  # as the out-of-memory killer does, in the middle of a job
    scoring.join(timeout=120)
    assert results["value"] == [1.0, 1.0, 0.0]  # the retry (on a fresh worker) scored it
    assert (pool.worker_deaths, pool.unscorable, pool.timeouts) == (1, 0, 0)
    workers = verifier_workers()
    assert victim not in [worker.pid for worker in workers]  # reaped, not a zombie
    assert len(workers) == 2 and all(worker.status() != "zombie" for worker in workers)
    pool.close()
    assert verifier_workers() == []


def test_workers_dying_on_every_attempt_leave_the_answer_unscored_not_wrong(pool, tmp_path):
    jobs = [("sigkill", "5"), ("exit", "5"), (f"sigkill-once:{tmp_path / 'flag'}", "5"), ("5", "5"), ("5", "6")]
    assert pool.map(jobs, TIMEOUT_S) == [None, None, 1.0, 1.0, 0.0]
    assert (pool.worker_deaths, pool.unscorable) == (5, 2)  # 2 + 2 for the hopeless pairs, 1 for the lucky one
    assert pool.map([("5", "5")], TIMEOUT_S) == [1.0]  # the pool goes on
    assert len(verifier_workers()) == 2
    pool.close()
    assert verifier_workers() == []


def test_training_goes_on_and_logs_the_deaths(base_model, tokenizer, tmp_path):
    """The math reward in a trainer: prompts whose pairs cannot be scored get None rewards (no loss), the run ends,
    and the metrics count the deaths; then no worker is left."""
    reward = MathAccuracyReward(num_workers=1, memory_limit_mb=None, timeout=TIMEOUT_S)
    reward._pool = VerifierPool(1, memory_limit_mb=None, scorer=DYING_SCORER)
    dataset = Dataset.from_dict({"prompt": ["1+1=", "2+2="], "answer": ["exit", "4"]})
    args = tiny_args(NFTConfig, tmp_path, per_device_train_batch_size=8, num_generations=4, max_steps=1)
    trainer = NFTTrainer(model=base_model, reward_funcs=reward, args=args, train_dataset=dataset,
                         processing_class=tokenizer)
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "loss" in entry][0]
    assert reward.unscorable == 4 and reward.worker_deaths == 8  # the "exit" prompt's 4 completions, twice each
    assert logged["verifier_worker_deaths"] == 8.0
    assert logged["unscorable_frac"] == pytest.approx(0.5)
    reward.close()
    assert verifier_workers() == []
