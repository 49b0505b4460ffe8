"""`NFTConfig` construction: NFT's own validation comes before GRPOConfig's / TrainingArguments' checks."""

from __future__ import annotations

import pytest

from trl_nft import NFTConfig


def test_bad_nft_field_is_reported_before_the_bf16_check(tmp_path):
    # bf16=True on a CPU-only machine fails TrainingArguments' own check; the mistyped weighting must be named first.
    with pytest.raises(ValueError, match=r"prompt_weighting='dr-grpo'"):
        NFTConfig(output_dir=str(tmp_path), prompt_weighting="dr-grpo", bf16=True)


def test_defaults_construct_on_a_cpu_machine(tmp_path):
    # The README's snippet: no use_cpu, no bf16 given.
    config = NFTConfig(output_dir=str(tmp_path))
    assert config.prompt_weighting == "dr_grpo"
