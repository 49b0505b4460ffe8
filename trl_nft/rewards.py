r"""Binary math-accuracy reward (1.0 correct, 0.0 wrong, ``None`` for an unusable gold) for TRL trainers.

The reward follows the NFT paper's rule-based verifier: the predicted answer is the content of the LAST
``\boxed{...}`` of a completion, and `math-verify <https://github.com/huggingface/Math-Verify>`_ decides whether it
is equivalent to the gold answer.

Why worker processes: sympy can hang on hostile input (``\boxed{9^{9^{9^{9}}}}`` never finishes) and math-verify's
own timeout relies on ``signal.alarm``, which only works in the main thread, while TRL may call reward functions from
other threads. Every answer is therefore checked in a small pool of long-lived worker subprocesses; a worker that
exceeds the per-completion wall-clock limit is killed and replaced, and its completion scores 0.0. Workers are
started with ``subprocess`` (not ``multiprocessing``), so they never re-import the caller's ``__main__`` script and
work the same from threads, forked processes and ``torchrun`` ranks.

Typical use::

    from trl_nft.rewards import math_accuracy_reward, MathAccuracyReward
    trainer = NFTTrainer(..., reward_funcs=[math_accuracy_reward])          # gold in an `answer` column
    gsm8k_reward = MathAccuracyReward(answer_format="gsm8k", timeout=3.0)   # "#### N" / "A: N" answers
"""

from __future__ import annotations

import atexit
import logging
import math
import os
import re
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections import deque
from decimal import Decimal
from functools import lru_cache
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

ANSWER_FORMATS = ("boxed", "gsm8k", "auto")

# ---------------------------------------------------------------------------------------------------------------
# Text clean-up and answer extraction: pure string work, cheap, done in the calling process.
# ---------------------------------------------------------------------------------------------------------------

# NUL/C0 controls, zero-width and bidi-override characters: invisible, never part of an answer, and a classic way
# to make two answers look equal (or a parser choke).
_INVISIBLE_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b-\u200f\u202a-\u202e\u2060-\u2069\u061c\ufeff]")


def strip_invisible_chars(text: str) -> str:
    """Remove NUL and other control characters, zero-width and bidi-control characters from ``text``."""
    return _INVISIBLE_CHARS.sub("", text)


def _matching_brace(text: str, open_index: int) -> int | None:
    """Index of the ``}`` closing the ``{`` at ``open_index`` (escaped ``\\{``/``\\}`` ignored), or None."""
    depth = 0
    index = open_index
    length = len(text)
    while index < length:
        char = text[index]
        if char == "\\":
            index += 2  # skip the escaped character, e.g. \{ or \}
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return index
        index += 1
    return None


def last_boxed_content(text: str) -> str | None:
    r"""Content of the last ``\boxed{...}`` (or ``\fbox{...}``) in ``text``, matched with balanced braces.

    ``\boxed 5`` (no braces) yields ``"5"``. Returns None when there is no box or the last one is never closed
    (a truncated completion).
    """
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    index = start + (len("\\boxed") if text.startswith("\\boxed", start) else len("\\fbox"))
    while index < len(text) and text[index].isspace():
        index += 1
    if index >= len(text):
        return None
    if text[index] == "{":
        end = _matching_brace(text, index)
        return None if end is None else text[index + 1 : end].strip()
    if index == start + len("\\boxed"):  # "\boxedx" is another command, not a box
        return None
    match = re.match(r"[^\s$]+", text[index:])
    return match.group(0) if match else None


# GSM8K writes the final answer as "#### 18" (dataset) or a final "A: 18" line (example model solutions).
_GSM8K_MARKER = re.compile(r"####[ \t]*([^\n]*)|^[ \t]*A:[ \t]*([^\n]*)", re.MULTILINE)


