"""Reward functions (verifiers) for NFT, usable with any TRL trainer; registered names for `--reward_funcs`.

* `math_accuracy_reward` / `MathAccuracyReward`: last ``\\boxed{}`` checked by math-verify for equivalence, in worker
  processes with a timeout (default for users' own data and for evaluation).
* `dapo_math_reward` / `DapoMathReward`: the official NFT training verifier (verl's DAPO strict-box rule: exact
  match of the last ``\\boxed{}`` in the last 100 decoded characters); the 7B and 32B paper recipes train with it.

Modules: `answers` (extraction), `latex` (normalisation), `verification` (math-verify), `verifier_pool` (worker
processes), `math_accuracy` (the reward), `dapo_math` (the official training verifier), `registry` (names usable
on the command line).
"""

from trl_nft.rewards.answers import (
    ANSWER_FORMATS,
    completion_text,
    extract_final_answer,
    extract_gold_answer,
    gold_value_text,
    gsm8k_final_answer,
    last_boxed_content,
    strip_invisible_chars,
)
from trl_nft.rewards.dapo_math import DapoMathReward, dapo_math_reward
from trl_nft.rewards.latex import normalize_latex_answer
from trl_nft.rewards.math_accuracy import MathAccuracyReward, math_accuracy_reward
from trl_nft.rewards.verification import parse_answer, score_answer

__all__ = [
    "ANSWER_FORMATS",
    "DapoMathReward",
    "MathAccuracyReward",
    "completion_text",
    "dapo_math_reward",
    "extract_final_answer",
    "extract_gold_answer",
    "gold_value_text",
    "gsm8k_final_answer",
    "last_boxed_content",
    "math_accuracy_reward",
    "normalize_latex_answer",
    "parse_answer",
    "score_answer",
    "strip_invisible_chars",
]
