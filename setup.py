"""Build hook: the package's long description is README.md with its relative links turned into plain text.

All other metadata lives in pyproject.toml (which lists the readme as dynamic); setuptools merges the two. README.md stays the single
source: on GitHub its relative links (``docs/algorithm.md``, ``benchmarks/README.md``) resolve against the
repository, but a package index renders the same text without one, where they would be broken links. So each relative
link becomes its text followed by the path it pointed at, which still reads well ("the algorithm page
(docs/algorithm.md in the source repository)"); links within the page keep their text only; relative images are
dropped. Absolute links and code are left alone.
"""

from __future__ import annotations

import re
from pathlib import Path

SOURCE_NOTE = "in the source repository"

# Fenced code blocks and inline code spans: never rewritten (a link shown as code is not a link).
_FENCED_BLOCK = re.compile(r"^ {0,3}(`{3,}|~{3,}).*?^ {0,3}\1[^\n]*$", re.M | re.S)
_CODE_SPAN = re.compile(r"(`+)(?:(?!\n\n).)*?(?<!`)\1(?!`)", re.S)  # not across paragraphs
# [text](target "title") and ![alt](target); the target may be written <...>.
_INLINE_LINK = re.compile(r"(!?)\[((?:[^\[\]]|\[[^\[\]]*\])*)\]\(\s*<?([^\s)>]*)>?(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")
_SCHEME = re.compile(r"^(?:[a-zA-Z][a-zA-Z0-9+.-]*:|//)")  # https:, mailto:, protocol-relative //host
_PLACEHOLDER = "\x00{}\x00"


def is_relative(target: str) -> bool:
    """True for a link target that only resolves inside the repository (a path or an #anchor)."""
    return not _SCHEME.match(target)


def _restore(text: str, protected: list[str]) -> str:
    while "\x00" in text:  # a restored span may itself hold a placeholder
        text = re.sub(r"\x00(\d+)\x00", lambda match: protected[int(match.group(1))], text)
    return text


def pypi_long_description(readme: str) -> str:
    """README text for a package index: relative links become plain text naming their path, relative images go."""
    protected: list[str] = []

    def protect(match: re.Match) -> str:
        protected.append(match.group(0))
        return _PLACEHOLDER.format(len(protected) - 1)

    text = _CODE_SPAN.sub(protect, _FENCED_BLOCK.sub(protect, readme))
    paragraphs = text.split("\n\n")
    for index, paragraph in enumerate(paragraphs):
        named_source = False  # say "in the source repository" once per paragraph, not after every link

        def plain(match: re.Match) -> str:
            nonlocal named_source
            is_image, label, target = match.group(1) == "!", match.group(2), match.group(3)
            if not is_relative(target):
                return match.group(0)
            if is_image:
                return ""
            path = target.split("#", 1)[0].removeprefix("./").rstrip("/")
            if not path:  # a link to a heading of this page
                return label
            shown = _restore(label, protected).strip("` ")
            if shown.rstrip("/") == path:  # the label already is the path: "benchmarks/README.md (in the ...)"
                note = SOURCE_NOTE if not named_source else ""
                named_source = True
                return f"{label} ({note})" if note else label
            where = f"{path} {SOURCE_NOTE}" if not named_source else path
            named_source = True
            return f"{label} ({where})"

        paragraphs[index] = _INLINE_LINK.sub(plain, paragraph)
    return _restore("\n\n".join(paragraphs), protected)


if __name__ == "__main__":  # run by setuptools' build backend (and by `python setup.py`)
    from setuptools import setup

    readme = Path(__file__).with_name("README.md").read_text(encoding="utf-8")
    setup(long_description=pypi_long_description(readme), long_description_content_type="text/markdown")