def gsm8k_final_answer(text: str) -> str | None:
    """The answer after the last ``#### N`` marker or ``A: N`` line of a GSM8K-style solution, or None."""
    matches = list(_GSM8K_MARKER.finditer(text))
    if not matches:
        return None
    found = matches[-1]
    answer = (found.group(1) if found.group(1) is not None else found.group(2)).strip()
    answer = answer.replace("\\$", "").replace("$", "").rstrip(".").strip()
    answer = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", answer)  # 1,234 -> 1234
    return answer or None


def extract_final_answer(text: str, answer_format: str = "boxed") -> str | None:
    r"""The predicted final answer of a completion, or None when it gives none.

    ``answer_format``: ``"boxed"`` (paper, default) takes the last ``\boxed{}``; ``"gsm8k"`` takes the last
    ``#### N`` marker or ``A: N`` line; ``"auto"`` tries the box first, then the GSM8K markers.
    """
    if answer_format not in ANSWER_FORMATS:
        raise ValueError(f"answer_format must be one of {ANSWER_FORMATS}, got {answer_format!r}")
    text = strip_invisible_chars(text)
    if answer_format in ("boxed", "auto"):
        boxed = last_boxed_content(text)
        if boxed is not None or answer_format == "boxed":
            return boxed
    return gsm8k_final_answer(text)


def gold_value_text(gold: Any) -> str | None:
    """Text of a gold value from a dataset cell; None when it holds no usable answer.

    Numbers are written the way a solution would write them (``1e-05`` → ``0.00001``, ``18.0`` → ``18``: `str`
    would give exponents no completion matches); a one-element list is its element, a longer one a comma-separated
    list (read by math-verify as a set of answers). Booleans, NaN/inf, empty lists and other types give None.
    """
    if gold is None or isinstance(gold, bool):
        return None
    if isinstance(gold, str):
        return gold
    if isinstance(gold, int):
        return str(gold)
    if isinstance(gold, float):
        if not math.isfinite(gold):
            return None
        return str(int(gold)) if gold.is_integer() else format(Decimal(repr(gold)), "f")
    if isinstance(gold, (list, tuple)):
        parts = [gold_value_text(item) for item in gold]
        if not parts or any(part is None for part in parts):
            return None
        return ", ".join(parts)
    return None


def extract_gold_answer(gold: Any, answer_format: str = "boxed") -> str | None:
    r"""The gold answer from a dataset value: a bare answer, or a full solution ending in ``\boxed{}``/``#### N``.

    ``A: N`` lines are only read with the ``"gsm8k"``/``"auto"`` formats. Returns None for a missing/empty gold.
    """
    text = gold_value_text(gold)
    if text is None:
        return None
    text = strip_invisible_chars(text).strip()
    if "\\boxed" in text or "\\fbox" in text:
        boxed = last_boxed_content(text)
        if boxed:
            return boxed
    if "####" in text or (answer_format != "boxed" and re.search(r"^[ \t]*A:", text, re.MULTILINE)):
        marked = gsm8k_final_answer(text)
        if marked:
            return marked
    return text or None


