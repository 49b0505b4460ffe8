"""`NFTConfig`: `GRPOConfig` plus the knobs of Negative-aware Fine-Tuning, with the paper's defaults."""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field

from trl import GRPOConfig

from trl_nft import group_order
from trl_nft.loss import PROMPT_WEIGHTINGS

# TRL aggregations NFT can use: they only sum/average a per-token loss. The others reshape the policy term itself.
SUPPORTED_LOSS_TYPES = ("dr_grpo", "dapo", "bnpo", "grpo")
UNSUPPORTED_LOSS_TYPES = ("cispo", "sapo", "vespo", "luspo")

# GRPOConfig options that only shape GRPO's clipped surrogate or advantages; NFT has neither. Value = TRL's default.
IGNORED_GRPO_OPTIONS = {"epsilon": 0.2, "epsilon_high": None, "scale_rewards": "group"}

# TrainingArguments fields whose value "no" a YAML file delivers as False.
STRATEGY_FIELDS_WITH_NO = ("eval_strategy", "save_strategy", "logging_strategy")

# Init fields that GRPOConfig.__post_init__ (and TrainingArguments') fill in or normalise when left unset: the batch
# pair is derived from the per-device batch and gradient accumulation, bf16 from the hardware, aliases are synced.
# `from_grpo_config` copies them only when they differ from what that derivation gives, i.e. when the user set them.
# tests/test_config.py checks that this list covers every field a default GRPOConfig fills in.
POST_INIT_FILLED_FIELDS = (
    "generation_batch_size", "steps_per_generation", "bf16", "activation_checkpointing", "gradient_checkpointing",
    "output_dir", "disable_tqdm", "report_to", "accelerator_config", "dataloader_pin_memory", "debug",
    "pad_to_multiple_of", "do_eval", "eval_steps", "metric_for_best_model", "greater_is_better", "torch_compile",
)


