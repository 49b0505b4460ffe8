"""The GPU-check command's wiring, at no GPU and nearly no CPU cost: time guard, report, carried wheels, rollouts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.benchmarks.test_benchmarks import load_script
from tests.conftest import REPO_ROOT


@pytest.fixture(scope="module")
def wheels():
    return load_script("benchmarks/gpu_wheels.py")


@pytest.fixture(scope="module")
def gpu_report():
    return load_script("benchmarks/gpu_report.py")


def test_parts_that_do_not_fit_the_budget_are_skipped_with_a_note(tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, REHEARSAL="1", BUDGET_S="5", PARTS="install tests", OUT=str(out), PYTHON=sys.executable)
    subprocess.run(["bash", str(REPO_ROOT / "benchmarks/gpu_checks.sh")], env=env, check=True, capture_output=True)
    parts = (out / "parts.tsv").read_text().splitlines()
    assert parts[1].startswith("install\tskipped\t0\twould overrun: needs about 30 s")
    assert parts[2].startswith("tests\tskipped\t0\twould overrun: needs about 900 s")
    summary = (out / "summary.md").read_text()
    assert "| tests | skipped | 0 | would overrun" in summary
    assert "(no test report: the GPU tests did not run" in summary
    assert "rehearsal: 1; budget: 5 s" in (out / "environment.txt").read_text()


def test_packed_output_is_the_summary_and_one_archive(tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, REHEARSAL="1", BUDGET_S="0", PARTS="install", PACK="1", OUT=str(out), PYTHON=sys.executable)
    subprocess.run(["bash", str(REPO_ROOT / "benchmarks/gpu_checks.sh")], env=env, check=True, capture_output=True)
    assert sorted(path.name for path in out.iterdir()) == ["gpu_checks.tar.gz", "summary.md"]
    with tarfile.open(out / "gpu_checks.tar.gz") as archive:
        assert {"./parts.tsv", "./environment.txt"} <= set(archive.getnames())


def speed_point(length, nft_peak, grpo_peak):
    return {
        "length": length, "options": {"batch_size": 16},
        "timing_summary": {"times": {"nft_median": 0.5, "grpo_median": 0.4, "steps": 8,
                                     "ratio": {"median": 1.25, "min": 1.0, "max": 1.5}},
                           "tokens_per_second": {"nft": 1000.0, "grpo": 1250.0}},
        "memory_runs": {"nft": [{"peak_memory_bytes": nft_peak}], "grpo": [{"peak_memory_bytes": grpo_peak}]},
        "memory_ratios": {"peak_memory_bytes": {"median": nft_peak / grpo_peak}},
    }


def test_report_gathers_parts_tests_and_figures(gpu_report, tmp_path):
    (tmp_path / "parts.tsv").write_text("part\tstatus\tseconds\tnote\ntests\tok\t42\t\n")
    (tmp_path / "gpu_tests.xml").write_text(
        '<testsuites><testsuite><testcase classname="tests.gpu.test_qlora" name="test_qlora_4bit_loading_and_step" '
        'time="0.1"><skipped message="bitsandbytes is not installed"/></testcase>'
        '<testcase classname="tests.gpu.test_zero3" name="test_zero3" time="3.5"/></testsuite></testsuites>')
    (tmp_path / "speed_4k.json").write_text(json.dumps(
        {"device_name": "NVIDIA H200", "scaling": {"points": [speed_point(4096, 3 * 2**30, 2 * 2**30)]}}))
    text = gpu_report.report(tmp_path, total_seconds=300)
    assert "| tests | ok | 42 |" in text and "Whole run: 300 s." in text
    assert "| `test_qlora::test_qlora_4bit_loading_and_step` | skipped: bitsandbytes is not installed | 0.1 |" in text
    assert "| `test_zero3::test_zero3` | passed | 3.5 |" in text
    assert "| 4,096 | 16 | 8 | 0.500 / 0.400 | 1.250 (1.000 – 1.500) | 1,000 / 1,250 | 3.00 / 2.00 | 1.5000 |" in text
    assert "On NVIDIA H200, bf16" in text


def test_carried_files_are_found_by_name_and_version(wheels, tmp_path):
    for name in ("antlr4_python3_runtime-4.13.2-py3-none-any.whl", "deepspeed-0.19.8.tar.gz", "trl-1.16.01-x.whl"):
        (tmp_path / name).write_bytes(b"x")
    found = {p.name: wheels.carried_file(p, tmp_path) for p in wheels.PACKAGES}
    assert found["antlr4-python3-runtime"].name.startswith("antlr4_python3_runtime-4.13.2")
    assert found["deepspeed"].name == "deepspeed-0.19.8.tar.gz"
    assert found["trl"] is None  # 1.16.01 is not 1.16.0


def test_install_takes_only_what_is_missing_or_too_old(wheels, tmp_path, monkeypatch):
    for package in wheels.PACKAGES:
        (tmp_path / f"{wheels.normalised(package.name)}-{package.version}-py3-none-any.whl").write_bytes(b"x")
    have = {"transformers": "5.17.0", "trl": "1.16.0"}  # too old, recent enough; everything else missing
    monkeypatch.setattr(wheels, "installed_version",
                        lambda p: wheels.Version(have[p.name]) if p.name in have else None)
    commands = []
    monkeypatch.setattr(wheels.subprocess, "run", lambda command, check: commands.append(command))
    wheels.install(tmp_path, tmp_path / "site")
    installed = {Path(arg).name.split("-")[0] for arg in commands[0] if arg.endswith(".whl")}
    assert "transformers" in installed and "trl" not in installed
    assert len(installed) == len(wheels.PACKAGES) - 1
    assert {"--no-index", "--no-deps", "--target"} <= set(commands[0])


def test_listing_refuses_more_than_the_budget(wheels, tmp_path):
    for package in wheels.PACKAGES:
        (tmp_path / f"{wheels.normalised(package.name)}-{package.version}-py3-none-any.whl").write_bytes(b"x")
    wheels.print_listing(tmp_path)
    with open(tmp_path / "trl-1.16.0-py3-none-any.whl", "wb") as handle:
        handle.truncate((wheels.BUDGET_MIB + 1) * 2**20)  # sparse: no disk used
    with pytest.raises(SystemExit, match="more than the 56 MiB budget"):
        wheels.print_listing(tmp_path)


def test_synthetic_rollout_gives_exact_lengths_without_special_tokens(tmp_path):
    speed = load_script("benchmarks/speed.py")
    from trl_nft.testing.tiny_models import build_char_tokenizer

    tokenizer = build_char_tokenizer()
    rollout = speed.synthetic_rollout(tokenizer, length=12)
    output = rollout(["1+1=", "1+1=", "22+3="], trainer=None)
    assert output["prompt_ids"][2] == tokenizer("22+3=", add_special_tokens=False)["input_ids"]
    assert [len(ids) for ids in output["completion_ids"]] == [12, 12, 12]
    special = set(tokenizer.all_special_ids)
    assert not special & {token for ids in output["completion_ids"] for token in ids}
