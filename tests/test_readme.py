"""The README's Python snippets run as written on a CPU, with a tiny local model in place of the hub model."""

from __future__ import annotations

from tests.conftest import REPO_ROOT
from trl_nft.testing.readme_snippets import python_blocks, run_python_blocks

README = REPO_ROOT / "README.md"


def test_readme_has_python_snippets():
    assert python_blocks(README.read_text(encoding="utf-8"))


def test_readme_python_snippets_run_on_cpu(tmp_path):
    """Every block in order, in one namespace (a later block may use an earlier one's imports); about 10-20 s."""
    namespace = run_python_blocks(README.read_text(encoding="utf-8"), tmp_path)
    trainer = namespace.get("trainer")
    assert trainer is not None and trainer.state.global_step == trainer.args.max_steps
