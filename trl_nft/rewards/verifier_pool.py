"""A pool of verifier worker subprocesses that score (gold, prediction) pairs with a wall-clock limit per pair.

Why worker processes: sympy can hang on hostile input (``\\boxed{9^{9^{9^{9}}}}`` never finishes) and math-verify's
own timeout relies on ``signal.alarm``, which only works in the main thread, while TRL may call reward functions from
other threads. A worker that exceeds the per-pair limit is killed and replaced, and its pair scores 0.0 (the answer
is too costly to check, as math-verify's own timeout rules). A worker that dies while scoring (out-of-memory kill, a
crash, an exit) is replaced and its pair is scored again once on a fresh worker; if that worker dies too, the pair
is unscorable and its result is ``None`` (TRL treats it as a missing reward), never a 0.0 that would read as a wrong
answer. The pool counts timeouts, worker deaths and unscorable pairs. Workers are started with ``subprocess`` (not
``multiprocessing``), so they never re-import the caller's ``__main__`` script and work the same from threads, forked
processes and ``torchrun`` ranks.
"""

from __future__ import annotations

import atexit
import logging
import math
import os
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections import deque
from multiprocessing.connection import Connection, wait
from pathlib import Path

from trl_nft.rewards.verification import score_answer

logger = logging.getLogger(__name__)

DEFAULT_SCORER = "trl_nft.rewards.verification:score_answer"
_ATTEMPTS_PER_JOB = 2  # a pair whose worker dies is scored once more on a fresh worker, then counted unscorable


class _SoftTimeout(BaseException):
    """Raised by the worker's own interval timer; BaseException so math-verify's ``except Exception`` lets it out."""


def _on_soft_timeout(signum, frame):
    raise _SoftTimeout()


def _limit_worker_resources(memory_limit_mb: int | None) -> None:
    """Cap the worker's address space, so a runaway bignum fails with MemoryError instead of swapping the host."""
    import resource

    if memory_limit_mb:
        limit = memory_limit_mb * 1024 * 1024
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard == resource.RLIM_INFINITY or hard > limit:
            resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _arm_cpu_budget(seconds: float) -> None:
    """Let the kernel kill this worker if one job burns ``seconds`` more CPU: protects against an orphaned worker
    stuck in C code (no Python signal handler can run there) after its parent died without killing it."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = int(usage.ru_utime + usage.ru_stime + seconds) + 2
    if hard == resource.RLIM_INFINITY or soft <= hard:
        resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def _load_scorer(spec: str):
    """``"module:function"`` -> the function (the worker's scoring function, `score_answer` unless a test swaps it)."""
    import importlib

    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def _serve_worker(fd: int, memory_limit_mb: int | None, scorer: str = DEFAULT_SCORER) -> None:
    """Entry point of a worker subprocess: answer scoring requests until the socket closes."""
    import signal

    score = _load_scorer(scorer)
    for name in ("math_verify", "latex2sympy2_extended"):
        logging.getLogger(name).setLevel(logging.CRITICAL)  # timeouts are ours; their warnings are noise
    conn = Connection(fd)
    _limit_worker_resources(memory_limit_mb)
    signal.signal(signal.SIGALRM, _on_soft_timeout)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group; the parent handles it
    score_answer("1", "1")  # import sympy/antlr now, before declaring ourselves ready
    conn.send(("ready", os.getpid()))
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return
        if request is None:
            return
        job_id, gold, predicted, seconds = request
        _arm_cpu_budget(seconds)
        try:
            signal.setitimer(signal.ITIMER_REAL, seconds)  # one-shot: it fires at most once per job
            try:
                result = score(gold, predicted)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        except BaseException:  # _SoftTimeout (even inside `finally`), MemoryError, RecursionError, sympy errors
            result = 0.0
        try:
            conn.send((job_id, result))
        except (EOFError, OSError):
            return


# ---------------------------------------------------------------------------------------------------------------
# Parent side: a pool of worker subprocesses with per-job deadlines.
# ---------------------------------------------------------------------------------------------------------------

_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
_WORKER_START_TIMEOUT_S = 120.0
_MAX_START_FAILURES = 3


class _Worker:
    """One verifier subprocess and the job it is working on."""

    def __init__(self, memory_limit_mb: int | None, scorer: str = DEFAULT_SCORER):
        parent_socket, child_socket = socket.socketpair()
        child_fd = child_socket.fileno()
        # Appended, not prepended: the worker finds this very trl_nft even when it is not installed, without
        # letting anything shadow the standard library.
        command = (
            f"import sys; sys.path.append({_PACKAGE_ROOT!r}); from trl_nft.rewards.verifier_pool import _serve_worker; "
            f"_serve_worker({child_fd}, {memory_limit_mb!r}, {scorer!r})"
        )
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-c", command], pass_fds=(child_fd,), stdin=subprocess.DEVNULL
            )
        finally:
            child_socket.close()
        self.conn = Connection(parent_socket.detach())
        self.started_at = time.monotonic()
        self.ready = False
        self.job: int | None = None
        self.deadline = math.inf

    def send_job(self, job_id: int, gold: str | None, predicted: str | None, timeout: float) -> None:
        """Hand one job to this (idle, ready) worker; the soft in-worker timer fires a bit before the hard kill."""
        self.conn.send((job_id, gold, predicted, max(0.05, 0.8 * timeout)))
        self.job = job_id
        self.deadline = time.monotonic() + timeout

    def kill(self) -> None:
        """Stop the subprocess now and release its socket."""
        try:
            self.process.kill()
            self.process.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.conn.close()

    def stop(self) -> None:
        """Ask the subprocess to exit, killing it if it does not."""
        try:
            self.conn.send(None)
            self.process.wait(timeout=2)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            pass
        self.kill()


