"""The README's Python snippets run as written on a CPU, with a tiny local model in place of the hub model."""

from __future__ import annotations

import re

import pytest

from tests.conftest import REPO_ROOT
from trl_nft.testing.tiny_models import save_tiny_model

HUB_MODEL = re.compile(r'"Qwen/[A-Za-z0-9.\-]+"')


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (REPO_ROOT / "README.md").read_text(), flags=re.S)


def test_readme_has_python_snippets():
    assert python_blocks()


def test_readme_python_snippets_run_on_cpu(tmp_path, monkeypatch):
    """Every block in order, in one namespace (a later block may use an earlier one's imports); about 10-20 s."""
    model_dir = save_tiny_model(tmp_path / "tiny-qwen")
    monkeypatch.chdir(tmp_path)  # the snippets write to relative output directories
    namespace: dict = {}
    for index, block in enumerate(python_blocks()):
        code = HUB_MODEL.sub(repr(model_dir), block)  # offline: the only change to what a reader copies
        try:
            exec(compile(code, f"README.md python block {index}", "exec"), namespace)
        except Exception as error:  # name the block: the traceback's file is the README, not a module
            pytest.fail(f"README python block {index} failed: {type(error).__name__}: {error}\n{block}")
    trainer = namespace.get("trainer")
    assert trainer is not None and trainer.state.global_step == trainer.args.max_steps
