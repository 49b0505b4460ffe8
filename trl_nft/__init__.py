"""Negative-aware Fine-Tuning (NFT, arXiv 2505.18116) for Hugging Face TRL.

Layers, each in its own place:

* core: `config` (`NFTConfig`), `trainer` (`NFTTrainer`), `loss` (the objective), `labels` (rewards -> r, r̂), and the
  trainer's helpers (`generation_state`, `completion_logs`, `dataset_checks`, `precision`);
* `dynamic_sampling`: batches filled with informative groups;
* `rewards`: verifiers usable as TRL reward functions;
* `math_recipe`: the paper's math run (data, evaluation, training script, packaged recipes);
* `testing`: tiny offline models and the arithmetic testbed, for tests, benchmarks and the demo;
* `cli`: the `trl-nft` command.

Heavy imports (trl, transformers) are deferred so that `trl_nft.loss` or `trl_nft.rewards` can be used alone.
"""

from importlib import import_module

__version__ = "0.1.0"

_LAZY = {
    "NFTConfig": "trl_nft.config",
    "NFTTrainer": "trl_nft.trainer",
    "nft_per_token_loss": "trl_nft.loss",
    "math_accuracy_reward": "trl_nft.rewards",
}

__all__ = list(_LAZY) + ["__version__"]


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'trl_nft' has no attribute {name!r}")
