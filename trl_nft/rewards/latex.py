r"""LaTeX normalisation: rewrite common shorthand of a final answer so that math-verify reads it as meant."""

from __future__ import annotations

import re

from trl_nft.rewards.answers import matching_brace, strip_invisible_chars

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
        end = matching_brace(text, index)
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
        end = matching_brace(text, match.end() - 1)
        if end == len(text) - 1:  # the whole answer is text: "\text{(C)}", "\text{Evelyn}"
            inner = text[match.end() : end].strip()
            letter = _CHOICE_LETTER.fullmatch(inner)
            return letter.group(1) if letter else "\\text{" + inner + "}"
    result = text
    for match in reversed(list(_TEXT_COMMAND.finditer(text))):
        end = matching_brace(text, match.end() - 1)
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
