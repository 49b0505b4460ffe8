r"""Answer extraction: the final answer of a completion, the gold answer of a dataset cell. Pure string work.

The paper's rule takes the content of the LAST ``\boxed{...}`` of a completion; GSM8K-style data writes ``#### N``
(dataset) or a final ``A: N`` line (model solutions).
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from typing import Any

ANSWER_FORMATS = ("boxed", "gsm8k", "auto")

# NUL/C0 controls, zero-width and bidi-override characters: invisible, never part of an answer, and a classic way
# to make two answers look equal (or a parser choke).
_INVISIBLE_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b-\u200f\u202a-\u202e\u2060-\u2069\u061c\ufeff]")


def strip_invisible_chars(text: str) -> str:
    """Remove NUL and other control characters, zero-width and bidi-control characters from ``text``."""
    return _INVISIBLE_CHARS.sub("", text)


def matching_brace(text: str, open_index: int, skip_escaped: bool = True) -> int | None:
    """Index of the ``}`` closing the ``{`` at ``open_index``, or None. Escaped ``\\{``/``\\}`` are ignored unless
    ``skip_escaped=False`` (verl's strict-box rule counts every brace character)."""
    depth = 0
    index = open_index
    length = len(text)
    while index < length:
        char = text[index]
        if char == "\\" and skip_escaped:
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
        end = matching_brace(text, index)
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


def gold_column(reward_name: str, answer: list | None, solution: list | None) -> list:
    """The gold answers a math reward scores against: the `answer` column, else TRL's `solution` column."""
    golds = answer if answer is not None else solution
    if golds is None:
        raise ValueError(f"{reward_name} needs the gold answers in an `answer` (or `solution`) column")
    return golds


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
