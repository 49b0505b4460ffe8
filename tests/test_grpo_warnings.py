"""TRL's warning that sequence-level importance sampling weighs sequences by length is false for NFT: dropped."""

from __future__ import annotations

import logging

import pytest
from trl import GRPOConfig, GRPOTrainer

from tests.conftest import first_char_parity_reward, tiny_args
from trl_nft import NFTConfig, NFTTrainer
from trl_nft.grpo_warnings import SEQUENCE_LEVEL_NOTE, without_warnings_false_for_nft

SEQUENCE_WARNING = "effectively weights each sequence by its completion length"
OTHER_TRL_WARNING = "The `model_init_kwargs` will be ignored"


def construction_messages(trainer_cls, config_cls, model, dataset, tokenizer, tmp_path, caplog, **overrides):
    # model_init_kwargs with an instantiated model: TRL warns that they are ignored (a warning that must stay)
    args = tiny_args(config_cls, tmp_path, model_init_kwargs={"dtype": "float32"}, **overrides)
    caplog.clear()
    # The trainer's own logger too: code run earlier in the process (a benchmark) may have raised its level.
    with caplog.at_level(logging.INFO), caplog.at_level(logging.INFO, logger="trl_nft.trainer"):
        trainer_cls(model=model, reward_funcs=first_char_parity_reward, args=args, train_dataset=dataset,
                    processing_class=tokenizer)
    return [record.getMessage() for record in caplog.records]


@pytest.mark.parametrize("loss_type", ["dr_grpo", "bnpo", "dapo"])
def test_sequence_level_warning_is_replaced_by_what_holds_for_nft(
        model, prompt_dataset, tokenizer, tmp_path, caplog, loss_type):
    common = (model, prompt_dataset, tokenizer, tmp_path, caplog)
    level = dict(importance_sampling_level="sequence", loss_type=loss_type)
    grpo = construction_messages(GRPOTrainer, GRPOConfig, *common, **level)
    assert any(SEQUENCE_WARNING in m for m in grpo)  # TRL still says it, so the filter still has a target
    nft = construction_messages(NFTTrainer, NFTConfig, *common, **level)
    assert not any(SEQUENCE_WARNING in m for m in nft)
    assert any(OTHER_TRL_WARNING in m for m in nft)  # TRL's other warnings pass
    assert SEQUENCE_LEVEL_NOTE in nft
    token_level = construction_messages(NFTTrainer, NFTConfig, *common, loss_type=loss_type)
    assert SEQUENCE_LEVEL_NOTE not in token_level


def test_only_that_warning_is_dropped_and_only_inside_the_block(caplog):
    trl_logger = logging.getLogger(GRPOTrainer.__module__)
    false_claim = ("When using `importance_sampling_level='sequence'`, the `'dapo'` loss sums per-token contributions, "
                   f"which {SEQUENCE_WARNING} instead of optimizing the per-sequence objective.")
    with caplog.at_level(logging.WARNING):
        with without_warnings_false_for_nft():
            trl_logger.warning(false_claim)
            trl_logger.warning("another warning")
        trl_logger.warning(false_claim)
    assert [record.getMessage() for record in caplog.records] == ["another warning", false_claim]
