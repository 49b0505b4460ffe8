"""`NFTTrainer`: TRL's `GRPOTrainer` with the policy loss replaced by NFT's.

Generation, reward calls, vLLM, PEFT, DeepSpeed, reference-model KL, entropy handling and batching all stay TRL's.
The subclass hooks three places:

* `_calculate_rewards` – keeps the gathered reward matrix TRL computes anyway;
* `_generate_and_score_completions` – turns it into per-completion correctness and per-group correct rate
  (`correct`, `correct_rate`) for this process's slice of the batch;
* `_compute_loss` – NFT's per-token loss (`trl_nft.loss`), then TRL's KL, masks and aggregation conventions.

It also reads its own options where TRL has none: `eval_temperature` / `eval_top_p` (swapped in around evaluation
generation), `weight_decay_all_parameters` (`get_decay_parameter_names`) and `lr_scheduler_per_generation`
(`create_scheduler`, `trl_nft.lr_schedule`).
With `keep_groups_together`, `_prepare_inputs` shuffles the buffered generation batch by whole groups instead of
TRL's row by row (`trl_nft.whole_group_batches`); everything else in it is TRL's.

Checkpoints are marked complete only once every process has written its files, resume skips incomplete ones and
rotation never deletes the newest complete one (`train`, `_save_checkpoint`, `trl_nft.checkpoints`). They also carry
TRL's generation buffer and micro-step counter, and the dynamic-sampling state
(`_save_checkpoint` / `_load_optimizer_and_scheduler`, `trl_nft.generation_state`), so a run resumed in the middle
of a generation batch trains on the rest of that batch, as the uninterrupted run does.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import textwrap
import warnings

import torch
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from trl import GRPOTrainer

from trl_nft import checkpoints, completion_logs, generation_state, lr_schedule
from trl_nft.config import NFTConfig
from trl_nft.dataset_checks import check_trainer_datasets
from trl_nft.dynamic_sampling.mixin import DynamicSamplingMixin
from trl_nft.grpo_warnings import SEQUENCE_LEVEL_NOTE, without_warnings_false_for_nft
from trl_nft.loss import loss_token_mask, nft_loss_terms, spread_sequence_loss
from trl_nft.labels import correctness_from_rewards
from trl_nft.precision import low_precision_warning
from trl_nft.whole_group_batches import WholeGroupBatchesMixin

logger = logging.getLogger(__name__)

NFT_CITATION = textwrap.dedent("""\
    @article{chen2025bridging,
        title        = {{Bridging Supervised Learning and Reinforcement Learning in Math Reasoning}},
        author       = {Huayu Chen and Kaiwen Zheng and Qinsheng Zhang and Ganqu Cui and Yin Cui and Haotian Ye and
                        Tsung-Yi Lin and Ming-Yu Liu and Jun Zhu and Haoxiang Wang},
        year         = 2025,
        journal      = {arXiv preprint arXiv:2505.18116},
    }""")

# TRL private methods this trainer overrides or calls, with the parameter names it relies on (trl 1.16).
HOOKED_TRL_METHODS = {
    "_calculate_rewards": ("self", "inputs", "prompts", "completions", "completion_ids_list"),
    "_generate_and_score_completions": ("self", "inputs"),
    "_compute_loss": ("self", "model", "inputs"),
    "_get_per_token_logps_and_entropies": (
        "self", "model", "input_ids", "attention_mask", "logits_to_keep", "batch_size", "compute_entropy",
        "compute_aux_loss", "pixel_values", "image_grid_thw", "num_images", "pixel_attention_mask", "spatial_shapes",
        "num_tiles", "image_sizes", "token_type_ids", "mm_token_type_ids", "image_position_ids",
    ),
    "get_high_entropy_mask": ("self", "entropies", "mask", "threshold"),
    "get_off_policy_mask": ("advantages", "per_token_logps", "sampling_per_token_logps", "mask", "off_policy_threshold"),
    "_prepare_inputs": ("self", "generation_batch"),  # owned when keep_groups_together (`trl_nft.whole_group_batches`)
    # checkpointing TRL's generation buffer (`trl_nft.generation_state`)
    "_save_checkpoint": ("self", "model", "trial"),
    "_load_optimizer_and_scheduler": ("self", "checkpoint"),
    "_get_output_dir": ("self", "trial"),
    # complete-checkpoint resume (`trl_nft.checkpoints`)
    "train": ("self", "resume_from_checkpoint", "trial", "ignore_keys_for_eval"),
}


def trl_signature_mismatches() -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """Hooked TRL methods whose parameters differ from those this trainer was written for: {name: (want, got)}."""
    mismatches = {}
    for name, expected in HOOKED_TRL_METHODS.items():
        method = getattr(GRPOTrainer, name, None)
        actual = ("<missing>",) if method is None else tuple(inspect.signature(method).parameters)
        if actual != expected:
            mismatches[name] = (expected, actual)
    return mismatches


class NFTTrainer(DynamicSamplingMixin, WholeGroupBatchesMixin, GRPOTrainer):
    """Negative-aware Fine-Tuning (arXiv 2505.18116) with `GRPOTrainer`'s constructor and usage.

    Pass an `NFTConfig` as `args`. Reward functions are used as verifiers: see `NFTConfig.reward_threshold` for how
    rewards become correctness labels. Completions whose rewards are all `None` are left out of the group correct
    rate and get zero loss. Rewards that decode token ids themselves (those with a `with_tokenizer` method, such as
    `trl_nft.rewards.dapo_math_reward`) are given this trainer's processing class.
    """

    _tag_names = ["trl", "nft"]
    _name = "NFT"
    _paper = {  # drives the model card (replaces GRPO's DeepSeekMath entry); BibTeX from the NVlabs/NFT README
        "title": "Bridging Supervised Learning and Reinforcement Learning in Math Reasoning",
        "id": "2505.18116",
        "citation": NFT_CITATION,
    }

    def __init__(self, model, reward_funcs=None, args: NFTConfig | None = None, *more_args, **kwargs):
        if args is None:
            name = model if isinstance(model, str) else getattr(model.config, "_name_or_path", "model")
            args = NFTConfig(output_dir=f"{str(name).rstrip('/').split('/')[-1]}-NFT")
        if not isinstance(args, NFTConfig):
            raise TypeError(
                f"args must be an NFTConfig (it adds the NFT options to GRPOConfig), got {type(args).__name__}; "
                "convert it with NFTConfig.from_grpo_config(your_grpo_config, **nft_options), or build an NFTConfig "
                "with the same keyword arguments."
            )
        with without_warnings_false_for_nft():
            super().__init__(model, reward_funcs, args, *more_args, **kwargs)
        # Verifiers that decode completion_ids themselves (`DapoMathReward`) get this trainer's tokenizer.
        self.reward_funcs = [
            reward.with_tokenizer(self.processing_class) if hasattr(reward, "with_tokenizer") else reward
            for reward in self.reward_funcs
        ]
        if args.importance_sampling_level == "sequence":
            logger.info(SEQUENCE_LEVEL_NOTE)
        check_trainer_datasets(self)  # missing columns / chat template: a clear error now, not a KeyError later
        if args.dynamic_sampling and not hasattr(self.train_dataset, "__getitem__"):
            raise ValueError(
                "dynamic_sampling=True draws refill prompts by index, so train_dataset must be a map-style Dataset, "
                f"not {type(self.train_dataset).__name__}"
            )
        precision_message = low_precision_warning(
            self.model, args.learning_rate, uses_master_weights=self.is_deepspeed_enabled
        )
        if precision_message:
            warnings.warn(precision_message, UserWarning, stacklevel=2)
        mismatches = trl_signature_mismatches()
        if mismatches:
            warnings.warn(
                f"NFTTrainer was written for trl 1.16; these hooked methods changed: {sorted(mismatches)}",
                RuntimeWarning,
                stacklevel=2,
            )
        self._check_whole_group_layout()
        self._gathered_rewards_per_func = None

    # ----------------------------------------------------------------------------------------------- labels
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._gathered_rewards_per_func = rewards_per_func  # all processes' completions, in group order
        return rewards_per_func

    def _generate_and_score_completions(self, inputs):
        if self.args.dynamic_sampling and self.model.training:
            return self._generate_informative_batch(inputs)
        with self._evaluation_decoding():
            return self._generate_and_label(inputs)[0]

    @contextlib.contextmanager
    def _evaluation_decoding(self):
        """In evaluation, sample with `eval_temperature` / `eval_top_p` where TRL reads its decoding settings at each
        generation: the vLLM wrapper (colocate and server), or the transformers generation config and the kwargs
        that override the model's own generation config. Restored afterwards."""
        settings = {"temperature": self.args.eval_temperature, "top_p": self.args.eval_top_p}
        settings = {name: value for name, value in settings.items() if value is not None}
        if self.model.training or not settings:
            yield
            return
        holder = self.vllm_generation if self.use_vllm else self.generation_config
        kwargs = {} if self.use_vllm else self.generation_kwargs
        saved = {name: getattr(holder, name) for name in settings}
        saved_kwargs = {name: kwargs[name] for name in settings if name in kwargs}
        try:
            for name, value in settings.items():
                setattr(holder, name, value)
            if kwargs:
                kwargs.update(settings)
            yield
        finally:
            for name, value in saved.items():
                setattr(holder, name, value)
            if kwargs:
                kwargs.update(saved_kwargs)

    def _generate_and_label(self, inputs):
        """TRL's generation and scoring, plus `correct` / `correct_rate` for this process's rows."""
        output = super()._generate_and_score_completions(inputs)
        mode = "train" if self.model.training else "eval"
        group_size = self.num_generations if mode == "train" else self.num_generations_eval
        labels = correctness_from_rewards(
            self._gathered_rewards_per_func,
            self.reward_weights,
            group_size,
            reward_func_names=self.reward_func_names,
            reward_threshold=self.args.reward_threshold,
        )
        completion_logs.record_labels(self._logs, labels, self._gathered_rewards_per_func, group_size)
        self._gathered_rewards_per_func = None
        local = slice(self.accelerator.process_index * len(inputs), (self.accelerator.process_index + 1) * len(inputs))
        output["correct"] = labels.correct[local]
        output["correct_rate"] = labels.loss_correct_rate[local]

        metrics = self._metrics[mode]
        metrics["nft/correct_rate_mean"].append(labels.group_correct_rate.nanmean().nan_to_num(0.0).item())
        metrics["nft/degenerate_group_frac"].append(labels.degenerate_groups.float().mean().item())
        return output, labels

    # ------------------------------------------------------------------------------------- optimizer, schedule
    def get_decay_parameter_names(self, model) -> list[str]:
        if self.args.weight_decay_all_parameters:  # as verl's AdamW over model.parameters()
            return [name for name, _ in model.named_parameters()]
        return super().get_decay_parameter_names(model)

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if not self.args.lr_scheduler_per_generation or self.lr_scheduler is not None:
            return super().create_scheduler(num_training_steps, optimizer)
        per_generation = self.args.optimizer_steps_per_generation
        super().create_scheduler(lr_schedule.generation_batches(num_training_steps, per_generation), optimizer)
        self.lr_scheduler = lr_schedule.paced_by_generation(self.lr_scheduler, per_generation)
        return self.lr_scheduler

    # ------------------------------------------------------------------------------------------ checkpoints
    def train(self, resume_from_checkpoint=None, trial=None, ignore_keys_for_eval=None):
        """`Trainer.train`; `resume_from_checkpoint=True` takes the newest *complete* checkpoint (folders whose save
        was interrupted are skipped with a warning), and `"auto"` does the same or starts fresh when there is none."""
        resume_from_checkpoint = checkpoints.resolve_resume(resume_from_checkpoint, self.args.output_dir)
        return super().train(resume_from_checkpoint, trial=trial, ignore_keys_for_eval=ignore_keys_for_eval)

    def _save_checkpoint(self, model, trial):
        run_dir = self._get_output_dir(trial=trial)
        folder = os.path.join(run_dir, f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
        step, world_size = self.state.global_step, self.accelerator.num_processes
        try:
            if self.args.should_save:  # first: until marked complete, resume and rotation ignore the folder
                checkpoints.mark_saving(folder, step, world_size)
            # Written before TRL's files, so every checkpoint folder with a trainer state also has this state.
            if not self.args.save_only_model:  # a model-only checkpoint cannot be resumed anyway
                mid_batch = self._step % (self.args.steps_per_generation * self.num_iterations) != 0
                generation_state.save_generation_state(
                    folder,
                    rank=self.accelerator.process_index,
                    world_size=world_size,
                    step=self._step,
                    buffered_inputs=self._buffered_inputs if mid_batch else None,  # at a boundary it is regenerated
                    dynamic_sampling_state=self._dynamic_sampling_state,
                )
            with self._rotation_deferred():  # transformers' rotation would count this still incomplete folder
                super()._save_checkpoint(model, trial)
            self.accelerator.wait_for_everyone()  # every rank's shards, optimizer states and RNG files are written
            if self.args.should_save:
                checkpoints.mark_complete(folder, step, world_size)
                checkpoints.rotate(run_dir, self.args.save_total_limit, keep=(self.state.best_model_checkpoint,))
        except (OSError, RuntimeError) as error:
            if not checkpoints.is_disk_full(error, folder):
                raise
            raise checkpoints.disk_full_error(error, folder, run_dir) from error

    @contextlib.contextmanager
    def _rotation_deferred(self):
        """transformers rotates checkpoints at the end of its `_save_checkpoint`, before this checkpoint is marked
        complete (and sorting incomplete folders with the rest); rotation runs after the marker instead."""
        limit = self.args.save_total_limit
        self.args.save_total_limit = None
        try:
            yield
        finally:
            self.args.save_total_limit = limit

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)  # TRL restores its entropy controller here too
        if checkpoint is None:
            return
        saved = generation_state.load_generation_state(
            checkpoint, self.accelerator.process_index, self.accelerator.num_processes, self.accelerator.device
        )
        if saved is None:
            logger.warning(
                "%s has no NFT generation state (written by another trainer or an older trl_nft): a checkpoint taken "
                "inside a generation batch resumes with a newly generated batch, not the rest of the buffered one.",
                checkpoint,
            )
            return
        self._step = saved["step"]
        self._buffered_inputs = saved["buffered_inputs"]
        self._dynamic_sampling_state = saved["dynamic_sampling_state"]

    # ------------------------------------------------------------------------------------------------- loss
    def _compute_loss(self, model, inputs):
        args = self.args
        mode = "train" if self.model.training else "eval"
        prompt_ids, prompt_mask = inputs["prompt_ids"], inputs["prompt_mask"]
        completion_ids, completion_mask = inputs["completion_ids"], inputs["completion_mask"]
        mask = loss_token_mask(inputs)

        per_token_logps, entropies, aux_loss = self._get_per_token_logps_and_entropies(
            model,
            torch.cat([prompt_ids, completion_ids], dim=1),
            torch.cat([prompt_mask, completion_mask], dim=1),
            completion_ids.size(1),
            compute_entropy=True,
            compute_aux_loss=self.aux_loss_enabled,
            **{key: inputs.get(key) for key in _MULTIMODAL_KEYS},
        )
        # On-policy without vLLM, TRL skips computing π_old: it equals the current policy before this update.
        old_per_token_logps = inputs.get("old_per_token_logps")
        if old_per_token_logps is None:
            old_per_token_logps = per_token_logps.detach()

        nft_kwargs = dict(
            neg_weight=args.neg_weight,
            prompt_weighting=args.prompt_weighting,
            level=self.importance_sampling_level,
            negative_clip=args.negative_clip,
            positive_clip=args.positive_clip,
            correct_rate_clip=args.correct_rate_clip,
            max_log_ratio=args.max_log_ratio,
        )
        correct, correct_rate = inputs["correct"], inputs["correct_rate"]
        loss_terms = nft_loss_terms(per_token_logps, old_per_token_logps, mask, correct, correct_rate, **nft_kwargs)
        per_token_loss = loss_terms.loss
        if self.importance_sampling_level == "sequence":
            per_token_loss = spread_sequence_loss(per_token_loss, mask)  # each sequence's loss counted once

        # As in TRL, the high-entropy and off-policy masks select tokens of the policy term only; the KL term below
        # covers every completion token. The entropy bonus acts on the same tokens as the policy term's entropy mask.
        entropy_mask = mask
        if self.top_entropy_quantile < 1.0:
            entropy_mask = mask * self.get_high_entropy_mask(entropies, mask, 1 - self.top_entropy_quantile)
            per_token_loss = per_token_loss * entropy_mask
        if self.off_policy_mask_threshold is not None:
            # TRL keeps sequences with a non-negative advantage; NFT's on-policy advantage is r − r̂.
            per_token_loss = per_token_loss * self.get_off_policy_mask(
                advantages=(correct - correct_rate).unsqueeze(1),
                per_token_logps=per_token_logps,
                sampling_per_token_logps=inputs.get("sampling_per_token_logps", old_per_token_logps),
                mask=mask,
                off_policy_threshold=self.off_policy_mask_threshold,
            )
        if self.use_vllm and self.vllm_importance_sampling_correction:
            per_token_loss = per_token_loss * inputs["importance_sampling_ratio"]

        per_token_kl = None
        if self.beta != 0.0:
            ref_logps = inputs["ref_per_token_logps"]
            per_token_kl = torch.exp(ref_logps - per_token_logps) - (ref_logps - per_token_logps) - 1
            if args.use_bias_correction_kl:
                per_token_kl = per_token_kl * torch.exp(per_token_logps - old_per_token_logps)
            per_token_loss = per_token_loss + self.beta * per_token_kl

        loss = self._aggregate(per_token_loss * mask, mask, inputs["num_items_in_batch"], mode)

        if self._entropy_bonus_enabled:
            self._log_policy_loss(loss, mode)
            loss = loss - self._entropy_bonus(entropies, entropy_mask, mode)
        if self.aux_loss_enabled:
            loss = loss + self.router_aux_loss_coef * aux_loss / self._accumulation_divisor(mode)
            self._metrics[mode]["aux_loss"].append(self.accelerator.gather_for_metrics(aux_loss).mean().item())

        self._log_metrics(loss_terms, mask, correct, correct_rate, mode, entropies=entropies, per_token_kl=per_token_kl)
        return loss

    def _accumulation_divisor(self, mode: str) -> float:
        """Losses are pre-divided by the accumulation steps in training (TRL turns HF's own scaling off); not in eval."""
        return self.current_gradient_accumulation_steps if mode == "train" else 1.0

    def _aggregate(self, masked_loss: torch.Tensor, mask: torch.Tensor, num_items_in_batch, mode: str) -> torch.Tensor:
        """Reduce a (B, T) masked per-token loss with TRL's `loss_type` normalisers (`mask`: completion tokens)."""
        accumulation = self._accumulation_divisor(mode)
        if self.loss_type == "grpo":
            return (masked_loss.sum(-1) / mask.sum(-1).clamp(min=1.0)).mean() / accumulation
        if self.loss_type == "bnpo":
            return masked_loss.sum() / mask.sum().clamp(min=1.0) / accumulation
        if self.loss_type == "dr_grpo":
            return masked_loss.sum() / (masked_loss.size(0) * self.max_completion_length) / accumulation
        if self.loss_type == "dapo":
            # num_items_in_batch counts the whole generation batch on all processes; bring it to this window.
            normalizer = num_items_in_batch.clamp(min=1.0) / self.accelerator.num_processes
            if mode == "train":
                normalizer = normalizer * self.current_gradient_accumulation_steps / self.args.steps_per_generation
            return masked_loss.sum() / normalizer
        raise ValueError(f"loss_type={self.loss_type!r} is not supported by NFTTrainer")

    def _log_policy_loss(self, loss: torch.Tensor, mode: str) -> None:
        """TRL's `policy_loss` metric, logged as TRL does only with the entropy bonus: this micro-batch's loss before
        the bonus (the NFT term plus β·KL, aggregated by `loss_type`), before the division by the accumulation steps
        (which dapo's normaliser already includes)."""
        value = loss.detach() if self.loss_type == "dapo" else loss.detach() * self._accumulation_divisor(mode)
        self._metrics[mode]["policy_loss"].append(self.accelerator.gather(value).nanmean().item())

    def _entropy_bonus(self, entropies: torch.Tensor, effective_mask: torch.Tensor, mode: str) -> torch.Tensor:
        """TRL's entropy bonus (static or adaptive `entropy_coef`), as the term subtracted from the loss."""
        mean_entropy = (entropies * effective_mask).sum() / effective_mask.sum().clamp(min=1.0)
        mean_entropy = mean_entropy / self._accumulation_divisor(mode)
        coef = self.entropy_coef
        if self.use_adaptive_entropy:
            # The coefficient set at the end of the previous optimizer step applies to the whole window.
            coef = coef if self._last_world_entropy <= self.args.entropy_target else 0.0
            if mode == "train":
                self._update_adaptive_entropy(entropies, effective_mask)
        if mode == "train" and self.accelerator.sync_gradients:
            self._metrics[mode]["entropy_coef"].append(self.entropy_coef)
        return coef * mean_entropy

    def _update_adaptive_entropy(self, entropies: torch.Tensor, effective_mask: torch.Tensor) -> None:
        stats = torch.stack([(entropies * effective_mask).sum(), effective_mask.sum()]).detach()
        window = stats if self._entropy_window_stats is None else self._entropy_window_stats + stats
        self._entropy_window_stats = window
        if not self.accelerator.sync_gradients:
            return
        total = self.accelerator.reduce(window, reduction="sum")
        world_entropy = (total[0] / total[1].clamp(min=1.0)).item()
        step = self.args.entropy_coef_delta
        if world_entropy <= self.args.entropy_target:
            self.entropy_coef = min(self.entropy_coef + step, self.args.entropy_coef_max)
        else:
            self.entropy_coef = max(self.entropy_coef - step, self.args.entropy_coef_min)
        self._last_world_entropy = world_entropy
        self._entropy_window_stats = None

    # ---------------------------------------------------------------------------------------------- metrics
    @torch.no_grad()
    def _log_metrics(self, loss_terms, mask, correct, correct_rate, mode, *, entropies, per_token_kl):
        """NFT's metrics plus TRL's entropy / KL, as global token means: one reduce and one gather per micro-batch.

        Read from the terms the loss computed (`NFTLossTerms`), before any TRL mask or aggregation.
        """
        ratio = loss_terms.ratio
        at_floor = loss_terms.negative_ratio < self.args.negative_clip
        informative = (correct_rate > 0) & (correct_rate < 1)
        negative_tokens = mask * ((1 - correct) * informative)[:, None]

        # name → (values, token weights); (B, 1) sequence-level values broadcast over their tokens
        means = {
            "nft/positive_loss": (loss_terms.positive, mask),
            "nft/negative_loss": (loss_terms.negative, mask),
            "nft/ratio_mean": (ratio, mask),
            "nft/negative_floor_frac": (at_floor.to(ratio.dtype), negative_tokens),
            "entropy": (entropies, mask),
        }
        if per_token_kl is not None:
            means["kl"] = (per_token_kl, mask)
        local = torch.stack([
            torch.stack([(values.float() * weights).sum(), weights.sum().float()]) for values, weights in means.values()
        ])
        totals = self.accelerator.reduce(local, reduction="sum").tolist()
        metrics = self._metrics[mode]
        for name, (total, count) in zip(means, totals):
            metrics[name].append(total / max(count, 1.0))

        local_max = (ratio * torch.ones_like(mask, dtype=ratio.dtype)).masked_fill(mask == 0, 0.0).max()
        metrics["nft/ratio_max"].append(self.accelerator.gather(local_max.reshape(1)).max().item())


_MULTIMODAL_KEYS = (
    "pixel_values",
    "image_grid_thw",
    "num_images",
    "pixel_attention_mask",
    "spatial_shapes",
    "num_tiles",
    "image_sizes",
    "token_type_ids",
    "mm_token_type_ids",
    "image_position_ids",
)
