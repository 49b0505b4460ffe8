"""Dynamic sampling inside `NFTTrainer`: generation rounds, carried-over groups, and their metrics.

`DynamicSamplingMixin` comes before `GRPOTrainer` in `NFTTrainer`'s bases. One generation batch is built as follows:

1. carried-over groups (`dynamic_sampling_carry_over`) that are not too old fill the batch first, oldest first;
2. rounds of fresh prompts, drawn like a dataloader (`prompt_stream`) and sized by `round_sizing`,
   are generated and scored; informative groups (0 < r̂ < 1) are kept in data order until the batch is full or
   `max_generation_rounds` is reached (then degenerate groups, which have zero loss, complete it);
3. surplus informative groups are carried over to a following batch, or dropped (the paper).

TRL's completions table (`log_completions`) shows only the groups a batch trains on (and carried ones when they are
generated); discarded groups of every round are left out (`trl_nft.completion_logs.LogRound`).

Every decision is taken on the rows of all processes (gathered), so every rank makes the same one; everything a
resumed run needs (stream cursor, estimate, carried groups with their π_old, counters) lives in the one picklable
dict `self._dynamic_sampling_state` (CPU tensors).

π_old of a carried group must be the policy that generated it. TRL computes `old_per_token_logps` only when it
trains off-policy (or for vLLM's correction); otherwise the loss takes the current policy as π_old, which is wrong
for a group trained after later updates. So the surplus rows' log-probabilities are computed at generation time,
and when a batch mixes carried and fresh rows, the fresh rows get theirs too (one extra forward pass over the batch).
"""

from __future__ import annotations

import logging
import math

import torch

from trl_nft import completion_logs
from trl_nft.dynamic_sampling import prompt_stream, round_sizing, rows as row_ops
from trl_nft.loss import loss_token_mask

logger = logging.getLogger("trl_nft.trainer")

OLD_LOGPS = "old_per_token_logps"


def new_dynamic_sampling_state() -> dict:
    return {
        "generation_batch": 0,  # generation batches built so far
        "stream": prompt_stream.new_stream_state(),
        "estimate": round_sizing.new_estimate(),
        "carry": [],  # oldest first: {"rows": {key: CPU tensor}, "born_step": optimizer step of its generation}
        "totals": {"generated_groups": 0, "trained_groups": 0, "carried_groups": 0, "expired_groups": 0},
    }


def row_count(rows: dict) -> int:
    return rows["completion_ids"].size(0)


