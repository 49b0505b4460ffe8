"""The `trl-nft` command: `train` (the paper's math recipe), `eval` (the six benchmarks), `recipes` (packaged recipes).

    trl-nft train --recipe qwen2.5-math-7b [--any_option value ...]      # launches itself as the recipe says
    trl-nft train --config my_recipe.yaml --model_name_or_path /models/qwen
    trl-nft train --recipe qwen2.5-math-7b --accelerate_config zero3 --num_processes 4
    trl-nft eval --model outputs/qwen2.5-math-7b-nft --output results.json
    trl-nft recipes [NAME]

`train` accepts every option of the script, `NFTConfig` (so `GRPOConfig` and `TrainingArguments`) and TRL's
`ModelConfig`, from a YAML file and/or the command line (which wins), and launches through accelerate
(`--accelerate_config`, `--num_processes`, any `accelerate launch` option; `trl_nft.launcher`), exactly like `trl grpo`.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import sys
import textwrap
from importlib import resources
from pathlib import Path
from typing import Any

from trl_nft import launcher

logger = logging.getLogger(__name__)

PROG = "trl-nft"
TRAIN_USAGE = ("{prog} [--recipe NAME | --config FILE] [--accelerate_config NAME|FILE] [--num_processes N] "
               "[--option value ...]   (--help: every option, the script's and NFT's first)")

# TRL / transformers options a first run usually touches, shown by `train --help` after the NFT ones.
COMMON_TRL_OPTIONS = (
    "model_name_or_path", "dtype", "output_dir", "learning_rate", "num_generations", "max_completion_length",
    "per_device_train_batch_size", "gradient_accumulation_steps", "steps_per_generation", "max_steps",
    "reward_weights", "use_vllm", "vllm_mode", "use_peft", "lora_r", "load_in_4bit", "load_in_8bit",
    "log_completions", "report_to", "save_steps", "resume_from_checkpoint", "push_to_hub", "hub_model_id",
    "use_cpu", "bf16",
)


# --------------------------------------------------------------------------------------------------- recipes
def recipe_files() -> dict[str, Path]:
    """Packaged paper recipes, name -> file (installed as package data under trl_nft/math_recipe/recipes)."""
    folder = resources.files("trl_nft.math_recipe") / "recipes"
    return {Path(entry.name).stem: Path(str(entry)) for entry in sorted(folder.iterdir(), key=lambda e: e.name)
            if entry.name.endswith(".yaml")}


def recipe_summary(path: Path) -> str:
    """A recipe's description: its first comment lines, up to the first example command (an indented comment) or
    the first setting."""
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#") or line.startswith("#  "):
            break
        lines.append(line.lstrip("#").strip())
    return " ".join(lines)


def recipe_launch_summary(path: Path) -> str:
    """How a recipe launches (its accelerate settings), e.g. "Launch: zero3, 8 processes."; empty: in-process."""
    import yaml

    settings = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    parts = [str(settings["accelerate_config"])] if "accelerate_config" in settings else []
    if "num_machines" in settings:
        parts.append(f"{settings['num_machines']} machines")
    if "num_processes" in settings:
        count = settings["num_processes"]
        parts.append(f"{count} process{'es' if count != 1 else ''}")
    return f"Launch: {', '.join(parts)}." if parts else ""


def resolve_recipe(name: str) -> Path:
    """A packaged recipe by name (with or without .yaml), or an existing YAML path."""
    if Path(name).is_file():
        return Path(name)
    recipes = recipe_files()
    stem = name[: -len(".yaml")] if name.endswith(".yaml") else name
    if stem not in recipes:
        raise SystemExit(f"{PROG}: error: unknown recipe {name!r}; packaged recipes: {', '.join(recipes)} "
                         f"(or give a YAML file with --config)")
    return recipes[stem]


def recipe_to_config_argument(argv: list[str]) -> list[str]:
    """Replace `--recipe NAME` by TRL's `--config PATH` (the packaged file)."""
    out, recipe_given, args = [], False, iter(argv)
    for arg in args:
        if arg == "--recipe":
            name = next(args, None)
            if name is None:
                raise SystemExit(f"{PROG}: error: --recipe needs a name ({', '.join(recipe_files())})")
        elif arg.startswith("--recipe="):
            name = arg.split("=", 1)[1]
        else:
            out.append(arg)
            continue
        out += ["--config", str(resolve_recipe(name))]
        recipe_given = True
    if recipe_given and sum(arg == "--config" for arg in out) > 1:
        raise SystemExit(f"{PROG}: error: give either --recipe or --config, not both")
    return out


