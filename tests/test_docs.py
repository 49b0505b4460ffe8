"""The documentation holds together: README size, links and anchors, the package's long description, the test command.

Links are read from the rendered Markdown (markdown-it-py, a CommonMark parser), not from the raw text, so a link
written inside code is not a link and a link inside a table cell is one.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import unicodedata
from functools import cache
from pathlib import Path
from urllib.parse import unquote

import pytest

from tests.conftest import REPO_ROOT

markdown_it = pytest.importorskip("markdown_it", reason="markdown-it-py parses the Markdown (a transformers dependency)")

README = REPO_ROOT / "README.md"
README_MAX_BYTES = 12 * 1024
TEST_COMMAND_MARK = "pytest"


def documentation_files() -> list[Path]:
    pages = [README, REPO_ROOT / "CONTRIBUTING.md", REPO_ROOT / "benchmarks" / "README.md"]
    return pages + sorted((REPO_ROOT / "docs").glob("*.md"))


def parser():
    return markdown_it.MarkdownIt("commonmark").enable("table")


def link_targets(markdown: str) -> list[str]:
    """Every href and image src of the rendered Markdown, raw HTML included."""
    targets = []
    for token in parser().parse(markdown):
        if token.type in ("html_block", "html_inline"):
            targets += re.findall(r"""(?:href|src)\s*=\s*["']([^"']*)["']""", token.content)
        for child in token.children or []:
            if child.type == "link_open":
                targets.append(unquote(child.attrGet("href")))  # the parser %-encodes
            elif child.type == "image":
                targets.append(unquote(child.attrGet("src")))
            elif child.type == "html_inline":
                targets += re.findall(r"""(?:href|src)\s*=\s*["']([^"']*)["']""", child.content)
    return targets


def github_slug(heading: str) -> str:
    """GitHub's heading anchor: lower case; letters, marks, numbers, '_', '-' and spaces kept; spaces become '-'."""
    kept = "".join(c for c in heading.lower() if c in " -_" or unicodedata.category(c)[0] in "LMN")
    return kept.replace(" ", "-")


