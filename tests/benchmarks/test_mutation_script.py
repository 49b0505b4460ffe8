"""`benchmarks/mutation.py` points at code and tests that exist, and writes a mutmut section that selects them."""

from __future__ import annotations

import configparser
import re

import pytest

from tests.benchmarks.test_benchmarks import load_script
from tests.conftest import REPO_ROOT


@pytest.fixture(scope="module")
def mutation():
    return load_script("benchmarks/mutation.py")


def test_every_target_names_an_existing_module_and_existing_tests(mutation):
    for name, target in mutation.TARGETS.items():
        assert (REPO_ROOT / target.source).is_file(), name
        for test in target.tests:
            path, _, test_name = test.partition("::")
            assert (REPO_ROOT / path).is_file(), (name, test)
            if test_name:
                assert re.search(rf"^def {re.escape(test_name)}\(", (REPO_ROOT / path).read_text(), re.M), (name, test)
        module = target.source.removesuffix(".py").replace("/", ".")
        for pattern in target.functions:
            assert pattern.startswith(f"{module}.x") and pattern.endswith("__mutmut_*"), (name, pattern)
            function = pattern.removesuffix("__mutmut_*").split(mutation.METHOD_SEPARATOR)[-1].removeprefix(
                f"{module}.x_")
            assert re.search(rf"def {re.escape(function)}\(", (REPO_ROOT / target.source).read_text()), pattern


def test_the_mutmut_section_mutates_one_file_and_runs_its_tests(mutation):
    target = mutation.TARGETS["loss"]
    config = configparser.ConfigParser()
    config.read_string(mutation.mutmut_section(target))
    assert config["mutmut"]["only_mutate"].split() == [target.source]
    assert config["mutmut"]["pytest_add_cli_args_test_selection"].split() == list(target.tests)


def test_unknown_modules_are_refused_by_name(mutation, capsys):
    with pytest.raises(SystemExit):
        mutation.main(["lossy"])
    assert "unknown modules ['lossy']" in capsys.readouterr().err
