"""Tests for trl_nft.rewards: answer extraction, LaTeX normalisation, verification, and the worker pool's safety."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from trl_nft.rewards import (
    MathAccuracyReward,
    extract_final_answer,
    extract_gold_answer,
    gsm8k_final_answer,
    last_boxed_content,
    math_accuracy_reward,
    normalize_latex_answer,
    score_answer,
)

from tests.conftest import REPO_ROOT, SHARED_DATA

MATH_EVAL = SHARED_DATA / "math_eval"
GSM8K_SOLUTIONS = SHARED_DATA / "gsm8k" / "example_model_solutions.jsonl"
GSM8K_MODELS = ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification")


def hostile_completions() -> list[str]:
    """48 completions built to hang, crash or exhaust a naive verifier (the gold they are checked against is 5)."""
    junk = "".join("{}\\^_$()[]abc123 \n"[(i * 7919) % 18] for i in range(200_000))

    def nested(depth: int, opener: str) -> str:
        return opener * depth + "1" + "}" * depth

    matrix = r"\\".join("&".join(str(i * j) for j in range(12)) for i in range(12))
    return [
        r"\boxed{9^{9^{9^{9^{9}}}}}", r"\boxed{9^{9^{9}}}", r"\boxed{2^{2^{40}}}", r"\boxed{10^{10^{10}}}",
        r"\boxed{99999999999!}", r"\boxed{(10^{100})!}", r"\boxed{\sqrt{2}^{10^{9}}}", r"\boxed{x^{10^{9}}-1}",
        r"\boxed{2^2^2^2^2^2^2^2^2^2}", r"\boxed{" + "9" * 400 + "^{" + "9" * 400 + "}}",
        r"\boxed{" + "{" * 10_000 + "1" + "}" * 10_000 + "}", r"\boxed{" + "{" * 10_000 + "1",
        r"\boxed{" + nested(20, r"\frac{1}{") + "}", r"\boxed{" + nested(20, r"\sqrt{") + "}",
        r"\boxed{" + "(" * 450 + "1" + ")" * 450 + "}", r"\boxed{" + r"\left(" * 150 + "1" + r"\right)" * 150 + "}",
        junk, "\\boxed{" * 30_000, r"\frac{" * 30_000, junk + r"\boxed{5}", r"\boxed{" + junk + "}",
        r"\boxed{\frac{1}{0}}", r"\boxed{0/0}", r"\boxed{\infty-\infty}", r"\boxed{\frac{0}{0}}",
        "\\boxed{1\x002}", "\\boxed{\u202e5}", "\\boxed{5\u2066\u2069}\x00", "\x00" * 100_000 + "\\boxed{5}",
        r"\boxed{\sum_{n=1}^{10^{10}} n}", r"\boxed{\prod_{k=1}^{10^{6}} k}", r"\boxed{\int_0^1 e^{x^{2}} dx}",
        r"\boxed{\binom{10^{9}}{10^{5}}}", r"\boxed{" + "+".join(["x"] * 300) + "}",
        r"\boxed{\begin{pmatrix}" + matrix + r"\end{pmatrix}}",
        r"\boxed{10^{-10^{10}}}", r"\boxed{e^{e^{e^{e^{10}}}}}", r"\boxed{\Gamma(10^{20})}", r"\boxed{1.5^{10^{8}}}",
        r"\boxed{\sin(10^{10^{5}})}", r"\boxed{\lfloor 10^{10^{7}} \pi \rfloor}", r"\boxed{\sqrt[10^{9}]{2}}",
        r"\boxed{\frac{d^{1000}}{dx^{1000}} x^{1000}}", r"\boxed{\lim_{x\to\infty} x^{x^{x}}}",
        r"\boxed{5}" + r"\boxed{" * 5, r"\boxed{" + "\\" * 999 + "}", r"\boxed{\text{" + "a" * 990 + "}}",
        r"\boxed{\mathbb{R}^{10^{10}}}",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def reward():
    scorer = MathAccuracyReward(timeout=5.0)
    yield scorer
    scorer.close()


def _math_eval_golds() -> list[str]:
    if not MATH_EVAL.is_dir():
        pytest.skip(f"shared benchmark data not found at {MATH_EVAL}")
    golds = []
    for path in sorted(MATH_EVAL.glob("*.jsonl")):
        golds += [json.loads(line)["answer"] for line in path.read_text().splitlines() if line.strip()]
    return golds


# --- extraction and normalisation (pure functions) -------------------------------------------------------------


def test_last_boxed_content_uses_balanced_braces_and_the_last_box():
    assert last_boxed_content(r"first \boxed{1} then \boxed{\frac{1}{2}} done") == r"\frac{1}{2}"
    assert last_boxed_content(r"\boxed{\{1, 2\}}") == r"\{1, 2\}"
    assert last_boxed_content(r"\fbox{7}") == "7"
    assert last_boxed_content(r"so \boxed 5$.") == "5"
    assert last_boxed_content(r"\boxed{3} and an unfinished \boxed{4") is None
    assert last_boxed_content("no box here") is None


def test_gsm8k_answer_markers():
    assert gsm8k_final_answer("work\n#### 1,234") == "1234"
    assert gsm8k_final_answer("work\nA: $18.") == "18"
    assert gsm8k_final_answer("no marker 25") is None
    assert extract_final_answer("x\nA: 3", "gsm8k") == "3"
    assert extract_final_answer(r"x \boxed{4}" + "\nA: 3", "auto") == "4"
    assert extract_final_answer("x\nA: 3", "auto") == "3"
    assert extract_final_answer("x\nA: 3", "boxed") is None


def test_gold_answer_extraction():
    assert extract_gold_answer(r"so the answer is $\boxed{\frac{1}{2}}$.") == r"\frac{1}{2}"
    assert extract_gold_answer("reasoning\n#### 72") == "72"
    assert extract_gold_answer(18) == "18"
    assert extract_gold_answer("  ") is None
    assert extract_gold_answer(None) is None


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        (r"\frac43", r"\frac{4}{3}"),
        (r"\frac 59", r"\frac{5}{9}"),
        (r"\dfrac{17}{50}", r"\frac{17}{50}"),
        (r"\tfrac12", r"\frac{1}{2}"),
        (r"11\sqrt2", r"11\sqrt{2}"),
        (r"\frac{\sqrt3}2", r"\frac{\sqrt{3}}{2}"),
        (r"\left( 3, \frac{\pi}{2} \right)", r"( 3, \frac{\pi}{2} )"),
        (r"90^\circ", "90"),
        (r"10,\!080", "10080"),
        (r"\$32,\!348", "32348"),
        ("58,500", "58500"),
        (r"5.4 \text{ cents}", "5.4"),
        (r"864 \mbox{ inches}^2", "864"),
        (r"\text{(C)}", "C"),
        (r"50\%", "50"),
        ("$-1./3$", "-1/3"),
        ("1\x00\u202e2", "12"),
    ],
)
def test_normalize_latex_answer(raw, normalized):
    assert normalize_latex_answer(raw) == normalized


@pytest.mark.parametrize(
    ("gold", "predicted", "expected"),
    [
        (r"\frac43", r"\frac{4}{3}", 1.0),
        (r"\frac43", "4/3", 1.0),
        (r"11\sqrt2", r"11 \sqrt {2}", 1.0),
        (r"90^\circ", "90", 1.0),
        (r"10,\!080", "10080", 1.0),
        (r"\text{(C)}", "(C)", 1.0),
        (r"\frac{\sqrt{3}}{3}", r"\frac{1}{\sqrt3}", 1.0),
        ("1,-2", "-2, 1", 1.0),
        (r"\frac43", r"\frac34", 0.0),
        ("204", "205", 0.0),
        (r"\text{(C)}", "D", 0.0),
        (r"\sqrt{2}", "2", 0.0),
        ("1,-2", "1,2", 0.0),
        ("5", None, 0.0),
        ("}{", "5", None),
    ],
)
def test_score_answer_in_process(gold, predicted, expected):
    assert score_answer(gold, predicted) == expected


# --- the reward function ---------------------------------------------------------------------------------------


def test_every_math_eval_gold_matches_itself(reward):
    golds = _math_eval_golds()
    assert len(golds) == 1546
    scores = reward(completions=[f"The answer is \\boxed{{{gold}}}." for gold in golds], answer=golds)
    mismatched = [gold for gold, score in zip(golds, scores) if score != 1.0]
    assert mismatched == []


def test_gsm8k_example_solutions_agree_with_human_labels():
    if not GSM8K_SOLUTIONS.is_file():
        pytest.skip(f"shared GSM8K data not found at {GSM8K_SOLUTIONS}")
    rows = [json.loads(line) for line in GSM8K_SOLUTIONS.read_text().splitlines() if line.strip()]
    completions, golds, labels = [], [], []
    for row in rows:
        for model in GSM8K_MODELS:
            completions.append(row[model]["solution"])
            golds.append(row["ground_truth"])
            labels.append(row[model]["is_correct"])
    scorer = MathAccuracyReward(answer_format="gsm8k")
    try:
        scores = scorer(completions=completions, answer=golds)
    finally:
        scorer.close()
    agreement = sum((score == 1.0) == label for score, label in zip(scores, labels)) / len(labels)
    assert len(labels) == 4 * 1319
    assert agreement >= 0.995


def test_wrong_answers_last_box_rule_and_trl_call_convention(reward):
    completions = [
        r"I first thought \boxed{3}, but actually \boxed{4}.",
        r"I first thought \boxed{4}, but actually \boxed{3}.",
        "The answer is 4.",  # no box: 0.0 even though the number is right
        [{"role": "assistant", "content": r"Conversational: \boxed{\dfrac{8}{2}}"}],
        r"\boxed{5}",
    ]
    logged = {}
    scores = reward(
        prompts=["p"] * 5,
        completions=completions,
        completion_ids=[[1]] * 5,
        answer=["4"] * 5,
        trainer_state=None,
        log_extra=lambda column, values: logged.setdefault(column, values),
        log_metric=lambda name, value: logged.setdefault(name, value),
    )
    assert scores == [1.0, 0.0, 0.0, 1.0, 0.0]
    assert logged["extracted_answer"][:2] == ["4", "3"]


def test_solution_column_and_unparsable_gold(reward):
    scores = reward(completions=[r"\boxed{2}", r"\boxed{2}", r"\boxed{2}"], solution=["2", "}{", None])
    assert scores == [1.0, None, None]
    with pytest.raises(ValueError, match="answer"):
        reward(completions=[r"\boxed{2}"])


def test_default_instance_is_a_named_picklable_reward():
    assert math_accuracy_reward.__name__ == "math_accuracy_reward"
    clone = pickle.loads(pickle.dumps(MathAccuracyReward(timeout=3.0, num_workers=1)))
    try:
        assert clone(completions=[r"\boxed{7}"], answer=["7"]) == [1.0]
    finally:
        clone.close()


def test_timeout_works_from_a_non_main_thread():
    scorer = MathAccuracyReward(timeout=2.0, num_workers=2)
    slow = r"\boxed{\prod_{k=1}^{10^{6}} k}"  # sympy grinds on this well past the limit
    outcome = {}

    def run():
        started = time.monotonic()
        outcome["scores"] = scorer(completions=[slow, r"\boxed{\frac{1}{2}}"], answer=["5", "0.5"])
        outcome["seconds"] = time.monotonic() - started

    try:
        worker = threading.Thread(target=run)
        worker.start()
        worker.join(timeout=60)
        assert not worker.is_alive()
    finally:
        scorer.close()
    assert outcome["scores"] == [0.0, 1.0]
    assert outcome["seconds"] < 20


def test_a_stuck_worker_is_killed_and_replaced():
    scorer = MathAccuracyReward(timeout=1.0, num_workers=1)
    try:
        assert scorer(completions=[r"\boxed{1}"], answer=["1"]) == [1.0]
        stuck_pid = scorer._pool._workers[0].process.pid
        os.kill(stuck_pid, signal.SIGSTOP)  # frozen like a worker stuck in C code: only a kill gets it back
        started = time.monotonic()
        assert scorer(completions=[r"\boxed{1}"], answer=["1"]) == [0.0]
        assert time.monotonic() - started < 15
        assert scorer.timeouts == 1
        assert scorer(completions=[r"\boxed{1}"], answer=["1"]) == [1.0]
        assert scorer._pool._workers[0].process.pid != stuck_pid
    finally:
        scorer.close()


def test_hostile_batch_finishes_quickly_without_crashing():
    completions = hostile_completions()
    assert len(completions) == 48
    scorer = MathAccuracyReward(timeout=5.0)
    try:
        started = time.monotonic()
        scores = scorer(completions=completions, answer=["5"] * len(completions))
        elapsed = time.monotonic() - started
    finally:
        scorer.close()
    assert elapsed < 30
    assert len(scores) == 48 and set(scores) <= {0.0, 1.0}
    assert scores[:12] == [0.0] * 12  # towers, giant factorials, 10^4 nested braces
    assert scores[19] == 1.0  # junk followed by a real \boxed{5}


def test_forked_child_gets_its_own_workers(reward):
    assert reward(completions=[r"\boxed{1}"], answer=["1"]) == [1.0]
    parent_pids = [worker.process.pid for worker in reward._pool._workers]
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the forked child
        try:
            result = reward(completions=[r"\boxed{2}", r"\boxed{3}"], answer=["2", "2"])
            os.write(write_end, json.dumps(result).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        child_result = pipe.read()
    os.waitpid(child, 0)
    assert json.loads(child_result) == [1.0, 0.0]
    assert [worker.process.pid for worker in reward._pool._workers] == parent_pids
    assert reward(completions=[r"\boxed{1}"], answer=["1"]) == [1.0]


def test_workers_stop_when_the_interpreter_exits(tmp_path):
    script = textwrap.dedent(
        """
        from trl_nft.rewards import math_accuracy_reward
        assert math_accuracy_reward(completions=[r"\\boxed{1}"], answer=["1"]) == [1.0]
        print(" ".join(str(w.process.pid) for w in math_accuracy_reward._pool._workers))
        """
    )
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    pids = [int(pid) for pid in done.stdout.split()]
    assert pids
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_workers_stop_when_the_parent_is_killed(tmp_path):
    # SIGKILL (an out-of-memory kill, a launcher killing a failed rank) runs no atexit hook and no finaliser: the
    # workers must notice their closed socket and exit by themselves.
    pid_file = tmp_path / "pids.txt"
    script = textwrap.dedent(
        f"""
        import os, signal
        from trl_nft.rewards import MathAccuracyReward
        reward = MathAccuracyReward(num_workers=2)
        assert reward(completions=[r"\\boxed{{1}}", r"\\boxed{{2}}"], answer=["1", "3"]) == [1.0, 0.0]
        open({str(pid_file)!r}, "w").write(" ".join(str(w.process.pid) for w in reward._pool._workers))
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    # Output to DEVNULL, not pipes: surviving workers would hold a pipe open and make `run` wait for them.
    done = subprocess.run([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          timeout=120, env=env)
    assert done.returncode == -signal.SIGKILL
    pids = [int(pid) for pid in pid_file.read_text().split()]
    assert len(pids) == 2

    def alive(pid: int) -> bool:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return False
        return state != "Z"

    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in pids if alive(pid)], "verifier workers outlived their killed parent"


@pytest.mark.parametrize("reward_name", ["math_accuracy_reward", "dapo_math_reward"])
def test_a_dataset_without_gold_answers_names_the_columns(reward_name):
    from trl_nft import rewards

    reward = getattr(rewards, reward_name)
    with pytest.raises(ValueError, match=rf"{reward_name} needs the gold answers in an `answer` \(or `solution`\)"):
        reward(["\\boxed{1}"], completion_ids=[[1]])