def completion_text(completion: Any) -> str:
    """Plain text of a completion: a string, or a conversational list of messages (their contents joined)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        completion = [completion]
    parts = []
    for message in completion or []:
        content = message.get("content", "") if isinstance(message, dict) else message
        if isinstance(content, list):  # multimodal-style [{"type": "text", "text": ...}, ...]
            content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
        parts.append("" if content is None else str(content))
    return "\n".join(parts)


def max_brace_depth(text: str) -> int:
    """Deepest ``{`` nesting in ``text`` (sympy's LaTeX parser slows down badly on deep nesting)."""
    depth = deepest = 0
    for char in text:
        if char == "{":
            depth += 1
            deepest = max(deepest, depth)
        elif char == "}":
            depth -= 1
    return deepest


# ---------------------------------------------------------------------------------------------------------------
# LaTeX normalisation: rewrite common shorthand so that the LaTeX parser reads it as the author meant.
# ---------------------------------------------------------------------------------------------------------------

_SIZED_DELIMITERS = re.compile(r"\\(?:left|right|[bB]igg?[lrm]?)(?![A-Za-z])\s*\.?")
_SPACING_COMMANDS = re.compile(
    r"(?<!\\)\\[,!;:](?![A-Za-z])|\\(?:thinspace|negthinspace|medspace|thickspace)(?![A-Za-z])"
)
_WIDE_SPACES = re.compile(r"\\q?quad(?![A-Za-z])|(?<!\\)\\ |~")
_DEGREES = re.compile(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ(?![A-Za-z])|\\circ(?![A-Za-z])|\\degree(?![A-Za-z])|°")
_TEXT_COMMAND = re.compile(r"\\(?:text(?:rm|bf|it|normal|sf|tt)?|mbox|mathrm|textup)\s*\{")
_FRACTION_COMMANDS = re.compile(r"\\[dtc]frac(?![A-Za-z])")
_BINOM_COMMANDS = re.compile(r"\\[dt]binom(?![A-Za-z])")
_THOUSANDS_NUMBER = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_CHOICE_LETTER = re.compile(r"\(?([A-E])\)?")
_UNIT_EXPONENT_ONLY = re.compile(r"\s*(?:\^\s*\{?\s*\d\s*\}?)?\s*")  # what may follow a unit: "^2", "^{3}"
# Commands whose arguments may be written without braces in TeX: \frac43, \sqrt2, \binom52.
_BRACE_ARGUMENT_COUNT = {"\\frac": 2, "\\binom": 2, "\\sqrt": 1}
_SHORTHAND_COMMAND = re.compile(r"\\(?:frac|binom|sqrt)(?![A-Za-z])")


def _read_tex_argument(text: str, index: int) -> tuple[str, int] | None:
    """Read one TeX argument starting at ``index`` (after spaces): a braced group, a control word or one char."""
    while index < len(text) and text[index] == " ":
        index += 1
    if index >= len(text):
        return None
    if text[index] == "{":
        end = _matching_brace(text, index)
        if end is None:
            return None
        return _brace_shorthand(text[index + 1 : end]), end + 1
    if text[index] == "\\":
        match = re.match(r"\\(?:[A-Za-z]+|.)", text[index:])
        return match.group(0), index + len(match.group(0))
    if text[index] in "}^_&":
        return None
    return text[index], index + 1


def _brace_shorthand(text: str) -> str:
    r"""Give braces to unbraced TeX arguments: ``\frac43`` -> ``\frac{4}{3}``, ``11\sqrt2`` -> ``11\sqrt{2}``."""
    pieces = []
    cursor = 0
    for match in _SHORTHAND_COMMAND.finditer(text):
        if match.start() < cursor:  # inside an argument already rewritten
            continue
        pieces.append(text[cursor : match.start()])
        command = match.group(0)
        index = match.end()
        rewritten = command
        if command == "\\sqrt":  # keep an optional root degree: \sqrt[3]{x}
            degree = re.match(r"\s*\[[^\]]*\]", text[index:])
            if degree:
                rewritten += degree.group(0).strip()
                index += len(degree.group(0))
        for _ in range(_BRACE_ARGUMENT_COUNT[command]):
            argument = _read_tex_argument(text, index)
            if argument is None:
                break
            rewritten += "{" + argument[0] + "}"
            index = argument[1]
        pieces.append(rewritten)
        cursor = index
    pieces.append(text[cursor:])
    return "".join(pieces)


def _rewrite_text_commands(text: str) -> str:
    r"""Handle ``\text{...}``: unwrap a whole-answer text, drop trailing unit text (``5.4\text{ cents}``, ``cm}^2``)."""
    match = _TEXT_COMMAND.match(text)
    if match:
        end = _matching_brace(text, match.end() - 1)
        if end == len(text) - 1:  # the whole answer is text: "\text{(C)}", "\text{Evelyn}"
            inner = text[match.end() : end].strip()
            letter = _CHOICE_LETTER.fullmatch(inner)
            return letter.group(1) if letter else "\\text{" + inner + "}"
    result = text
    for match in reversed(list(_TEXT_COMMAND.finditer(text))):
        end = _matching_brace(text, match.end() - 1)
        if end is None:
            continue
        inner = text[match.end() : end].strip()
        before = result[: match.start()].rstrip()
        after = result[end + 1 :]
        if re.fullmatch(r"(?:and|or|,)", inner):  # "1 \text{ or } 2" -> "1, 2"
            result = before + ", " + after.lstrip()
        elif before and re.fullmatch(r"[A-Za-z][A-Za-z .]*", inner) and _UNIT_EXPONENT_ONLY.fullmatch(after):
            result = before  # trailing unit, with its exponent: "864 \mbox{ inches}^2" -> "864"
    return result


def normalize_latex_answer(answer: str) -> str:
    r"""Rewrite a final answer into LaTeX that math-verify parses as intended.

    Handles ``$``/``\(`` delimiters, ``\dfrac``/``\tfrac``, unbraced arguments (``\frac43``, ``\frac 59``,
    ``11\sqrt2``), ``\left``/``\right``, degree marks, TeX spacing (``\!``, ``\,``, ``\quad``), thousands separators
    (``10,\!080``, ``58,500``), percent signs, unit text (``\text{ cm}^2``) and multiple-choice letters.
    """
    text = strip_invisible_chars(answer).replace("\n", " ").replace("\t", " ")
    text = text.replace("\\$", "").replace("$", "")
    text = re.sub(r"(?<!\\)\\[()\[\]]", " ", text)
    text = text.replace("\\displaystyle", "").replace("\\%", "").replace("%", "")
    text = re.sub(r"(?<=\d)(?:\{,\}|,\\!\s*)(?=\d{3})", "", text)  # thousands: 1{,}000, 10,\!080
    text = _SPACING_COMMANDS.sub("", text)
    text = _WIDE_SPACES.sub(" ", text)
    text = _SIZED_DELIMITERS.sub("", text)
    text = _DEGREES.sub("", text)
    text = _FRACTION_COMMANDS.sub(r"\\frac", text)
    text = re.sub(r"_\{\s*\\([A-Za-z]+)\s*\}", r"_{\1}", text)  # L_{\odot}, m_{\max } -> plain subscripts
    text = re.sub(r"\bnp\.(?=[a-z])", r"\\", text)  # numpy-style answers: np.arcsin(...) -> \arcsin(...)
    text = re.sub(r"(?<=\d)\.(?!\d)", "", text)  # "-1./3" -> "-1/3"
    text = _BINOM_COMMANDS.sub(r"\\binom", text)
    text = re.sub(r"\s+", " ", text).strip()
    if _THOUSANDS_NUMBER.fullmatch(text):
        text = text.replace(",", "")
    text = _rewrite_text_commands(text)
    text = _brace_shorthand(text)
    letter = _CHOICE_LETTER.fullmatch(text)
    if letter and text != letter.group(1):
        text = letter.group(1)  # "(C)" -> "C"
    return text.strip().rstrip(".").strip()


# ---------------------------------------------------------------------------------------------------------------
# Verification proper (math-verify + sympy). Runs inside worker processes; safe to call in-process for trusted input.
# ---------------------------------------------------------------------------------------------------------------

_MAX_DIGITS = 100_000  # numbers above 10**100000 are not answers, they are attacks (or sympy would hang on them)
_MAX_EXPRESSION_NODES = 5_000


def _log10_bound(node) -> float:
    """Rough upper bound of log10|value| of a sympy expression tree, without evaluating it (inf if absurd)."""
    import sympy

    if node.is_Integer:
        return int(node).bit_length() * 0.30103
    if node.is_Rational:
        return max(int(node.p).bit_length(), int(node.q).bit_length()) * 0.30103
    if node.is_Float:
        value = abs(float(node))
        if value == 0.0:  # zero, or so small it underflowed: harmless either way
            return 0.0
        return abs(math.log10(value)) if math.isfinite(value) else math.inf
    if not node.args:
        return 0.0
    parts = [_log10_bound(arg) for arg in node.args]
    if any(math.isinf(part) for part in parts):
        return math.inf
    if isinstance(node, sympy.Pow):
        base_size, exponent_size = parts
        if exponent_size > 7:  # exponents beyond 10**7 can only come from towers
            return math.inf
        return max(base_size, 0.30103) * 10**exponent_size
    if isinstance(node, (sympy.factorial, sympy.gamma, sympy.factorial2, sympy.subfactorial)):
        if parts[0] > 5:
            return math.inf
        count = 10 ** parts[0]
        return count * max(math.log10(count), 1.0)
    if isinstance(node, sympy.Mul):
        return sum(parts)
    return max(parts) + math.log10(len(parts))


def _is_explosive(parsed: list) -> bool:
    """Whether any parsed sympy value is too big to verify (exponent towers, huge factorials, enormous trees)."""
    import sympy

    for value in parsed:
        if not isinstance(value, (sympy.Basic, sympy.MatrixBase)):
            continue
        if isinstance(value, sympy.MatrixBase):
            value = sympy.ImmutableMatrix(value)
        nodes = sum(1 for _ in zip(range(_MAX_EXPRESSION_NODES + 1), sympy.preorder_traversal(value)))
        if nodes > _MAX_EXPRESSION_NODES:
            return True
        if _log10_bound(value) > _MAX_DIGITS:
            return True
    return False


@lru_cache(maxsize=1)
def _extraction_config():
    """math-verify config: read the (normalised) answer from a ``\\boxed{}`` wrapper as LaTeX."""
    from latex2sympy2_extended import NormalizationConfig
    from math_verify import LatexExtractionConfig

    normalization = NormalizationConfig(
        basic_latex=True, units=True, malformed_operators=False, nits=True, boxed="all", equations=False
    )
    return [LatexExtractionConfig(normalization_config=normalization, boxed_match_priority=0)]


def parse_answer(answer: str) -> list:
    """Parse an already-extracted answer with math-verify (list of sympy values and/or a string fallback)."""
    from math_verify import parse

    normalized = normalize_latex_answer(answer)
    if not normalized:
        return []
    return parse("\\boxed{" + normalized + "}", extraction_config=_extraction_config(), parsing_timeout=None)


@lru_cache(maxsize=2048)
def _parse_gold_cached(gold_answer: str) -> list:
    """Golds repeat across the G completions of a prompt: parse each once per worker."""
    return parse_answer(gold_answer)


def score_answer(gold_answer: str | None, predicted_answer: str | None) -> float | None:
    """1.0 if ``predicted_answer`` is equivalent to ``gold_answer``, 0.0 if not, None if the gold can't be parsed.

    Both arguments are extracted answers (no ``\\boxed``). No timeout here: call through `MathAccuracyReward`
    for untrusted input.
    """
    from math_verify import verify

    if not gold_answer:
        return None
    gold = _parse_gold_cached(gold_answer)
    if not gold:
        return None
    if not predicted_answer:
        return 0.0
    predicted = parse_answer(predicted_answer)
    if not predicted or _is_explosive(predicted) or _is_explosive(gold):
        return 0.0
    return 1.0 if verify(gold, predicted, timeout_seconds=None) else 0.0


# ---------------------------------------------------------------------------------------------------------------
# Worker side: a loop reading (job_id, gold, prediction, seconds) requests from a socket.
# ---------------------------------------------------------------------------------------------------------------


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


def _serve_worker(fd: int, memory_limit_mb: int | None) -> None:
    """Entry point of a worker subprocess: answer scoring requests until the socket closes."""
    import signal

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
                result = score_answer(gold, predicted)
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

_PACKAGE_ROOT = str(Path(__file__).resolve().parents[1])
_WORKER_START_TIMEOUT_S = 120.0
_MAX_START_FAILURES = 3


class _Worker:
    """One verifier subprocess and the job it is working on."""

    def __init__(self, memory_limit_mb: int | None):
        parent_socket, child_socket = socket.socketpair()
        child_fd = child_socket.fileno()
        # Appended, not prepended: the worker finds this very trl_nft even when it is not installed, without
        # letting anything shadow the standard library.
        command = (
            f"import sys; sys.path.append({_PACKAGE_ROOT!r}); from trl_nft.rewards import _serve_worker; "
            f"_serve_worker({child_fd}, {memory_limit_mb!r})"
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

    def __init__(self, num_workers: int, memory_limit_mb: int | None = 4096):
        if num_workers < 1:
            raise ValueError("num_workers must be >= 1")
        self.num_workers = num_workers
        self.memory_limit_mb = memory_limit_mb
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self._owner_pid = os.getpid()
        self.timeouts = 0  # jobs killed at the wall-clock limit, over the pool's life
        _LIVE_POOLS.add(self)

    def map(self, jobs: list[tuple[str | None, str | None]], timeout: float) -> list[float | None]:
        """Score each (gold, prediction) pair; a pair not done within ``timeout`` seconds scores 0.0."""
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
        pending = deque(range(len(jobs)))
        start_failures = 0
        while len(self._workers) < min(self.num_workers, len(jobs)):
            self._workers.append(_Worker(self.memory_limit_mb))
        while pending or any(worker.job is not None for worker in self._workers):
            for worker in list(self._workers):
                if pending and worker.ready and worker.job is None:
                    job_id = pending.popleft()
                    try:
                        worker.send_job(job_id, *jobs[job_id], timeout)
                    except OSError:  # it died while idle: requeue the job on a fresh worker
                        pending.appendleft(job_id)
                        self._replace(worker, results, started=True)
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
                except (EOFError, OSError):  # the worker died (crash, out of memory, CPU limit)
                    start_failures += self._replace(worker, results, started=worker.ready)
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
                    self._replace(worker, results, started=True)
                elif not worker.ready and now >= worker.started_at + _WORKER_START_TIMEOUT_S:
                    start_failures += self._replace(worker, results, started=False)
            if start_failures >= _MAX_START_FAILURES:
                self.close()
                raise RuntimeError(
                    f"math verifier workers failed to start {start_failures} times in a row "
                    f"(python: {sys.executable}); check that trl_nft and math-verify import in a fresh interpreter"
                )
        return results

    def _replace(self, worker: _Worker, results: list, started: bool) -> int:
        """Kill ``worker`` (its job scores 0.0) and start a fresh one; returns 1 if it had never become ready."""
        if worker.job is not None:
            results[worker.job] = 0.0
        worker.kill()
        self._workers[self._workers.index(worker)] = _Worker(self.memory_limit_mb)
        return 0 if started else 1

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


def _default_num_workers() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    return max(1, min(8, cpus))


# ---------------------------------------------------------------------------------------------------------------
# The TRL reward function.
# ---------------------------------------------------------------------------------------------------------------


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
        self.num_workers = _default_num_workers() if num_workers is None else int(num_workers)
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
        golds = answer if answer is not None else solution
        if golds is None:
            raise ValueError(f"{self.__name__} needs the gold answers in an `answer` (or `solution`) column")
        if len(golds) != len(completions):
            raise ValueError(f"got {len(completions)} completions but {len(golds)} gold answers")
        predictions = [self.extract(completion) for completion in completions]
        gold_answers = [extract_gold_answer(gold, self.answer_format) for gold in golds]
        rewards = self._score_pairs(list(zip(gold_answers, predictions)))
        if log_extra is not None:
            log_extra("extracted_answer", ["" if p is None else p for p in predictions])
        if log_metric is not None:
            log_metric("no_final_answer_frac", sum(p is None for p in predictions) / max(1, len(predictions)))
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