@dataclass
class NFTConfig(GRPOConfig):
    r"""Configuration of [`NFTTrainer`]: every [`~trl.GRPOConfig`] option plus the NFT objective's own.

    The policy loss is NFT's (arXiv 2505.18116, Eq. 10) instead of GRPO's clipped surrogate; generation, rewards,
    vLLM, PEFT, DeepSpeed and logging keep their `GRPOConfig` options. To convert an existing `GRPOConfig`, use
    [`NFTConfig.from_grpo_config`]. Defaults are the paper's (official NVlabs/NFT `train_7B.sh`) unless noted.

    Parameters:
        > Parameters that control the NFT objective

        neg_weight (`float`, *optional*, defaults to `1.0`):
            λ, the weight of the negative term, which trains on incorrect answers through the implicit negative
            policy. `1.0` is NFT (paper); `0.0` trains on correct answers only, i.e. RFT (the paper's RFT baseline
            also sets `prompt_weighting="none"`). Must be ≥ 0.
        prompt_weighting (`str`, *optional*, defaults to `"dr_grpo"`):
            ω(q), the weight of each prompt from its group's correct rate r̂:

            - `"dr_grpo"` (paper default): 1 − r̂. Strictly on-policy, NFT's gradient then equals Dr. GRPO's.
            - `"grpo"`: sqrt((1 − r̂) / r̂). Strictly on-policy, NFT's gradient then equals GRPO's.
            - `"none"`: 1 (the paper's RFT baseline).
        negative_clip (`float`, *optional*, defaults to `1.0`):
            ε, the straight-through floor of the negative ratio (1 − r̂R) / (1 − r̂): the forward value is max(x, ε),
            the gradient that of x. Paper default 1.0 (official `clamp_negative`). Matters off-policy, where an
            incorrect answer has become more likely (R > 1); on-policy the ratio is 1. Must be > 0.
        positive_clip (`float`, *optional*, defaults to `0.0`):
            Straight-through floor of the positive ratio R. Paper default 0.0, no floor (official `clamp_positive`).
        correct_rate_clip (`float`, *optional*, defaults to `0.02`):
            r̂ is clipped to [c, 1 − c] inside the loss, as in the official implementation, so that ω and the negative
            ratio stay finite. Only changes anything for groups of more than 50 completions. In [0, 0.5).
        max_log_ratio (`float`, *optional*, defaults to `10.0`):
            log R is capped at this value before exp, as in the official implementation. Only extreme off-policy
            tokens reach it. Must be > 0.
        loss_type (`str`, *optional*, defaults to `"dr_grpo"`):
            How per-token NFT losses are aggregated (`GRPOConfig`'s default is `"dapo"`):

            - `"dr_grpo"` (official): sum over tokens divided by the constant batch × `max_completion_length`. The
              loss scale is constant, which matters for `max_grad_norm` (see the paper recipes).
            - `"dapo"`: sum divided by the tokens of the generation batch.
            - `"bnpo"`: sum divided by the tokens of the micro-batch.
            - `"grpo"`: mean per sequence, then over sequences (long completions weigh less per token).

            `"cispo"`, `"sapo"`, `"vespo"` and `"luspo"` reshape GRPO's policy term, which NFT replaces: they raise.
        importance_sampling_level (`str`, *optional*, defaults to `"token"`):
            `"token"` (paper default): a ratio R per token. `"sequence"`: Eq. 9's whole-sequence ratio
            exp(Σ_t log-ratio), a sum, not GSPO's length-normalised mean; each sequence's loss is counted once.

        > Parameters that control the correctness labels

        reward_threshold (`float` or `None`, *optional*, defaults to `None`):
            How rewards become the correctness labels r. `None` (paper): the weighted sum of the rewards must lie in
            [0, 1] and is the label (binary = the paper, fractional = soft labels); a reward outside it raises. A
            float: a completion is correct iff the weighted sum of its rewards is ≥ the threshold. Set it for rewards
            that are not correctness labels: ±1 rewards (`0.0`); a reward model (the score above which an answer is
            right, `0.0` for a right-vs-wrong classifier's logit); shaped rewards (the lowest sum a correct answer can
            get, which no wrong answer reaches).

        > Parameters that control dynamic sampling (DAPO-style batch filling, as in the official runs)

        dynamic_sampling (`bool`, *optional*, defaults to `False`):
            Fill every generation batch with informative groups (0 < r̂ < 1): groups whose answers are all right or
            all wrong carry no signal and are dropped, and more prompts are generated until the batch holds its
            configured number of groups; surplus informative groups are dropped (or carried over). Prompts are drawn
            like a dataloader: none twice in an epoch. Off by default (TRL's behaviour); the official runs used it.
            Matters when many groups are degenerate, e.g. early from a weak model or late when most are solved.
        max_generation_rounds (`int`, *optional*, defaults to `10`):
            Most generation rounds per generation batch, the first included (official `max_num_gen_batches`). At the
            cap, the batch is completed with degenerate (zero-loss) groups and a warning is logged.
        dynamic_sampling_oversample (`int`, *optional*, defaults to `3`):
            Prompts of each refill round after the first, as a multiple of the generation batch's prompts. Paper: 3.
        dynamic_sampling_first_round_oversample (`int`, *optional*, defaults to `1`):
            Prompts of the first round, as a multiple of the generation batch's prompts (times the groups still
            missing when carried-over groups fill part of the batch). `1` is TRL's normal generation batch; the
            official runs use `3` (`gen_batch_size` 1,536 = 3 × 512), so that most batches fill in one round.
        dynamic_sampling_adaptive (`bool`, *optional*, defaults to `False`):
            Size every round from a running estimate p̂ of the informative fraction: margin × missing groups / p̂
            prompts, at most the fixed rule's largest round, so a batch fills in about one round with little
            surplus. Before the first estimate the fixed factors apply. Not in the paper.
        dynamic_sampling_adaptive_margin (`float`, *optional*, defaults to `1.2`):
            Safety factor (≥ 1) of the adaptive rule: higher means fewer extra rounds and more surplus. Not in the
            paper.
        dynamic_sampling_carry_over (`bool`, *optional*, defaults to `False`):
            Keep surplus informative groups, with the log-probabilities of the policy that generated them (their
            π_old), and train them in a following generation batch instead of dropping them. Not in the paper (which
            drops the surplus); saves generation, best combined with adaptive rounds.
        dynamic_sampling_max_carry_age (`int` or `None`, *optional*, defaults to `None`):
            With carry-over: a carried group older than this many optimizer steps (from its generation to the start
            of the generation batch that would train it) is dropped. `None` = one generation batch, i.e. a group is
            trained by the next generation batch or not at all.

        > Parameters that reproduce the official optimizer and evaluation (each defaults to TRL's behaviour)

        lr_scheduler_per_generation (`bool`, *optional*, defaults to `False`):
            Advance the learning-rate scheduler once per generation batch (rollout step) instead of once per
            optimizer step: `warmup_steps` (or a warm-up ratio) and the schedule's length count generation batches,
            and the learning rate is constant over each generation batch's optimizer steps. With
            `lr_scheduler_type="constant_with_warmup"` and `warmup_steps=10` the k-th generation batch (from 0)
            trains at lr × min(1, k / 10), the official schedule (the first one at lr 0). Needs
            `steps_per_generation` × `num_iterations` to be a multiple of `gradient_accumulation_steps`. Official:
            `True` (verl steps its scheduler after each rollout step); default `False` (TRL).
        weight_decay_all_parameters (`bool`, *optional*, defaults to `False`):
            Apply `weight_decay` to every parameter. `False` (transformers' Trainer): biases and normalisation
            weights get no decay. Official: `True` (verl's AdamW decays all parameters).
        eval_temperature (`float` or `None`, *optional*, defaults to `None`):
            Sampling temperature of in-training evaluation. `None`: `temperature`, as in TRL. Official: 0.6
            (validation `val_kwargs.temperature`).
        eval_top_p (`float` or `None`, *optional*, defaults to `None`):
            Top-p of in-training evaluation. `None`: `top_p`, as in TRL. Official: 0.7 (validation
            `val_kwargs.top_p`).

        > Parameters that control the mini-batches

        keep_groups_together (`bool`, *optional*, defaults to `False`):
            Shuffle the generation batch by whole groups instead of single completions, so every optimizer step
            trains complete groups (all `num_generations` answers of its prompts, also those held by other
            processes). `False` is TRL's behaviour: each group is spread over all the optimizer steps of its
            generation batch. Only matters off-policy (`steps_per_generation` > `gradient_accumulation_steps`).
            The official 7B run's mini-batches keep groups nearly whole, the 32B run's scatter them; the paper
            recipes follow (`true` / `false`). Needs `steps_per_generation` to be a multiple or divisor of
            `gradient_accumulation_steps` and, when larger, `per_device_train_batch_size` ×
            `gradient_accumulation_steps` to be a multiple of `num_generations`.
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
            "error. A float: correct iff the weighted sum >= threshold, needed for rewards that are not correctness "
            "labels: 0.0 for ±1 rewards; a reward model's score above which an answer is right; for shaped rewards, "
            "the lowest sum a correct answer can get."
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

    lr_scheduler_per_generation: bool = field(
        default=False,
        metadata={
            "help": "Advance the LR scheduler once per generation batch (rollout step), not once per optimizer step: "
            "warmup_steps and the schedule's length count generation batches and the lr is constant within one. "
            "constant_with_warmup with warmup_steps=10 then trains generation batch k (from 0) at "
            "lr x min(1, k/10), the official schedule. Official: true (verl steps its scheduler per rollout step); "
            "default false (TRL)."
        },
    )
    weight_decay_all_parameters: bool = field(
        default=False,
        metadata={
            "help": "Apply weight_decay to every parameter, biases and normalisation weights included. Official: "
            "true (verl's AdamW decays all parameters); default false (transformers excludes biases and norms)."
        },
    )
    eval_temperature: float | None = field(
        default=None,
        metadata={
            "help": "Sampling temperature of in-training evaluation; None = temperature (TRL's behaviour). "
            "Official: 0.6 (validation val_kwargs.temperature)."
        },
    )
    eval_top_p: float | None = field(
        default=None,
        metadata={
            "help": "Top-p of in-training evaluation; None = top_p (TRL's behaviour). Official: 0.7 (validation "
            "val_kwargs.top_p)."
        },
    )
    keep_groups_together: bool = field(
        default=False,
        metadata={
            "help": "Shuffle the generation batch by whole groups, so every optimizer step trains complete groups "
            "(all num_generations answers of its prompts, on every process). False = TRL's behaviour: single "
            "completions are shuffled and each group is spread over all optimizer steps of its generation batch. "
            "Matters only when steps_per_generation > gradient_accumulation_steps. The official 7B run's "
            "mini-batches keep groups nearly whole (its recipe: true), the 32B run's scatter them (false)."
        },
    )

    @classmethod
    def from_grpo_config(cls, grpo_config: GRPOConfig, **nft_overrides) -> NFTConfig:
        """The `NFTConfig` with `grpo_config`'s settings, plus `nft_overrides` (NFT fields or any other field).

        `NFTConfig(**grpo_config.to_dict())` does not work: `to_dict` returns the values after `__post_init__`, which
        fills in both `generation_batch_size` and `steps_per_generation` (GRPOConfig then refuses the pair) and hides
        tokens. Here each field is copied as it was set: fields GRPOConfig filled in itself (the batch pair, bf16,
        ...) are left to NFTConfig to fill in again, and a field left at GRPOConfig's default takes NFTConfig's
        (`loss_type` becomes `"dr_grpo"`). The generation batch is carried as `steps_per_generation`; give
        `generation_batch_size` or `steps_per_generation` in `nft_overrides` to change it. Options of GRPO's clipped
        surrogate that NFT ignores or rejects (`epsilon`, `epsilon_high`, `scale_rewards`, `delta`, and loss types
        NFT cannot use) are not copied, with one warning naming them.

        ```python
        nft_args = NFTConfig.from_grpo_config(grpo_args, neg_weight=1.0, dynamic_sampling=True)
        ```
        """
        if not isinstance(grpo_config, GRPOConfig):
            raise TypeError(f"grpo_config must be a GRPOConfig, got {type(grpo_config).__name__}")
        init_fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(nft_overrides) - set(init_fields))
        if unknown:
            raise TypeError(f"NFTConfig has no field(s) {unknown}")

        values = _fields_set_by_user(grpo_config, [f for f in dataclasses.fields(grpo_config) if f.name in init_fields])
        not_copied = {name: values.pop(name) for name in [*IGNORED_GRPO_OPTIONS, "delta"] if name in values}
        if values.get("loss_type") in UNSUPPORTED_LOSS_TYPES:
            not_copied["loss_type"] = values.pop("loss_type")
        not_copied = {name: value for name, value in not_copied.items() if name not in nft_overrides}
        if not_copied:
            warnings.warn(
                f"NFTConfig.from_grpo_config: not copied, since NFT has no clipped surrogate or normalised advantages: "
                f"{', '.join(f'{name}={value!r}' for name, value in not_copied.items())}",
                UserWarning,
                stacklevel=2,
            )
        if {"generation_batch_size", "steps_per_generation"} & set(nft_overrides):
            values.pop("generation_batch_size", None)
            values.pop("steps_per_generation", None)
        return cls(**{**values, **nft_overrides})

    def __post_init__(self):
        # NFT's own fields first: GRPOConfig / TrainingArguments checks (e.g. bf16 on a CPU machine) would otherwise
        # report an unrelated problem and hide a mistyped NFT option.
        self._validate_nft_options()
        self._default_bf16_to_what_the_machine_supports()
        self._read_yaml_no_as_the_strategy_no()
        super().__post_init__()
        self._check_scheduler_per_generation()  # needs steps_per_generation, which GRPOConfig derives
        if self.keep_groups_together:  # needs steps_per_generation, which GRPOConfig fills in
            group_order.check_whole_group_layout(
                group_size=self.num_generations,
                per_device_batch=self.per_device_train_batch_size,
                steps_per_generation=self.steps_per_generation,
                gradient_accumulation_steps=self.gradient_accumulation_steps,
            )
        self._warn_ignored_grpo_options()  # after GRPOConfig has normalised scale_rewards (True -> "group")

    def _read_yaml_no_as_the_strategy_no(self):
        """`eval_strategy: no` in a YAML recipe arrives as False (YAML 1.1 reads a bare no as a boolean), which
        TrainingArguments rejects as "False is not a valid IntervalStrategy"; it can only mean the strategy "no"."""
        for name in STRATEGY_FIELDS_WITH_NO:
            if getattr(self, name, None) is False:
                setattr(self, name, "no")

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
        if self.eval_temperature is not None and not self.eval_temperature > 0:
            raise ValueError(f"eval_temperature={self.eval_temperature!r} must be > 0 (or None: the training one)")
        if self.eval_top_p is not None and not 0 < self.eval_top_p <= 1:
            raise ValueError(f"eval_top_p={self.eval_top_p!r} must lie in (0, 1] (or None: the training one)")
        if self.importance_sampling_level not in ("token", "sequence"):
            raise ValueError(
                f"importance_sampling_level={self.importance_sampling_level!r} must be 'token' or 'sequence'"
            )

    def _check_scheduler_per_generation(self):
        if not self.lr_scheduler_per_generation:
            return
        micro_steps = self.steps_per_generation * self.num_iterations
        if micro_steps % self.gradient_accumulation_steps:
            raise ValueError(
                f"lr_scheduler_per_generation=True needs whole optimizer steps per generation batch: "
                f"steps_per_generation={self.steps_per_generation} x num_iterations={self.num_iterations} is not a "
                f"multiple of gradient_accumulation_steps={self.gradient_accumulation_steps}"
            )
        scheduler_type = getattr(self.lr_scheduler_type, "value", self.lr_scheduler_type)  # an enum after post-init
        if scheduler_type in ("reduce_lr_on_plateau", "greedy"):
            raise ValueError(
                f"lr_scheduler_per_generation=True cannot pace lr_scheduler_type={scheduler_type!r}, "
                "which follows a metric, not a step count"
            )

    @property
    def optimizer_steps_per_generation(self) -> int:
        """Optimizer steps that train one generation batch (all its `num_iterations` passes)."""
        return max(1, self.steps_per_generation * self.num_iterations // self.gradient_accumulation_steps)

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


def _declared_default(field: dataclasses.Field):
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def _same(a, b) -> bool:
    try:
        return bool(a == b)
    except Exception:  # e.g. objects whose == is elementwise
        return False


def _fields_set_by_user(config: GRPOConfig, fields: list[dataclasses.Field]) -> dict:
    """The init fields of `config` that differ from their defaults, without the ones its `__post_init__` filled in.

    The generation batch: GRPOConfig sets `steps_per_generation = gradient_accumulation_steps` when neither of the pair
    is given, so any other value was asked for; it is kept as `steps_per_generation` (GRPOConfig accepts only one of
    the pair, and with the same per-device batch and processes it gives the same generation batch). Another
    post-init field counts as set by the user when its value differs from what `__post_init__` derives from the
    other fields; a probe config built from those tells what that is.
    """
    changed = {f.name: getattr(config, f.name) for f in fields
               if not _same(getattr(config, f.name), _declared_default(f))}
    given = {name: value for name, value in changed.items() if name not in POST_INIT_FILLED_FIELDS}
    if config.steps_per_generation != config.gradient_accumulation_steps:
        given["steps_per_generation"] = config.steps_per_generation
    filled = {name: value for name, value in changed.items()
              if name in POST_INIT_FILLED_FIELDS and name not in ("generation_batch_size", "steps_per_generation")}
    if not filled:
        return given
    probe_values = {name: value for name, value in given.items() if name not in ("delta", "loss_type")}
    probe_values["steps_per_generation"] = config.steps_per_generation  # the same generation batch as `config`
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            probe = NFTConfig(**probe_values)  # NFTConfig's bf16 fallback: a CPU-built config must probe on a CPU too
    except (ValueError, TypeError):  # cannot tell what was derived: keep the values as they are
        return {**given, **filled}
    return {**given, **{name: value for name, value in filled.items() if not _same(value, getattr(probe, name))}}
