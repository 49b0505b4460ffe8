"""Run the README's Python snippets as a reader would, offline: a tiny local model stands in for the hub model.

Used by the README test and by CI's check of the installed wheel, from outside the source tree:

    python -m trl_nft.testing.readme_snippets path/to/README.md

The snippets run in order in one namespace (a later block may use an earlier one's imports), in a scratch working
directory (they write to relative output folders). The only change to what a reader copies is the model name.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

HUB_MODEL = re.compile(r'"Qwen/[A-Za-z0-9.\-]+"')
_PYTHON_BLOCK = re.compile(r"```python\n(.*?)```", re.S)


class SnippetError(RuntimeError):
    """A README block that failed; the message names the block and shows its code."""


def python_blocks(readme_text: str) -> list[str]:
    """The fenced ```python blocks of a markdown text, in order."""
    return _PYTHON_BLOCK.findall(readme_text)


def offline(block: str, model_dir: str) -> str:
    """The block with every hub model name ("Qwen/...") replaced by a local model folder."""
    return HUB_MODEL.sub(lambda _: repr(str(model_dir)), block)


@contextmanager
def _working_directory(path: Path):
    previous = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def run_python_blocks(readme_text: str, workdir: Path) -> dict:
    """Save a tiny model under `workdir`, run every Python block there and return the shared namespace."""
    from trl_nft.testing.tiny_models import save_tiny_model  # torch/transformers: only once a run is asked for

    blocks = python_blocks(readme_text)
    if not blocks:
        raise SnippetError("the README has no ```python block to run")
    workdir = Path(workdir)
    model_dir = save_tiny_model(workdir / "tiny-qwen")
    namespace: dict = {"__name__": "__readme__"}
    with _working_directory(workdir):
        for index, block in enumerate(blocks):
            try:
                exec(compile(offline(block, model_dir), f"README.md python block {index}", "exec"), namespace)
            except Exception as error:  # name the block: a traceback into exec'd text is hard to place
                raise SnippetError(f"README python block {index} failed: {type(error).__name__}: {error}\n{block}") \
                    from error
    return namespace


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Run a README's Python snippets offline with a tiny local model.")
    parser.add_argument("readme", type=Path, help="the README.md whose ```python blocks to run")
    args = parser.parse_args(argv)
    if not args.readme.is_file():
        parser.error(f"readme={str(args.readme)!r}: no such file")
    readme_text = args.readme.read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory(prefix="readme_snippets_") as scratch:
        try:
            namespace = run_python_blocks(readme_text, Path(scratch))
        except SnippetError as error:
            print(error, file=sys.stderr)
            return 1
    trainer = namespace.get("trainer")
    steps = f", trainer at step {trainer.state.global_step} of {trainer.args.max_steps}" if trainer else ""
    print(f"{len(python_blocks(readme_text))} README python blocks ran{steps}")
    if trainer is not None and trainer.state.global_step != trainer.args.max_steps:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
