"""The README snippet runner: blocks found in order, hub names swapped, a failing block named, the command's exit."""

from __future__ import annotations

import pytest

from trl_nft.testing import readme_snippets
from trl_nft.testing.readme_snippets import SnippetError, offline, python_blocks, run_python_blocks

TEXT = "Intro\n\n```python\nx = 1\n```\n\n```bash\nls\n```\n\n```python\ny = x + 1\n```\n"


def test_python_blocks_in_order_and_only_python():
    assert python_blocks(TEXT) == ["x = 1\n", "y = x + 1\n"]


def test_offline_swaps_every_hub_model_name():
    block = 'NFTTrainer(model="Qwen/Qwen2.5-0.5B-Instruct", ref="Qwen/Qwen2.5-Math-7B")'
    assert offline(block, "/tmp/tiny") == "NFTTrainer(model='/tmp/tiny', ref='/tmp/tiny')"


def test_failing_block_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr("trl_nft.testing.tiny_models.save_tiny_model", lambda path: str(path))  # no model needed
    text = "```python\nx = 1\n```\n\n```python\nraise KeyError('z')\n```\n"
    with pytest.raises(SnippetError, match=r"block 1 failed: KeyError"):
        run_python_blocks(text, tmp_path)


def test_blocks_share_a_namespace_and_run_in_the_scratch_folder(tmp_path, monkeypatch):
    monkeypatch.setattr("trl_nft.testing.tiny_models.save_tiny_model", lambda path: str(path))
    text = "```python\nfrom pathlib import Path\n```\n\n```python\nPath('out.txt').write_text('hi')\n```\n"
    run_python_blocks(text, tmp_path)
    assert (tmp_path / "out.txt").read_text() == "hi"


def test_command_exit_codes(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("trl_nft.testing.tiny_models.save_tiny_model", lambda path: str(path))
    good, bad = tmp_path / "good.md", tmp_path / "bad.md"
    good.write_text("```python\nx = 1\n```\n")
    bad.write_text("```python\n1 / 0\n```\n")
    assert readme_snippets.main([str(good)]) == 0
    assert readme_snippets.main([str(bad)]) == 1
    assert "block 0 failed: ZeroDivisionError" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        readme_snippets.main([str(tmp_path / "missing.md")])
