"""How `trl-nft train` launches itself through accelerate, as `trl grpo` does.

Options that belong to no dataclass of the training script are launch options: `--accelerate_config NAME|FILE`
(a config shipped with TRL — `single_gpu`, `multi_gpu`, `zero1`, `zero2`, `zero3`, `fsdp1`, `fsdp2` — or a YAML
file, resolved by TRL's own helper) and every `accelerate launch` option (`--num_processes`, `--num_machines`,
`--machine_rank`, `--main_process_ip`, ...). They may also sit in the recipe / `--config` YAML
(`accelerate_config: zero3`, `num_processes: 8`); the command line wins. With any of them the command re-runs itself
as `accelerate launch [launch options] -m trl_nft.cli train [the other options]`; without them it trains in this
process. A process that is already under a launcher (this one, `accelerate launch`, `torchrun`) never launches again.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from functools import cache

logger = logging.getLogger(__name__)

ACCELERATE_CONFIG_OPTION = "--accelerate_config"
# Set by the launching process; seen by the processes it starts (accelerate copies the environment).
LAUNCHED_ENV = "TRL_NFT_LAUNCHED"
# Variables that any launcher sets in the processes it starts: torchrun / accelerate multi-process / deepspeed set
# LOCAL_RANK, every `accelerate launch` (one process too) sets ACCELERATE_MIXED_PRECISION.
LAUNCHER_ENV = ("LOCAL_RANK", "ACCELERATE_MIXED_PRECISION")
CHILD_COMMAND = ["--module", "trl_nft.cli", "train"]


class LaunchOptionError(ValueError):
    """Options that are neither training options nor `accelerate launch` options."""


@cache
def _accelerate_actions() -> dict[str, argparse.Action]:
    from accelerate.commands.launch import launch_command_parser

    actions = {}
    for action in launch_command_parser()._actions:
        for option in action.option_strings:
            if option.startswith("--") and option != "--help":
                actions[option] = action
    return actions


def is_launch_option(option: str) -> bool:
    return option == ACCELERATE_CONFIG_OPTION or option in _accelerate_actions()


def _dest(option: str) -> str:
    return "accelerate_config" if option == ACCELERATE_CONFIG_OPTION else _accelerate_actions()[option].dest


def _is_flag(option: str) -> bool:
    action = _accelerate_actions().get(option)
    return action is not None and action.nargs == 0


def group_launch_options(tokens: list[str], from_config: bool = False) -> dict[str, list[str]]:
    """Launch options among `tokens` (what the training parser left over): {dest: [option, values...]}.

    A config file's keys arrive as `--key value` pairs; a `true` / `false` value of an accelerate flag
    (`multi_gpu: true`) becomes the bare flag or nothing. Raises LaunchOptionError listing the tokens that are no
    launch option (typos of training options end up here).
    """
    grouped: dict[str, list[str]] = {}
    unknown: list[str] = []
    current: list[str] | None = None
    for token in tokens:
        option = token.split("=", 1)[0]
        if token.startswith("-") and not _is_number(token):
            if is_launch_option(option):
                current = [token]
                grouped[_dest(option)] = current
            else:
                current = None
                unknown.append(token)
        elif current is not None:
            current.append(token)
        else:
            unknown.append(token)
    if unknown:
        raise LaunchOptionError(" ".join(unknown))
    if from_config:
        for dest, group in list(grouped.items()):
            if _is_flag(group[0]) and len(group) == 2:
                if group[1].lower() in ("false", "0", "no"):
                    del grouped[dest]
                else:
                    grouped[dest] = group[:1]
    return grouped


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def launch_arguments(config_tokens: list[str], cli_tokens: list[str]) -> list[str]:
    """`accelerate launch` arguments from the config file's and the command line's launch options (the command line
    wins per option), with `--accelerate_config` resolved to `--config_file PATH` by TRL's helper."""
    from trl.cli.accelerate_config import resolve_accelerate_config_argument

    merged = group_launch_options(config_tokens, from_config=True)
    merged.update(group_launch_options(cli_tokens))
    flat = [token for group in merged.values() for token in group]
    try:
        return resolve_accelerate_config_argument(_split_equals(flat))
    except ValueError as error:
        raise LaunchOptionError(f"--accelerate_config: {error}") from None


def _split_equals(tokens: list[str]) -> list[str]:
    """`--accelerate_config=zero3` as two tokens: TRL's helper looks for the option as a whole token."""
    out = []
    for token in tokens:
        if token.startswith(ACCELERATE_CONFIG_OPTION + "="):
            out += token.split("=", 1)
        else:
            out.append(token)
    return out


def without_tokens(argv: list[str], removed: list[str]) -> list[str]:
    """`argv` without the ordered subsequence `removed` (the launch options given on the command line)."""
    out, pending = [], list(removed)
    for token in argv:
        if pending and token == pending[0]:
            pending.pop(0)
        else:
            out.append(token)
    return out


def launcher_in_charge() -> str | None:
    """The environment variable showing this process was started by a launcher, or None."""
    for name in (LAUNCHED_ENV, *LAUNCHER_ENV):
        if os.environ.get(name):
            return name
    return None


def relaunch(launch_args: list[str], script_argv: list[str]) -> int:
    """Run `accelerate launch <launch_args> -m trl_nft.cli train <script_argv>`; returns its exit code."""
    from accelerate.commands.launch import launch_command, launch_command_parser

    accelerate_args = launch_command_parser().parse_args(launch_args + CHILD_COMMAND + script_argv)
    logger.info("launching: accelerate launch %s", " ".join(launch_args + CHILD_COMMAND + script_argv))
    os.environ[LAUNCHED_ENV] = "1"  # the started processes train; they do not launch again
    try:
        launch_command(accelerate_args)
    except subprocess.CalledProcessError as failed:  # one process: its own traceback is already on stderr
        return failed.returncode or 1
    except Exception as error:
        from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

        if isinstance(error, ChildFailedError):  # several processes: torchrun printed which rank failed and why
            print(error, file=sys.stderr)
            return 1
        raise
    finally:
        os.environ.pop(LAUNCHED_ENV, None)
    return 0
