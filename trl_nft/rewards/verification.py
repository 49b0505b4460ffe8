"""Verification proper (math-verify + sympy): is a predicted answer equivalent to the gold?

No timeout here: `trl_nft.rewards.verifier_pool` runs these functions in worker processes with a deadline. Safe to
call in-process for trusted input.
"""

from __future__ import annotations

import math
from functools import lru_cache

from trl_nft.rewards.latex import normalize_latex_answer

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