@cache
def anchors(path: Path) -> frozenset[str]:
    """The anchors GitHub gives the headings of `path` (a repeated heading gets -1, -2, ...)."""
    tokens = parser().parse(path.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    for opening, inline in zip(tokens, tokens[1:]):
        if opening.type != "heading_open":
            continue
        text = "".join(child.content for child in inline.children if child.type in ("text", "code_inline"))
        slug = github_slug(text)
        seen[slug] = seen.get(slug, -1) + 1
        if seen[slug]:
            seen[f"{slug}-{seen[slug]}"] = 0
    return frozenset(seen)


def is_relative(target: str) -> bool:
    return not re.match(r"^(?:[a-zA-Z][a-zA-Z0-9+.-]*:|//)", target)


def broken_links(page: Path) -> list[str]:
    problems = []
    for target in link_targets(page.read_text(encoding="utf-8")):
        if not is_relative(target):
            continue
        path_part, _, anchor = target.partition("#")
        resolved = (page.parent / path_part).resolve() if path_part else page
        if REPO_ROOT.resolve() not in (resolved, *resolved.parents):
            problems.append(f"{target}: outside the repository")
        elif not resolved.exists():
            problems.append(f"{target}: no such file")
        elif anchor:
            if resolved.suffix != ".md":
                problems.append(f"{target}: anchor into a file that is not Markdown")
            elif anchor not in anchors(resolved):
                problems.append(f"{target}: no heading with that anchor in {resolved.relative_to(REPO_ROOT)}")
    return problems


# ----------------------------------------------------------------------------------------------------- tests
def test_readme_is_an_entrance_not_a_manual():
    size = len(README.read_bytes())
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes; move reference material to docs/ (limit 12 KB)"


def test_documentation_pages_exist():
    names = {page.name for page in documentation_files()}
    for required in ("algorithm.md", "options.md", "dynamic_sampling.md", "paper_recipes.md", "coming_from_verl.md",
                     "evaluation.md", "differences_from_grpo.md", "troubleshooting.md", "long_runs.md", "README.md"):
        assert required in names, f"docs/{required} is missing"
    assert (REPO_ROOT / "CONTRIBUTING.md").is_file() and (REPO_ROOT / "benchmarks" / "README.md").is_file()


@pytest.mark.parametrize("page", documentation_files(), ids=lambda page: str(page.relative_to(REPO_ROOT)))
def test_every_relative_link_and_anchor_resolves(page):
    assert broken_links(page) == []


def test_every_docs_page_is_in_the_index():
    index = REPO_ROOT / "docs" / "README.md"
    linked = {(index.parent / target.partition("#")[0]).resolve()
              for target in link_targets(index.read_text(encoding="utf-8")) if is_relative(target)}
    missing = [page.name for page in sorted((REPO_ROOT / "docs").glob("*.md")) if page != index and page not in linked]
    assert missing == [], f"docs/README.md does not link {missing}"


def test_the_link_checker_catches_what_it_must(tmp_path, monkeypatch):
    """A broken file link, a wrong anchor and an anchor slug with punctuation and a combining mark."""
    (tmp_path / "other.md").write_text("# Coming from verl / the official NFT code\n\n## What r̂ means (`r_hat`)\n")
    page = tmp_path / "page.md"
    page.write_text("[a](other.md#coming-from-verl--the-official-nft-code) [b](other.md#what-r̂-means-r_hat) "
                    "[c](missing.md) [d](other.md#nowhere) `[e](missing_in_code.md)` [f](#here)\n\n# Here\n")
    monkeypatch.setattr(f"{__name__}.REPO_ROOT", tmp_path)
    problems = broken_links(page)
    assert [problem.split(":")[0] for problem in problems] == ["missing.md", "other.md#nowhere"]


# --------------------------------------------------------------------------------------- long description
def build_hook():
    """setup.py, imported as a module (its setup() call only runs as a script)."""
    spec = importlib.util.spec_from_file_location("trl_nft_setup_hook", REPO_ROOT / "setup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_long_description_has_no_relative_link_or_image():
    derived = build_hook().pypi_long_description(README.read_text(encoding="utf-8"))
    relative = [target for target in link_targets(derived) if is_relative(target)]
    assert relative == [], f"links that break on a package index: {relative}"
    assert [t for t in link_targets(README.read_text(encoding="utf-8")) if is_relative(t)], "README has no relative link"


def test_long_description_turns_relative_links_into_readable_text():
    derive = build_hook().pypi_long_description
    text = (
        "See [the algorithm page](docs/algorithm.md) and [options](./docs/options.md#logged-metrics), "
        "[CONTRIBUTING.md](CONTRIBUTING.md).\n\n"
        "Back to [the top](#install). ![curve](benchmarks/results/curve.png) "
        "[TRL](https://huggingface.co/docs/trl) ![badge](https://img.shields.io/x.svg)\n\n"
        "Code stays: `[x](docs/x.md)`\n\n```markdown\n[y](docs/y.md)\n```\n"
    )
    assert derive(text) == (
        "See the algorithm page (docs/algorithm.md in the source repository) and options (docs/options.md), "
        "CONTRIBUTING.md.\n\n"
        "Back to the top.  "
        "[TRL](https://huggingface.co/docs/trl) ![badge](https://img.shields.io/x.svg)\n\n"
        "Code stays: `[x](docs/x.md)`\n\n```markdown\n[y](docs/y.md)\n```\n"
    )
    assert derive("[CONTRIBUTING.md](CONTRIBUTING.md)") == "CONTRIBUTING.md (in the source repository)"


def test_the_build_uses_the_derived_long_description():
    """What setuptools puts in the package metadata (setup.py and the declarative metadata together)."""
    built = subprocess.run([sys.executable, "setup.py", "--long-description"], cwd=REPO_ROOT, capture_output=True,
                           text=True, check=True).stdout
    derived = build_hook().pypi_long_description(README.read_text(encoding="utf-8"))
    assert built.rstrip("\n") == derived.rstrip("\n")


# ------------------------------------------------------------------------------------------- test command
def test_readme_test_command_is_what_ci_runs():
    ci_commands = [line.strip() for line in (REPO_ROOT / ".ci" / "run").read_text().splitlines()
                   if TEST_COMMAND_MARK in line and not line.lstrip().startswith("#")]
    assert len(ci_commands) == 1, f".ci/run should run one test command, found {ci_commands}"
    readme_lines = {line.strip() for line in README.read_text(encoding="utf-8").splitlines()}
    assert ci_commands[0] in readme_lines, f"README does not show CI's test command {ci_commands[0]!r} on a line"
    assert "bash .ci/run" in readme_lines
