"""Metrics parity with GRPOTrainer: NFT logs every TRL metric that has a meaning for it, and the docs list the rest.

The list below is every key trl 1.16's `GRPOTrainer` writes to its metrics. It is checked two ways: against TRL's
source (so a TRL release that adds or drops a key fails here), and by one tiny run of each trainer in the same setup
(so NFT failing to log one fails here).
"""

from __future__ import annotations

import inspect
import os
import re
from unittest.mock import patch

import pytest
import trl.trainer.grpo_trainer
from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer

from tests.conftest import REPO_ROOT, tiny_args
from tests.scenarios.conftest import chat_tokenizer, scripted_generate
from trl_nft import NFTConfig, NFTTrainer
from trl_nft.testing.tiny_models import build_tiny_qwen2_moe

# Logged by NFTTrainer as by GRPOTrainer ({name}: one per reward function). `reward`, `reward_std`,
# `frac_reward_zero_std` and `rewards/*` describe the raw rewards, before NFT turns them into labels.
LOGGED_AS_IN_TRL = {
    "num_tokens", "step_time", "completions/mean_length", "completions/min_length", "completions/max_length",
    "completions/clipped_ratio", "completions/mean_terminated_length", "completions/min_terminated_length",
    "completions/max_terminated_length", "tools/call_frequency", "tools/failure_frequency",
    "rewards/{reward_func_name}/mean", "rewards/{reward_func_name}/std", "reward", "reward_std",
    "frac_reward_zero_std", "kl", "entropy", "entropy_coef", "aux_loss",
    "policy_loss",  # with the entropy bonus, as in TRL: the loss before the bonus (NFT term + beta x KL)
}
# Logged as in TRL only with vLLM's importance-sampling correction (no vLLM on a CPU test machine).
LOGGED_AS_IN_TRL_WITH_VLLM = {
    "sampling/sampling_logp_difference/mean", "sampling/sampling_logp_difference/max",
    "sampling/importance_sampling_ratio/min", "sampling/importance_sampling_ratio/mean",
    "sampling/importance_sampling_ratio/max",
}
# Not logged by NFTTrainer; docs/differences_from_grpo.md says why.
NOT_LOGGED = {
    "clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean", "clip_ratio/low_min",
    "clip_ratio/high_max",  # GRPO's clipped surrogate; NFT has none (its floor: nft/negative_floor_frac)
    "cispo_clip_ratio", "vespo/phi_seq_mean",  # loss types NFTConfig rejects
}
NFT_ONLY = {"nft/positive_loss", "nft/negative_loss", "nft/correct_rate_mean", "nft/degenerate_group_frac",
            "nft/negative_floor_frac", "nft/ratio_mean", "nft/ratio_max"}

DOCS_PAGE = REPO_ROOT / "docs" / "differences_from_grpo.md"


def trl_metric_keys() -> set[str]:
    """The literal keys GRPOTrainer's source writes into `self._metrics[...]` (f-string keys with their {name})."""
    source = inspect.getsource(trl.trainer.grpo_trainer)
    return set(re.findall(r"_metrics\[[^\]]+\]\[\s*f?\"([^\"]+)\"\s*\]", source))


def test_the_list_is_every_metric_trl_logs():
    listed = LOGGED_AS_IN_TRL | LOGGED_AS_IN_TRL_WITH_VLLM | NOT_LOGGED
    assert trl_metric_keys() == listed, "GRPOTrainer's metrics changed: sort the new keys into the lists above"


def test_the_docs_list_every_metric_nft_does_not_log():
    text = DOCS_PAGE.read_text()
    assert [key for key in sorted(NOT_LOGGED) if f"`{key}`" not in text] == []


def increment(step: int) -> int:
    """
    Add to a counter.

    Args:
        step: How much to add.

    Returns:
        The new count.
    """
    return step


def finished(completions, **kwargs):
    return [float(completion[-1]["content"].startswith("Done")) for completion in completions]


@pytest.fixture(scope="module")
def moe_checkpoint(tmp_path_factory):
    """A tiny Mixture-of-Experts model (so the router's aux_loss is logged), saved so TRL can load a reference."""
    tokenizer = chat_tokenizer()
    model = build_tiny_qwen2_moe(tokenizer)
    path = tmp_path_factory.mktemp("moe")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def logged_keys(trainer_cls, config_cls, checkpoint, output_dir) -> set[str]:
    """Keys one tiny run logs (train and eval) with every metric-producing option a CPU allows: a MoE router loss,
    KL to a reference, the entropy bonus, a tool, evaluation."""
    tokenizer = chat_tokenizer()
    dataset = Dataset.from_dict({"prompt": [[{"role": "user", "content": f"Count to {n}."}] for n in range(4)]})
    args = tiny_args(config_cls, output_dir, per_device_train_batch_size=4, per_device_eval_batch_size=4,
                     max_completion_length=32, beta=0.1, entropy_coef=0.01, eval_strategy="steps", eval_steps=1,
                     shuffle_dataset=False)
    trainer = trainer_cls(model=checkpoint, reward_funcs=finished, args=args, train_dataset=dataset,
                          eval_dataset=dataset.select(range(1)), processing_class=tokenizer, tools=[increment])
    with patch.object(trainer.model, "generate", side_effect=scripted_generate(tokenizer)):
        trainer.train()
    return {key for entry in trainer.state.log_history for key in entry}


def test_nft_logs_every_trl_metric_that_has_a_meaning_for_it(moe_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setitem(os.environ, "TRL_EXPERIMENTAL_SILENCE", "1")
    grpo = logged_keys(GRPOTrainer, GRPOConfig, moe_checkpoint, tmp_path / "grpo")
    nft = logged_keys(NFTTrainer, NFTConfig, moe_checkpoint, tmp_path / "nft")

    def train_and_eval(keys):
        return set(keys) | {f"eval_{key}" for key in keys}

    per_function = {key.replace("{reward_func_name}", "finished") for key in LOGGED_AS_IN_TRL}
    train_only = {"step_time", "entropy_coef"}
    # The run exercises every metric that needs no vLLM (so the comparison below covers them all) ...
    assert train_and_eval(per_function - train_only) | train_only <= grpo
    # ... and NFT logs exactly GRPO's keys, less the ones without a meaning for it, plus its own.
    assert grpo - nft == train_and_eval({key for key in NOT_LOGGED if key.startswith("clip_ratio/")})
    assert nft - grpo == train_and_eval(NFT_ONLY)
