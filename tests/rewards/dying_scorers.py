"""Scoring functions for verifier workers that die on cue (`VerifierPool(scorer="tests.rewards.dying_scorers:score")`).

The gold answer says what the worker does while scoring a pair (so it works whatever a model generated):

- ``"sigkill"`` / ``"exit"``: SIGKILL itself / exit with status 3, on every attempt;
- ``"sigkill-once:<flag file>"``: SIGKILL itself on the first attempt (creating the flag), score 1.0 on the retry;
- ``"wait-for-kill:<pid file>"``: on the first attempt write its pid and sleep (the test kills it from outside),
  score 1.0 on the retry;
- any other gold: the real `score_answer`.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from trl_nft.rewards.verification import score_answer

SLEEP_UNTIL_KILLED_S = 60.0


def score(gold, predicted):
    command, _, argument = (gold or "").partition(":")
    if command == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    if command == "exit":
        os._exit(3)
    if command in ("sigkill-once", "wait-for-kill"):
        flag = Path(argument)
        if flag.exists():
            return 1.0
        temporary = flag.with_suffix(".tmp")
        temporary.write_text(str(os.getpid()))
        temporary.replace(flag)  # the test reads a whole pid or nothing
        if command == "sigkill-once":
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(SLEEP_UNTIL_KILLED_S)
    return score_answer(gold, predicted)