def recipes_command(argv: list[str]) -> int:
    recipes = recipe_files()
    if argv and argv[0] not in ("-h", "--help"):
        print(resolve_recipe(argv[0]).read_text(encoding="utf-8"), end="")
        return 0
    columns = max(shutil.get_terminal_size().columns, 80)
    print(textwrap.fill(f"Packaged NFT recipes (train: {PROG} train --recipe NAME; to copy and edit one: {PROG} "
                        "recipes NAME)", width=columns - 1, break_on_hyphens=False) + "\n")
    width = max(map(len, recipes))
    for name, path in recipes.items():
        indent = " " * (width + 4)
        text = f"{recipe_summary(path)} {recipe_launch_summary(path)}".strip()
        print(textwrap.fill(text, width=columns - 1, initial_indent=f"  {name:<{width}}  ", subsequent_indent=indent,
                            break_on_hyphens=False))
    return 0


# ------------------------------------------------------------------------------------------------------ help
def _type_name(annotation) -> str:
    if isinstance(annotation, str):
        return annotation
    return getattr(annotation, "__name__", str(annotation)).replace("typing.", "")


def _default(spec: dataclasses.Field):
    if spec.default is not dataclasses.MISSING:
        return spec.default
    if spec.default_factory is not dataclasses.MISSING:
        return spec.default_factory()
    return None


def describe_fields(specs, indent: str = "  ") -> str:
    """Help lines for dataclass fields: `--name TYPE (default: X)` then the wrapped help text."""
    lines = []
    for spec in specs:
        lines.append(f"{indent}--{spec.name} {_type_name(spec.type)}  (default: {_default(spec)!r})")
        text = " ".join(str(spec.metadata.get("help", "")).split())
        lines += textwrap.wrap(text, width=110, initial_indent=indent * 3, subsequent_indent=indent * 3)
    return "\n".join(lines)


def named_accelerate_configs() -> list[str]:
    """The accelerate configs TRL ships (`--accelerate_config NAME`)."""
    folder = resources.files("trl.accelerate_configs")
    return sorted(Path(entry.name).stem for entry in folder.iterdir() if entry.name.endswith(".yaml"))


def script_fields_in_help_order(script_class) -> list:
    """The script's options in their class order, except TRL's dataset-mixture options after them and deprecated
    names last."""
    from trl import DatasetMixtureConfig

    from trl_nft.math_recipe.script import DEPRECATED_ALIASES

    mixture = {spec.name for spec in dataclasses.fields(DatasetMixtureConfig)}
    return sorted(dataclasses.fields(script_class),
                  key=lambda spec: (spec.name in DEPRECATED_ALIASES, spec.name in mixture))


def train_help(prog: str) -> str:
    """`train --help`: launcher, script and NFT options first, then the TRL options most runs touch, then the rest."""
    from trl import ModelConfig

    from trl_nft.config import NFTConfig
    from trl_nft.math_recipe.script import ScriptArguments

    nft_own = NFTConfig.__dict__.get("__annotations__", {})
    nft_fields = [spec for spec in dataclasses.fields(NFTConfig) if spec.name in nft_own]
    by_name = {spec.name: spec for cls in (NFTConfig, ModelConfig) for spec in dataclasses.fields(cls)}
    common = [by_name[name] for name in COMMON_TRL_OPTIONS if name in by_name and name not in nft_own]
    listed = {spec.name for spec in nft_fields + common}
    others = sorted((spec for spec in by_name.values() if spec.name not in listed and spec.init),
                    key=lambda spec: spec.name)
    recipes = ", ".join(recipe_files())
    return "\n".join([
        "usage: " + TRAIN_USAGE.format(prog=prog),
        "",
        "Train a model with Negative-aware Fine-Tuning (NFT, arXiv 2505.18116) on math prompts. Options come from a",
        "YAML file (--recipe / --config) and the command line, which wins. --model_name_or_path is required.",
        "",
        "Recipe and launch options:",
        f"  --recipe NAME  (a packaged paper recipe: {recipes}; see `{PROG} recipes`)",
        "  --config FILE  (a YAML file with any of the options below, by name, and launch options)",
        "  --accelerate_config NAME|FILE  (launch through `accelerate launch` with this config: one shipped with TRL,",
        f"                 {', '.join(named_accelerate_configs())}, or a file)",
        "  --num_processes N  (processes to launch, over all machines; with any `accelerate launch` option:",
        "                 --num_machines, --machine_rank, --main_process_ip, --main_process_port, ...)",
        "                 Launch options may also be keys of the recipe / --config file (`accelerate_config: zero3`);",
        "                 the command line wins. Without any, training runs in this process.",
        "  --help-all     (the training options in TRL's own parser layout)",
        "",
        "Script options (the dataset options of `trl grpo`, the recipe's own, TRL's dataset mixtures):",
        describe_fields(script_fields_in_help_order(ScriptArguments)),
        "",
        "NFT options (NFTConfig, on top of GRPOConfig):",
        describe_fields(nft_fields),
        "",
        "Frequently used TRL options (GRPOConfig / TrainingArguments / ModelConfig):",
        describe_fields(common),
        "",
        f"Every other option ({len(others)}, GRPOConfig / TrainingArguments / ModelConfig, alphabetical):",
        describe_fields(others),
    ])


