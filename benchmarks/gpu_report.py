"""Summary of one `benchmarks/gpu_checks.sh` run: each part's status and duration, the GPU tests' outcomes, and the
NFT/GRPO figures (step time, tokens/s, peak memory) per completion length, read from the run's folder.

    python benchmarks/gpu_report.py OUTPUT_FOLDER [--total-seconds N]   # prints Markdown (gpu_checks.sh: summary.md)
"""

from __future__ import annotations

import argparse
import csv
import json
import xml.etree.ElementTree as ElementTree
from pathlib import Path

MIB = 2**20
SPEED_PARTS = ("speed_1k", "speed_4k")


def parts_table(folder: Path) -> list[str]:
    path = folder / "parts.tsv"
    if not path.exists():
        return ["(no parts.tsv: the run did not start)"]
    rows = ["| part | status | seconds | note |", "|---|---|---|---|"]
    with path.open() as handle:
        for entry in csv.DictReader(handle, delimiter="\t"):
            rows.append(f"| {entry['part']} | {entry['status']} | {entry['seconds']} | {entry['note']} |")
    return rows


def test_outcomes(folder: Path) -> list[str]:
    """One row per GPU test from pytest's JUnit XML: passed, failed (first line of the message) or skipped (reason)."""
    path = folder / "gpu_tests.xml"
    if not path.exists():
        return ["(no test report: the GPU tests did not run, or were stopped before the end; see tests.log)"]
    rows = ["| test | outcome | seconds |", "|---|---|---|"]
    for case in ElementTree.parse(path).getroot().iter("testcase"):
        outcome = "passed"
        for kind in ("failure", "error", "skipped"):
            element = case.find(kind)
            if element is not None:
                message = (element.get("message") or "").splitlines()[0] if element.get("message") else ""
                outcome = f"{'failed' if kind != 'skipped' else 'skipped'}: {message}".rstrip(": ")
                break
        name = f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}"
        rows.append(f"| `{name}` | {outcome} | {float(case.get('time', 0)):.1f} |")
    return rows


def speed_rows(folder: Path) -> list[str]:
    header = ["| completion tokens | completions / step | steps | step s NFT / GRPO "
              "| step-time ratio, median (min – max) | tokens/s NFT / GRPO | peak GiB NFT / GRPO | peak ratio |",
              "|---|---|---|---|---|---|---|---|"]
    rows = []
    for name in SPEED_PARTS:
        path = folder / f"{name}.json"
        if not path.exists():
            continue
        result = json.loads(path.read_text())
        for point in result["scaling"]["points"]:
            wall = point["timing_summary"]["times"]
            ratio = wall["ratio"]
            tokens = point["timing_summary"]["tokens_per_second"]
            peaks = {trainer: min(run["peak_memory_bytes"] for run in runs)
                     for trainer, runs in point["memory_runs"].items()}
            rows.append(
                f"| {point['length']:,} | {point['options']['batch_size']} | {wall['steps']} "
                f"| {wall['nft_median']:.3f} / {wall['grpo_median']:.3f} "
                f"| {ratio['median']:.3f} ({ratio['min']:.3f} – {ratio['max']:.3f}) "
                f"| {tokens['nft']:,.0f} / {tokens['grpo']:,.0f} "
                f"| {peaks['nft'] / 2**30:.2f} / {peaks['grpo'] / 2**30:.2f} "
                f"| {point['memory_ratios']['peak_memory_bytes']['median']:.4f} |"
            )
    return header + rows if rows else []


def speed_setting(folder: Path) -> str:
    devices = {json.loads((folder / f"{name}.json").read_text())["device_name"]
               for name in SPEED_PARTS if (folder / f"{name}.json").exists()}
    if not devices:
        return "(no trainer comparison ran)"
    precision = "fp32 (CPU)" if "CPU" in devices else "bf16"
    return (f"On {', '.join(sorted(devices))}, {precision}, random-init weights, real Qwen2.5 vocabulary, "
            "completions of exactly the given length (a random rollout function in place of generation). Step "
            "time: wall time per optimizer step, the two trainers taking steps in turns in one process; the ratio "
            "is NFT/GRPO per pair of neighbouring steps. Tokens/s: prompt and completion tokens trained per second. "
            "Peak: the allocator's peak (CPU: max RSS) in one fresh process per trainer.")


def loss_line(folder: Path) -> str:
    path = folder / "loss.json"
    if not path.exists():
        return "(the loss micro-benchmark did not run)"
    loss = json.loads(path.read_text())["loss"]
    shape = loss["shape"]
    line = (f"{shape['rows']} × {shape['tokens']} tokens, fp32, forward + backward: NFT's loss "
            f"{loss['nft']['median_seconds'] * 1e3:.3f} ms vs TRL's clipped surrogate "
            f"{loss['grpo_surrogate']['median_seconds'] * 1e3:.3f} ms (ratio {loss['ratios']['time']:.3f})")
    if "cuda_peak_extra" in loss["ratios"]:
        line += (f"; allocator peak for backward {loss['nft']['cuda_peak_extra_bytes'] / MIB:.1f} vs "
                 f"{loss['grpo_surrogate']['cuda_peak_extra_bytes'] / MIB:.1f} MiB")
    return line + "."


def report(folder: Path, total_seconds: int | None) -> str:
    environment = (folder / "environment.txt").read_text().strip() if (folder / "environment.txt").exists() else ""
    lines = ["# GPU checks", "", "```", environment, "```", ""]
    if total_seconds is not None:
        lines += [f"Whole run: {total_seconds} s.", ""]
    lines += ["## Parts", "", *parts_table(folder), "", "## GPU tests", "", *test_outcomes(folder), "",
              "## NFT vs GRPO", "", speed_setting(folder), "", *speed_rows(folder), "",
              "## Loss micro-benchmark", "", loss_line(folder), ""]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--total-seconds", type=int)
    args = parser.parse_args(argv)
    print(report(args.folder, args.total_seconds))


if __name__ == "__main__":
    main()