_LIVE_POOLS: weakref.WeakSet[VerifierPool] = weakref.WeakSet()


class VerifierPool:
    """Long-lived verifier subprocesses that score (gold, prediction) pairs with a wall-clock limit per pair.

    Started lazily, reused across calls, shut down at interpreter exit. Thread-safe (calls are serialised).
    In a forked child the inherited workers belong to the parent, so the child starts its own.
    """

    def __init__(self, num_workers: int, memory_limit_mb: int | None = 4096, scorer: str = DEFAULT_SCORER):
        if num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers!r}")
        self.num_workers = num_workers
        self.memory_limit_mb = memory_limit_mb
        self.scorer = scorer  # "module:function" each worker scores with
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self._owner_pid = os.getpid()
        self.timeouts = 0  # jobs killed at the wall-clock limit, over the pool's life
        self.worker_deaths = 0  # workers that died on their own (crash, OOM kill, exit), over the pool's life
        self.unscorable = 0  # jobs whose worker died on every attempt (result None), over the pool's life
        _LIVE_POOLS.add(self)

    def map(self, jobs: list[tuple[str | None, str | None]], timeout: float) -> list[float | None]:
        """Score each (gold, prediction) pair; a pair not done within ``timeout`` seconds scores 0.0, a pair whose
        worker died on both attempts is None."""
        if not jobs:
            return []
        with self._lock:
            self._forget_if_forked()
            return self._run(jobs, timeout)

    def _forget_if_forked(self) -> None:
        if os.getpid() != self._owner_pid:
            self._forget_inherited_workers()

    def _forget_inherited_workers(self) -> None:
        """Drop workers inherited through fork without touching them: they are the parent's processes."""
        for worker in self._workers:
            worker.conn.close()
        self._workers = []
        self._owner_pid = os.getpid()

    def _run(self, jobs: list[tuple[str | None, str | None]], timeout: float) -> list[float | None]:
        results: list[float | None] = [0.0] * len(jobs)
        attempts = [0] * len(jobs)
        pending = deque(range(len(jobs)))
        start_failures = 0
        while len(self._workers) < min(self.num_workers, len(jobs)):
            self._workers.append(_Worker(self.memory_limit_mb, self.scorer))
        while pending or any(worker.job is not None for worker in self._workers):
            for worker in list(self._workers):
                if pending and worker.ready and worker.job is None:
                    job_id = pending.popleft()
                    try:
                        worker.send_job(job_id, *jobs[job_id], timeout)
                        attempts[job_id] += 1
                    except OSError:  # it died while idle: requeue the job on a fresh worker
                        pending.appendleft(job_id)
                        self.worker_deaths += 1
                        self._replace(worker)
            waiting = [worker for worker in self._workers if worker.job is not None or not worker.ready]
            now = time.monotonic()
            next_deadline = min(
                [worker.deadline for worker in waiting if worker.job is not None]
                + [worker.started_at + _WORKER_START_TIMEOUT_S for worker in waiting if not worker.ready]
            )
            ready_conns = wait([worker.conn for worker in waiting], timeout=max(0.0, next_deadline - now))
            for worker in [worker for worker in waiting if worker.conn in ready_conns]:
                try:
                    message = worker.conn.recv()
                except (EOFError, OSError):  # the worker died (crash, out of memory, CPU limit, exit)
                    if not worker.ready:
                        start_failures += 1
                    else:
                        self.worker_deaths += 1
                    if worker.job is not None:
                        self._retry_or_give_up(worker.job, attempts, pending, results)
                    self._replace(worker)
                    continue
                if message[0] == "ready":
                    worker.ready = True
                    start_failures = 0
                elif message[0] == worker.job:
                    results[worker.job] = message[1]
                    worker.job, worker.deadline = None, math.inf
            now = time.monotonic()
            for worker in list(self._workers):
                if worker.job is not None and now >= worker.deadline:
                    self.timeouts += 1
                    results[worker.job] = 0.0  # too costly to check: scored as math-verify's own timeout scores it
                    self._replace(worker)
                elif not worker.ready and now >= worker.started_at + _WORKER_START_TIMEOUT_S:
                    start_failures += 1
                    self._replace(worker)
            if start_failures >= _MAX_START_FAILURES:
                self.close()
                raise RuntimeError(
                    f"math verifier workers failed to start {start_failures} times in a row "
                    f"(python: {sys.executable}); check that trl_nft and math-verify import in a fresh interpreter"
                )
        return results

    def _retry_or_give_up(self, job_id: int, attempts: list[int], pending: deque, results: list) -> None:
        """The worker scoring ``job_id`` died: queue it for a fresh worker, or mark it unscorable (None)."""
        if attempts[job_id] < _ATTEMPTS_PER_JOB:
            pending.appendleft(job_id)
            return
        results[job_id] = None
        self.unscorable += 1
        logger.warning(
            "math verifier: a worker died %d times while scoring the same answer; that completion is unscorable "
            "(reward None, left out of its group's correct rate)", attempts[job_id]
        )

    def _replace(self, worker: _Worker) -> None:
        """Kill and reap ``worker`` and start a fresh one in its place (the caller settles the job it held)."""
        worker.kill()
        self._workers[self._workers.index(worker)] = _Worker(self.memory_limit_mb, self.scorer)

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter teardown: nothing useful left to do
            pass

    def close(self) -> None:
        """Stop all worker subprocesses (a later `map` starts new ones)."""
        if os.getpid() != self._owner_pid:
            self._forget_inherited_workers()
            return
        workers, self._workers = self._workers, []
        for worker in workers:
            worker.stop()


def _close_all_pools() -> None:
    for pool in list(_LIVE_POOLS):
        pool.close()


def _reset_pools_after_fork() -> None:
    for pool in list(_LIVE_POOLS):
        pool._lock = threading.Lock()  # the parent's lock may have been held by another thread at fork time
        pool._forget_inherited_workers()


atexit.register(_close_all_pools)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_pools_after_fork)


def default_num_workers() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    return max(1, min(8, cpus))