# ----------------------------------------------------------------------------------------------------- train
def build_parser(prog: str):
    from trl import ModelConfig, TrlParser

    from trl_nft.config import NFTConfig
    from trl_nft.math_recipe.script import ScriptArguments

    # A short usage line: argparse would otherwise print all ~230 options with every parsing error. No abbreviations:
    # an option the training parser does not know exactly is a launch option or a typo, never a prefix of another.
    return TrlParser((ScriptArguments, NFTConfig, ModelConfig), prog=prog, usage=TRAIN_USAGE.format(prog=prog),
                     allow_abbrev=False)


SINGLE_GPU_RECIPE = "qwen2.5-math-1.5b-single-gpu"
CPU_RECIPE_EDITS = {"bf16": "false", "use_cpu": "true", "use_vllm": "false"}  # a recipe that runs in one CPU process
RECIPE_LAUNCH_KEYS = ("accelerate_config", "num_processes")


def recipe_launch_keys(path: Path) -> tuple[str, ...]:
    """The keys of a recipe file that are launch options (what to delete to train in this process)."""
    import yaml

    from trl import ModelConfig

    from trl_nft.config import NFTConfig
    from trl_nft.math_recipe.script import ScriptArguments

    # The training parser reads a key first: accelerate's --gradient_accumulation_steps is a training option here.
    training = {field.name for cls in (ScriptArguments, NFTConfig, ModelConfig) for field in dataclasses.fields(cls)}
    settings = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return tuple(key for key in settings if key not in training and launcher.is_launch_option(f"--{key}"))


def option_value(argv: list[str], flag: str) -> str | None:
    """The value given to `flag` on a command line (`--flag VALUE` or `--flag=VALUE`), or None."""
    for index, arg in enumerate(argv):
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
        if arg == flag and index + 1 < len(argv):
            return argv[index + 1]
    return None


def bf16_source(argv: list[str]) -> str:
    """Where `bf16: true` came from, in the user's words: the command line, a packaged recipe or a config file."""
    if any(arg == "--bf16" or arg.startswith("--bf16=") for arg in argv):
        return "--bf16 true"
    for flag in ("--recipe", "--config"):
        value = option_value(argv, flag)
        if value is not None:
            return f"bf16: true in {flag} {value}"
    return "bf16: true"


def exit_if_bf16_unsupported(error: ValueError, argv: list[str], prog: str) -> None:
    """One line instead of transformers' traceback when the options ask for bf16 on a machine without it (exit 2)."""
    from trl_nft.precision import missing_bf16_support

    reason = missing_bf16_support() if "bf16" in str(error) else None
    if reason is None:
        return
    source = bf16_source(argv)
    # The recipe whose launch lines to delete: the one bf16 came from (not when --bf16 was given explicitly).
    recipe = option_value(argv, "--recipe") if source.startswith("bf16: true in --recipe ") else None
    launch_keys = recipe_launch_keys(resolve_recipe(recipe)) if recipe else RECIPE_LAUNCH_KEYS
    recipe = recipe or "NAME"
    print(f"{prog}: error: {source} needs a bf16 GPU, but {reason}. On one bf16 GPU: {PROG} train --recipe "
          f"{SINGLE_GPU_RECIPE}; on other GPUs add --bf16 false (float32); on a CPU, copy the recipe ({PROG} recipes "
          f"{recipe} > my_recipe.yaml), set {', '.join(f'{key}: {value}' for key, value in CPU_RECIPE_EDITS.items())}, "
          f"delete its launch lines ({', '.join(launch_keys)}) and run {PROG} train --config my_recipe.yaml "
          "(with a small --model_name_or_path).", file=sys.stderr)
    raise SystemExit(2)


@dataclasses.dataclass
class TrainCommand:
    """A parsed `trl-nft train` command line: the training arguments and how to launch them."""

    script_args: Any
    training_args: Any
    model_args: Any
    launch_args: list[str]  # for `accelerate launch`, `--accelerate_config` already resolved; empty: run in-process
    script_argv: list[str]  # the command line without its launch options: what the launched processes get