class DynamicSamplingMixin:
    """Dynamic sampling for a `GRPOTrainer` subclass that provides `_generate_and_label(inputs)`."""

    _dynamic_sampling_state: dict | None = None
    _prompt_stream_cache: prompt_stream.PromptStream | None = None

    # --------------------------------------------------------------------------------------------- the batch
    def _generate_informative_batch(self, inputs):
        """One generation batch of informative groups (see the module doc); `inputs` only gives the batch size."""
        args, accelerator, group_size = self.args, self.accelerator, self.num_generations
        pad_id = self._tokenizer.pad_token_id
        state = self._current_dynamic_sampling_state()
        target_groups = len(inputs) * accelerator.num_processes // group_size
        step = self.state.global_step
        round_sizing.start_batch(state["estimate"])

        parts, kept_groups = [], 0
        carried, expired = self._take_carried_groups(state, target_groups, step)
        if carried:
            parts.append(carried)
            kept_groups = row_count(carried) // group_size

        stream, sizing = self._prompt_stream(), self._round_sizing(target_groups)
        used, surplus, fillers = set(), [], []
        rounds = prompts_generated = filler_groups = 0
        while kept_groups < target_groups and rounds < args.max_generation_rounds:
            fraction = round_sizing.informative_fraction(state["estimate"])
            prompt_count = sizing.prompts(rounds, target_groups - kept_groups, fraction)
            indices = stream.draw(state["stream"], prompt_count, used)
            with completion_logs.LogRound(self) as round_log:  # the completions table shows trained groups only
                output, labels = self._generate_and_label(self._round_inputs(indices))
                degenerate = labels.degenerate_groups
                informative = (~degenerate).nonzero().flatten().tolist()
                take = informative[: target_groups - kept_groups]
                shown = informative if args.dynamic_sampling_carry_over else take
                round_log.keep(row_ops.group_rows(shown, group_size))
            row_ops.check_supported(output)
            rows = row_ops.gather_rows(accelerator, output, pad_id)
            rounds += 1
            prompts_generated += prompt_count
            round_sizing.record_round(state["estimate"], prompt_count, len(informative))
            self._metrics["train"]["dynamic_sampling/informative_frac"].append(len(informative) / prompt_count)

            parts.append(row_ops.take_rows(rows, row_ops.group_rows(take, group_size)))
            kept_groups += len(take)
            if len(informative) > len(take):
                surplus.append(row_ops.take_rows(rows, row_ops.group_rows(informative[len(take):],
                                                                                          group_size)))
            # Degenerate groups are kept only as zero-loss filler in case the round cap is hit.
            spare = degenerate.nonzero().flatten().tolist()[: max(0, target_groups - kept_groups - filler_groups)]
            fillers.append(row_ops.take_rows(rows, row_ops.group_rows(spare, group_size)))
            filler_groups += len(spare)

        if kept_groups < target_groups:
            logger.warning(
                "dynamic sampling: only %d of %d groups were informative after %d generation rounds (%d prompts); "
                "filling the batch with %d degenerate (zero-loss) groups.",
                kept_groups, target_groups, rounds, prompts_generated, target_groups - kept_groups,
            )
            parts += fillers
        surplus_groups = sum(row_count(rows) for rows in surplus) // group_size
        if args.dynamic_sampling_carry_over and surplus_groups:
            dropped = self._carry_over(state, surplus, step, target_groups)
        else:
            dropped = surplus_groups

        batch = self._assemble(parts, target_groups * group_size, pad_id)
        self._record_batch_metrics(state, target_groups, rounds, prompts_generated, kept_groups,
                                   row_count(carried) // group_size if carried else 0, expired, dropped)
        return batch

    def _assemble(self, parts: list[dict], global_rows: int, pad_id: int) -> dict:
        """Concatenate the kept parts, cut this process's slice, and complete π_old where parts lack it."""
        accelerator = self.accelerator
        missing_old = [OLD_LOGPS not in part for part in parts]
        fill_old = any(missing_old) and not all(missing_old)
        if fill_old:  # NaN marks rows whose π_old is the current policy, filled in below
            parts = [
                {**part, OLD_LOGPS: torch.full_like(part["completion_ids"], float("nan"), dtype=torch.float32)}
                if missing else part
                for part, missing in zip(parts, missing_old)
            ]
        batch = row_ops.concat_batches(parts, pad_id)
        local = row_ops.local_slice(global_rows, accelerator.process_index, accelerator.num_processes)
        batch = row_ops.take_rows(batch, local)
        if fill_old:
            old = batch[OLD_LOGPS]
            batch[OLD_LOGPS] = torch.where(old.isnan(), self._policy_logps(batch).to(old.dtype), old)
        batch["num_items_in_batch"] = accelerator.gather(loss_token_mask(batch).sum()).sum()
        return batch

    def _round_inputs(self, indices: list[int]) -> list[dict]:
        """This process's rows for a round: the drawn prompts, each repeated `num_generations` times."""
        global_rows = [index for index in indices for _ in range(self.num_generations)]
        local = row_ops.local_slice(len(global_rows), self.accelerator.process_index,
                                             self.accelerator.num_processes)
        return [self.train_dataset[index] for index in global_rows[local]]

    # ----------------------------------------------------------------------------------- carried-over groups
    def _max_carry_age(self) -> int:
        if self.args.dynamic_sampling_max_carry_age is not None:
            return self.args.dynamic_sampling_max_carry_age
        per_generation = self.args.steps_per_generation * self.num_iterations / self.args.gradient_accumulation_steps
        return max(1, math.ceil(per_generation))

    def _take_carried_groups(self, state: dict, target_groups: int, step: int) -> tuple[dict | None, int]:
        """Drop carried groups past the maximum age; take up to `target_groups` of the rest, oldest first."""
        group_size, device = self.num_generations, self.accelerator.device
        max_age, expired, taken, remaining, count = self._max_carry_age(), 0, [], [], 0
        for entry in state["carry"]:
            groups = row_count(entry["rows"]) // group_size
            if step - entry["born_step"] > max_age:
                expired += groups
                continue
            take = min(groups, target_groups - count)
            if take:
                taken.append({key: t[: take * group_size].to(device) for key, t in entry["rows"].items()})
                count += take
            if take < groups:
                remaining.append({"rows": {key: t[take * group_size:] for key, t in entry["rows"].items()},
                                  "born_step": entry["born_step"]})
        state["carry"] = remaining
        state["totals"]["expired_groups"] += expired
        if not taken:
            return None, expired
        return row_ops.concat_batches(taken, self._tokenizer.pad_token_id), expired

    def _carry_over(self, state: dict, surplus: list[dict], step: int, target_groups: int) -> int:
        """Store surplus groups with their generating policy's log-probs; keep at most one batch. Returns drops."""
        group_size = self.num_generations
        rows = row_ops.concat_batches(surplus, self._tokenizer.pad_token_id)
        if OLD_LOGPS not in rows:
            rows[OLD_LOGPS] = self._policy_logps_shared(rows)
        state["carry"].append({"rows": {key: t.detach().cpu() for key, t in rows.items()}, "born_step": step})
        # A buffer larger than one batch would only age: keep the newest `target_groups` groups.
        dropped, excess = 0, sum(row_count(e["rows"]) for e in state["carry"]) // group_size - target_groups
        while excess > 0:
            oldest = state["carry"][0]
            groups = row_count(oldest["rows"]) // group_size
            cut = min(groups, excess)
            if cut == groups:
                state["carry"].pop(0)
            else:
                oldest["rows"] = {key: t[cut * group_size:] for key, t in oldest["rows"].items()}
            dropped, excess = dropped + cut, excess - cut
        return dropped

    # ------------------------------------------------------------------------------------------ log-probs
    @torch.no_grad()
    def _policy_logps(self, rows: dict) -> torch.Tensor:
        """Per-token log-probs of the completions under the current policy (the generating one at this point)."""
        ids = torch.cat([rows["prompt_ids"], rows["completion_ids"]], dim=1)
        mask = torch.cat([rows["prompt_mask"], rows["completion_mask"]], dim=1)
        logps, _, _ = self._get_per_token_logps_and_entropies(
            self.model, ids, mask, rows["completion_ids"].size(1), batch_size=self.args.per_device_train_batch_size
        )
        return logps

    def _policy_logps_shared(self, rows: dict) -> torch.Tensor:
        """`_policy_logps` of rows every process holds, each process computing an equal share (ZeRO-3 needs every
        rank to run the same number of forward passes) and all of them gathering the result."""
        accelerator, total = self.accelerator, row_count(rows)
        share = math.ceil(total / accelerator.num_processes)
        start = accelerator.process_index * share
        index = torch.arange(start, start + share, device=rows["completion_ids"].device).clamp(max=total - 1)
        local = self._policy_logps({key: rows[key][index] for key in ("prompt_ids", "prompt_mask", "completion_ids",
                                                                      "completion_mask")})
        return accelerator.gather(local.contiguous())[:total]

    # -------------------------------------------------------------------------------------------- plumbing
    def _current_dynamic_sampling_state(self) -> dict:
        if self._dynamic_sampling_state is None:
            if self.state.global_step > 0:
                logger.warning(
                    "dynamic sampling: resumed at step %d without saved dynamic-sampling state; the prompt stream "
                    "restarts at the beginning of epoch 0 and carried-over groups are lost.", self.state.global_step,
                )
            self._dynamic_sampling_state = new_dynamic_sampling_state()
        return self._dynamic_sampling_state

    def _prompt_stream(self) -> prompt_stream.PromptStream:
        key = (len(self.train_dataset), self.args.seed, self.shuffle_dataset)
        cached = self._prompt_stream_cache
        if cached is None or (cached.dataset_size, cached.seed, cached.shuffle) != key:
            self._prompt_stream_cache = prompt_stream.PromptStream(*key)
        return self._prompt_stream_cache

    def _round_sizing(self, target_groups: int) -> round_sizing.RoundSizing:
        args, processes = self.args, self.accelerator.num_processes
        return round_sizing.RoundSizing(
            batch_groups=target_groups,
            first_round_oversample=args.dynamic_sampling_first_round_oversample,
            oversample=args.dynamic_sampling_oversample,
            adaptive=args.dynamic_sampling_adaptive,
            margin=args.dynamic_sampling_adaptive_margin,
            granularity=processes // math.gcd(self.num_generations, processes),
        )

    def _record_batch_metrics(self, state, target_groups, rounds, prompts_generated, kept_groups, carried_groups,
                              expired, dropped):
        totals = state["totals"]
        state["generation_batch"] += 1
        totals["generated_groups"] += prompts_generated
        totals["trained_groups"] += target_groups
        totals["carried_groups"] += carried_groups
        metrics = self._metrics["train"]
        metrics["dynamic_sampling/rounds"].append(rounds)
        metrics["dynamic_sampling/prompts_consumed"].append(prompts_generated)
        metrics["dynamic_sampling/filled_frac"].append(kept_groups / target_groups)
        metrics["dynamic_sampling/generated_per_trained"].append(prompts_generated / target_groups)
        metrics["dynamic_sampling/generated_per_trained_total"].append(
            totals["generated_groups"] / totals["trained_groups"]
        )
        metrics["dynamic_sampling/carried_frac"].append(carried_groups / target_groups)
        metrics["dynamic_sampling/carry_expired"].append(expired)
        metrics["dynamic_sampling/surplus_dropped"].append(dropped)
        metrics["dynamic_sampling/carry_buffer"].append(
            sum(row_count(entry["rows"]) for entry in state["carry"]) // self.num_generations
        )
        fraction = round_sizing.informative_fraction(state["estimate"])
        if fraction is not None:
            metrics["dynamic_sampling/informative_estimate"].append(fraction)
        metrics["dynamic_sampling/data_epoch"].append(self._prompt_stream().progress(state["stream"]))
