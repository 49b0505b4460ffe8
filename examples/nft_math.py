"""Train a model on math with NFT, the paper's recipe (arXiv 2505.18116), through `accelerate launch`.

    accelerate launch --config_file examples/accelerate_configs/zero3.yaml examples/nft_math.py \
        --recipe qwen2.5-math-7b

The same code as the installed command `trl-nft train` (`trl_nft.cli` / `trl_nft.math_recipe.script`): every script,
`NFTConfig` / `GRPOConfig` / `TrainingArguments` and TRL `ModelConfig` option can be given in the recipe YAML
(`--recipe NAME` for a packaged one, `--config FILE` for yours) or on the command line (which wins).
`--help` lists the script's and NFT's options, `--help-all` every option.
"""

from __future__ import annotations

import sys

from trl_nft.cli import parse_train_args, train
from trl_nft.math_recipe.script import ScriptArguments, build_trainer, run

__all__ = ["ScriptArguments", "build_trainer", "main", "parse_train_args", "run"]


def main(argv: list[str] | None = None):
    """Parse `argv` (default: the command line), train, save; returns the trainer."""
    return train(sys.argv[1:] if argv is None else argv, prog="nft_math.py")


if __name__ == "__main__":
    main()