def parse_train_command(argv: list[str], prog: str = f"{PROG} train") -> TrainCommand:
    """Parse a `train` command line (handles --help / --help-all, names missing required and unknown options)."""
    argv = list(argv)
    if "-h" in argv or "--help" in argv:
        print(train_help(prog))
        raise SystemExit(0)
    parser = build_parser(prog)
    if "--help-all" in argv:
        parser.print_help()
        raise SystemExit(0)
    try:
        *parsed, config_rest, cli_rest = parser.parse_args_and_config(
            args=recipe_to_config_argument(argv), return_remaining_strings=True, separate_remaining_strings=True
        )
    except ValueError as error:
        exit_if_bf16_unsupported(error, argv, prog)
        raise
    try:
        launcher.group_launch_options(config_rest, from_config=True)
    except launcher.LaunchOptionError as unknown:
        parser.error(f"unknown keys in the --recipe / --config file: {unknown} (neither a training option nor an "
                     f"`accelerate launch` option; `{prog} --help-all` lists every training option)")
    try:
        launcher.group_launch_options(cli_rest)
    except launcher.LaunchOptionError as unknown:
        parser.error(f"unrecognized arguments: {unknown} (`{prog} --help-all` lists every option)")
    try:
        launch_args = launcher.launch_arguments(config_rest, cli_rest)
    except launcher.LaunchOptionError as error:
        parser.error(str(error))
    script_args, training_args, model_args = parsed
    if not model_args.model_name_or_path:
        parser.error("--model_name_or_path is required (a hub name such as Qwen/Qwen2.5-Math-7B or a local model "
                     "directory), on the command line or in the --recipe / --config file")
    return TrainCommand(script_args, training_args, model_args, launch_args, launcher.without_tokens(argv, cli_rest))


def parse_train_args(argv: list[str], prog: str = f"{PROG} train"):
    """(script, NFTConfig, ModelConfig) arguments of a `train` command line (its launch options are checked, not
    returned: see `parse_train_command`)."""
    command = parse_train_command(argv, prog)
    return command.script_args, command.training_args, command.model_args


def train(argv: list[str] | None = None, prog: str = f"{PROG} train"):
    """Parse the options and train: in this process (returns the trainer) or, given launch options, in the processes
    `accelerate launch` starts (returns their exit code)."""
    from trl_nft.math_recipe.script import run

    command = parse_train_command(sys.argv[1:] if argv is None else argv, prog)
    logging.basicConfig(level=logging.INFO)
    if command.launch_args:
        in_charge = launcher.launcher_in_charge()
        if in_charge is None:
            return launcher.relaunch(command.launch_args, command.script_argv)
        if in_charge != launcher.LAUNCHED_ENV:  # started by the user's own launcher, whose settings hold
            logger.warning("already running under a launcher (%s is set): launch options %s are not applied",
                           in_charge, " ".join(command.launch_args))
    return run(command.script_args, command.training_args, command.model_args)


# ------------------------------------------------------------------------------------------------------ main
OVERVIEW = f"""usage: {PROG} {{train,eval,recipes}} ...

Negative-aware Fine-Tuning (NFT, arXiv 2505.18116) for Hugging Face TRL.

commands:
  train     train on math prompts with NFTTrainer (any NFTConfig / GRPOConfig / ModelConfig option; --help)
  eval      avg@k accuracy on the paper's six math benchmarks, from the hub or a local folder (--help)
  recipes   list the packaged paper recipes, or print one: {PROG} recipes NAME

Launching, as `trl grpo`: `{PROG} train --recipe NAME` starts the processes the recipe names (its accelerate_config
and num_processes); --accelerate_config NAME|FILE, --num_processes N and any `accelerate launch` option override them
on the command line. Without launch options, `train` runs in this process.
"""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(OVERVIEW, end="")
        return 0
    command, rest = argv[0], argv[1:]
    if command == "train":
        outcome = train(rest, prog=f"{PROG} train")
        return outcome if isinstance(outcome, int) else 0
    if command == "eval":
        from trl_nft.math_recipe import evaluate

        evaluate.main(rest, prog=f"{PROG} eval")
        return 0
    if command == "recipes":
        return recipes_command(rest)
    if command == "--version":
        from trl_nft import __version__

        print(f"{PROG} {__version__}")
        return 0
    print(f"{PROG}: error: unknown command {command!r} (choose from train, eval, recipes)\n\n{OVERVIEW}", end="",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
