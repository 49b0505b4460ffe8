"""Reward functions chosen by name at launch, as in `trl grpo --reward_funcs ...`.

A name is either registered here or a dotted import path (``my_pkg.my_module.my_reward``, importable from the
current directory). `reward_weights` (a GRPOConfig option) weights them; NFT then needs the weighted sum of a
completion's rewards to lie in [0, 1] unless `reward_threshold` is set.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable

# name -> what it is, for `--help` and error messages. Builders are resolved lazily (TRL's rewards import heavy deps).
REGISTERED_REWARDS = {
    "math_accuracy_reward": "trl_nft's verifier: last \\boxed{} + math-verify, in worker processes with a timeout "
    "(configured by --answer_format, --reward_timeout, --reward_workers); the default",
    "dapo_math_reward": "the official NFT training verifier (verl's DAPO strict-box rule): the last \\boxed{} in the "
    "last 100 decoded characters must equal the gold exactly; the 7B / 32B paper recipes train with it",
    "accuracy_reward": "TRL's trl.rewards.accuracy_reward (math-verify on the whole completion, `solution` column)",
    "reasoning_accuracy_reward": "TRL's trl.rewards.reasoning_accuracy_reward (answer after </think>)",
    "think_format_reward": "TRL's trl.rewards.think_format_reward (1 if the completion has a <think>...</think> block)",
}


def _registered(name: str, math_reward_options: dict) -> Callable:
    if name == "math_accuracy_reward":
        from trl_nft.rewards.math_accuracy import MathAccuracyReward

        return MathAccuracyReward(**math_reward_options)
    if name == "dapo_math_reward":
        from trl_nft.rewards.dapo_math import DapoMathReward

        return DapoMathReward()  # NFTTrainer binds its tokenizer
    import trl.rewards

    return getattr(trl.rewards, name)


def _from_dotted_path(path: str) -> Callable:
    module_name, _, attribute = path.rpartition(".")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `trl grpo`: a module next to the launch directory is found
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"reward function {path!r}: cannot import module {module_name!r} ({error})") from error
    function = getattr(module, attribute, None)
    if function is None:
        raise ValueError(f"reward function {path!r}: module {module_name!r} has no attribute {attribute!r}")
    if not callable(function):
        raise ValueError(f"reward function {path!r} is a {type(function).__name__}, not a callable")
    return function


def resolve_reward_funcs(names: list[str], math_reward_options: dict | None = None) -> list[Callable]:
    """The reward functions for `names` (registered names or dotted paths), in order.

    `math_reward_options` are keyword arguments of `MathAccuracyReward` for the `math_accuracy_reward` entry.
    Raises a ValueError naming the unknown entry and the registered names.
    """
    if not names:
        raise ValueError(f"reward_funcs is empty: give at least one of {sorted(REGISTERED_REWARDS)} or a dotted path")
    functions = []
    for name in names:
        if name in REGISTERED_REWARDS:
            functions.append(_registered(name, math_reward_options or {}))
        elif "." in name.strip(".") and not name.startswith("."):
            functions.append(_from_dotted_path(name))
        else:
            raise ValueError(
                f"unknown reward function {name!r}: use one of {sorted(REGISTERED_REWARDS)} or a dotted import path "
                "such as my_pkg.my_module.my_reward"
            )
    return functions
