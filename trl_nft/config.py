"""`NFTConfig`: `GRPOConfig` plus the knobs of Negative-aware Fine-Tuning, with the paper's defaults."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

from trl import GRPOConfig

from trl_nft.loss import PROMPT_WEIGHTINGS

# TRL aggregations NFT can use: they only sum/average a per-token loss. The others reshape the policy term itself.
SUPPORTED_LOSS_TYPES = ("dr_grpo", "dapo", "bnpo", "grpo")
UNSUPPORTED_LOSS_TYPES = ("cispo", "sapo", "vespo", "luspo")

# GRPOConfig options that only shape GRPO's clipped surrogate or advantages; NFT has neither. Value = TRL's default.
IGNORED_GRPO_OPTIONS = {"epsilon": 0.2, "epsilon_high": None, "scale_rewards": "group"}


@dataclass
class NFTConfig(GRPOConfig):
    """Configuration of `NFTTrainer`: every `GRPOConfig` option plus the NFT objective's own.

    The policy loss is NFT's (arXiv 2505.18116, Eq. 10) instead of GRPO's clipped surrogate. `loss_type` only picks how
    per-token losses are aggregated (default `"dr_grpo"`: sum over tokens divided by the constant
    batch × `max_completion_length`, as in the official implementation). `importance_sampling_level="sequence"` uses
    Eq. 9's whole-sequence ratio exp(Σ_t log-ratio) (a sum, not GSPO's length-normalised mean).
    """

    loss_type: str = field(
        default="dr_grpo",
        metadata={
            "help": "How per-token NFT losses are aggregated, as in TRL: 'dr_grpo' (paper default: sum divided by "
            "batch x max_completion_length), 'dapo' (sum / tokens in the generation batch), 'bnpo' (sum / tokens in "
            "the micro-batch), 'grpo' (mean per sequence, then over sequences)."
        },
    )
    neg_weight: float = field(
        default=1.0,
        metadata={
            "help": "Weight of the negative (incorrect answers) term. Paper default 1.0 = NFT; 0.0 = RFT "
            "(positives only; the paper's RFT baseline also uses prompt_weighting='none')."
        },
    )
    prompt_weighting: str = field(
        default="dr_grpo",
        metadata={
            "help": "Per-prompt weight ω(q) from the group correct rate r: 'dr_grpo' = 1 - r (paper default; "
            "on-policy equals Dr. GRPO), 'grpo' = sqrt((1 - r) / r) (on-policy equals GRPO), 'none' = 1."
        },
    )
    negative_clip: float = field(
        default=1.0,
        metadata={
            "help": "ε: straight-through floor of the negative ratio (1 - r R) / (1 - r); the forward value is "
            "max(x, ε), the gradient that of x. Must be > 0. Paper default 1.0."
        },
    )
    positive_clip: float = field(
        default=0.0,
        metadata={"help": "Straight-through floor of the positive ratio R. Paper default 0.0 (no floor)."},
    )
    correct_rate_clip: float = field(
        default=0.02,
        metadata={
            "help": "The group correct rate r is clipped to [c, 1 - c] inside the loss, in [0, 0.5). Official "
            "implementation default 0.02."
        },
    )
    max_log_ratio: float = field(
        default=10.0,
        metadata={"help": "log R is capped at this value before exp. Official implementation default 10.0."},
    )
    reward_threshold: float | None = field(
        default=None,
        metadata={
            "help": "How rewards become correctness labels. None (paper): the weighted sum of rewards must lie in "
            "[0, 1] and is used as the label (binary = the paper, fractional = soft labels); anything else is an "
            "error. A float: correct iff reward >= threshold (for ±1 or shaped rewards)."
        },
    )

    dynamic_sampling: bool = field(
        default=False,
        metadata={
            "help": "Fill every generation batch with informative groups (0 < r < 1), as the official NFT runs did "
            "(DAPO's dynamic sampling): degenerate groups are dropped and more prompts are generated until the batch "
            "holds as many groups as usual; surplus informative groups are dropped (see dynamic_sampling_carry_over). "
            "Prompts are drawn like a dataloader: none twice in an epoch. Off by default (TRL behaviour)."
        },
    )
    max_generation_rounds: int = field(
        default=10,
        metadata={
            "help": "With dynamic_sampling: most generation rounds per generation batch, the first included. When "
            "reached, the batch is completed with degenerate groups (zero loss) and a warning is logged. Paper: 10."
        },
    )
    dynamic_sampling_oversample: int = field(
        default=3,
        metadata={
            "help": "With dynamic_sampling: each refill round after the first generates this many times the "
            "generation batch's prompts. Paper: 3."
        },
    )
    dynamic_sampling_first_round_oversample: int = field(
        default=1,
        metadata={
            "help": "With dynamic_sampling: the first round generates this many times the generation batch's prompts "
            "(times the groups still missing when carried-over groups fill part of the batch). 1 = TRL's normal "
            "generation batch. The official runs use 3: gen_batch_size 1536 = 3 x train_batch_size 512 (NVlabs/NFT "
            "train_7B.sh lines 26-27), so that most batches fill without a refill round."
        },
    )
    dynamic_sampling_adaptive: bool = field(
        default=False,
        metadata={
            "help": "With dynamic_sampling: size every round from a running estimate p of the informative fraction: "
            "margin x missing groups / p prompts, at most the fixed rule's largest round, so a batch fills in about "
            "one round with little surplus. Before the first estimate the fixed factors apply. Off = the paper."
        },
    )
    dynamic_sampling_adaptive_margin: float = field(
        default=1.2,
        metadata={
            "help": "With dynamic_sampling_adaptive: safety factor (>= 1) on the prompts a round needs in "
            "expectation; higher means fewer extra rounds and more surplus. Not in the paper."
        },
    )
    dynamic_sampling_carry_over: bool = field(
        default=False,
        metadata={
            "help": "With dynamic_sampling: keep surplus informative groups, with the log-probabilities of the policy "
            "that generated them (their pi_old), and train them in a following generation batch before generating "
            "anew, instead of dropping them. Off = the paper (surplus dropped)."
        },
    )
    dynamic_sampling_max_carry_age: int | None = field(
        default=None,
        metadata={
            "help": "With dynamic_sampling_carry_over: a carried group older than this many optimizer steps "
            "(counted from its generation to the start of the generation batch that would train it) is dropped. "
            "None = one generation batch, i.e. steps_per_generation x num_iterations / gradient_accumulation_steps "
            "optimizer steps (at least 1): a group is trained by the next generation batch or not at all."
        },
    )

    def __post_init__(self):
        # NFT's own fields first: GRPOConfig / TrainingArguments checks (e.g. bf16 on a CPU machine) would otherwise
        # report an unrelated problem and hide a mistyped NFT option.
        self._validate_nft_options()
        self._default_bf16_to_what_the_machine_supports()
        super().__post_init__()
        self._warn_ignored_grpo_options()  # after GRPOConfig has normalised scale_rewards (True -> "group")

    def _default_bf16_to_what_the_machine_supports(self):
        """Unset `bf16` means GRPOConfig's bf16 = True, which TrainingArguments rejects on a machine without a bf16
        GPU unless use_cpu=True. There (and only there) fall back to float32, so a config written for GPUs also
        builds on a laptop; an explicit bf16=True keeps transformers' error."""
        if self.bf16 is not None or self.fp16 or self.use_cpu:
            return
        from transformers.utils import is_torch_bf16_gpu_available, is_torch_xla_available

        if not (is_torch_bf16_gpu_available() or is_torch_xla_available()):
            self.bf16 = False
            import torch

            if torch.cuda.is_available():  # a GPU without bf16 (e.g. V100): say so, GRPOConfig would have raised
                warnings.warn("bf16 is not supported by this GPU: training in float32 (set fp16=True for half "
                              "precision)", UserWarning, stacklevel=3)

    def _validate_nft_options(self):
        if self.prompt_weighting not in PROMPT_WEIGHTINGS:
            raise ValueError(f"prompt_weighting={self.prompt_weighting!r} must be one of {PROMPT_WEIGHTINGS}")
        if not self.negative_clip > 0:
            raise ValueError(f"negative_clip={self.negative_clip!r} must be > 0")
        if not self.positive_clip >= 0:
            raise ValueError(f"positive_clip={self.positive_clip!r} must be >= 0")
        if not 0.0 <= self.correct_rate_clip < 0.5:
            raise ValueError(f"correct_rate_clip={self.correct_rate_clip!r} must lie in [0, 0.5)")
        if not self.neg_weight >= 0:
            raise ValueError(f"neg_weight={self.neg_weight!r} must be >= 0")
        if not self.max_log_ratio > 0:
            raise ValueError(f"max_log_ratio={self.max_log_ratio!r} must be > 0")
        if self.loss_type not in SUPPORTED_LOSS_TYPES:
            reason = "it reshapes the policy term, which NFT replaces" if self.loss_type in UNSUPPORTED_LOSS_TYPES else ""
            raise ValueError(
                f"loss_type={self.loss_type!r} cannot be used with NFT{': ' + reason if reason else ''}; "
                f"choose one of {SUPPORTED_LOSS_TYPES}"
            )
        if self.delta is not None:
            raise ValueError(
                f"delta={self.delta!r}: two-sided clipping of GRPO's ratio has no meaning for NFT; leave it None"
            )
        if self.max_generation_rounds < 1:
            raise ValueError(f"max_generation_rounds={self.max_generation_rounds!r} must be >= 1")
        if self.dynamic_sampling_oversample < 1:
            raise ValueError(f"dynamic_sampling_oversample={self.dynamic_sampling_oversample!r} must be >= 1")
        if self.dynamic_sampling_first_round_oversample < 1:
            raise ValueError(
                f"dynamic_sampling_first_round_oversample={self.dynamic_sampling_first_round_oversample!r} must be >= 1"
            )
        if not self.dynamic_sampling_adaptive_margin >= 1.0:
            raise ValueError(
                f"dynamic_sampling_adaptive_margin={self.dynamic_sampling_adaptive_margin!r} must be >= 1"
            )
        if self.dynamic_sampling_max_carry_age is not None and self.dynamic_sampling_max_carry_age < 0:
            raise ValueError(f"dynamic_sampling_max_carry_age={self.dynamic_sampling_max_carry_age!r} must be >= 0")
        if self.importance_sampling_level not in ("token", "sequence"):
            raise ValueError(
                f"importance_sampling_level={self.importance_sampling_level!r} must be 'token' or 'sequence'"
            )

    def _warn_ignored_grpo_options(self):
        for name, default in IGNORED_GRPO_OPTIONS.items():
            value = getattr(self, name)
            if value != default:
                warnings.warn(
                    f"{name}={value!r} has no effect with NFTConfig: NFT uses no clipped surrogate and no "
                    "normalised advantages.",
                    UserWarning,
                    stacklevel=3,
                )
