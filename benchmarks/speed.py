"""Speed and memory: NFTTrainer vs GRPOTrainer on an identical configuration, plus a loss-only micro-benchmark.

Trainer comparison — both trainers get the same random-init model, prompts, generations, `loss_type="dr_grpo"`
(GRPO also `scale_rewards="none"`, i.e. Dr. GRPO, the configuration NFT reduces to on-policy). Each run is a fresh
subprocess, alternated NFT GRPO NFT GRPO …; per run the median wall time of an optimizer step after warm-up and the
peak memory (CPU: the child's `ru_maxrss`; CUDA: `torch.cuda.max_memory_allocated`). Ratios NFT/GRPO are taken per
pair and summarised as median and min–max.

Loss micro-benchmark — `nft_per_token_loss` vs a transcription of TRL's clipped surrogate on (rows × tokens) float32
inputs, forward + backward: median time, and the memory the autograd graph keeps between forward and backward
(saved-tensor bytes via `saved_tensors_hooks`; on CUDA also the allocator's peak).

    OMP_NUM_THREADS=1 python benchmarks/speed.py                          # CPU, tiny model → results/speed.md
    python benchmarks/speed.py --device cuda --model-size 0.5b --results-name gpu_speed   # see gpu_speed.sh
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
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
}
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
        max_position_embeddings=4096,
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
    """Wall time between consecutive optimizer-step ends (generation, loss, backward and optimizer included)."""

    def __init__(self, cuda: bool):
        from transformers import TrainerCallback

        timer = self

        class _Callback(TrainerCallback):
            def on_train_begin(self, args, state, control, **kwargs):
                timer._tick(state)

            def on_step_end(self, args, state, control, **kwargs):
                timer._tick(state)

        self.callback = _Callback()
        self.cuda = cuda
        self.times: list[float] = []
        self.cpu_times: list[float] = []  # this process's CPU time: robust to other jobs sharing the machine's cores
        self.tokens: list[int] = []
        self._last = None

    def _tick(self, state) -> None:
        if self.cuda:
            torch.cuda.synchronize()
        now, cpu_now = time.perf_counter(), time.process_time()
        if self._last is not None:
            self.times.append(now - self._last[0])
            self.cpu_times.append(cpu_now - self._last[1])
            self.tokens.append(state.num_input_tokens_seen - self._last[2])
        self._last = (now, cpu_now, state.num_input_tokens_seen)


def run_trainer(options: dict) -> dict:
    """Train `warmup + steps` optimizer steps with one trainer; return its step times, tokens and peak memory."""
    import warnings

    from datasets import Dataset
    from transformers import PrinterCallback
    from transformers.utils import logging as hf_logging
    from trl import GRPOConfig, GRPOTrainer

    from trl_nft import NFTConfig, NFTTrainer
    from trl_nft.arithmetic import build_tokenizer

    warnings.filterwarnings("ignore")
    hf_logging.set_verbosity_error()
    cuda = options["device"] == "cuda"
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    tokenizer = build_tokenizer()
    model = build_model(options["model_size"], tokenizer, torch.bfloat16 if cuda else torch.float32)
    prompts = [f"{a}+{b}=" for a in range(10, 99, 3) for b in range(11, 99, 7)]
    dataset = Dataset.from_dict({"prompt": prompts})

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
        max_steps=options["warmup"] + options["steps"],
        loss_type="dr_grpo",
        gradient_checkpointing=options["gradient_checkpointing"],
    )
    if options["trainer"] == "nft":
        trainer_cls, args = NFTTrainer, NFTConfig(**common)
    else:
        trainer_cls, args = GRPOTrainer, GRPOConfig(**common, scale_rewards="none")
    timer = StepTimer(cuda)
    trainer = trainer_cls(
        model=model,
        reward_funcs=parity_reward,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[timer.callback],
    )
    trainer.remove_callback(PrinterCallback)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer.train()

    measured = slice(options["warmup"], None)
    trl_step_times = [log["step_time"] for log in trainer.state.log_history if "step_time" in log][measured]
    step_times, tokens = timer.times[measured], timer.tokens[measured]
    return {
        "trainer": options["trainer"],
        "step_time_median": statistics.median(step_times),
        "step_time_mean": statistics.fmean(step_times),
        "step_cpu_time_median": statistics.median(timer.cpu_times[measured]),
        "trl_step_time_median": statistics.median(trl_step_times),
        "tokens_per_second": sum(tokens) / sum(step_times),
        "steps_measured": len(step_times),
        "peak_memory_bytes": torch.cuda.max_memory_allocated() if cuda else maxrss_bytes(),
        "memory_kind": "cuda max_memory_allocated" if cuda else "process max RSS",
        "device_name": torch.cuda.get_device_name() if cuda else "cpu",
    }


def maxrss_bytes() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024  # Linux reports KiB, macOS bytes


def run_in_subprocess(options: dict) -> dict:
    """Each run gets a fresh interpreter, so peak memory and caches of one run cannot leak into the next."""
    with tempfile.TemporaryDirectory() as folder:
        result_file = Path(folder) / "result.json"
        command = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(options), str(result_file)]
        completed = subprocess.run(command, capture_output=True, text=True)
        if completed.returncode != 0:
            raise RuntimeError(f"{options['trainer']} run failed:\n{completed.stderr[-4000:]}")
        return json.loads(result_file.read_text())


def compare_trainers(options: dict, pairs: int, log=print) -> dict:
    """Alternate NFT and GRPO runs `pairs` times; ratios NFT/GRPO per pair."""
    runs = {name: [] for name in TRAINERS}
    for pair in range(pairs):
        for name in TRAINERS:
            result = run_in_subprocess({**options, "trainer": name})
            runs[name].append(result)
            log(
                f"pair {pair + 1}/{pairs} {name}: step {result['step_time_median'] * 1e3:.1f} ms, "
                f"{result['tokens_per_second']:.0f} tok/s, peak {result['peak_memory_bytes'] / 2**20:.0f} MiB"
            )
    ratios = {}
    for key in ("step_time_median", "step_time_mean", "step_cpu_time_median", "trl_step_time_median",
                "peak_memory_bytes"):
        per_pair = [nft[key] / grpo[key] for nft, grpo in zip(runs["nft"], runs["grpo"])]
        ratios[key] = {"median": statistics.median(per_pair), "min": min(per_pair), "max": max(per_pair),
                       "per_pair": per_pair}
    return {"options": options, "runs": runs, "ratios": ratios}


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
        options, ratios = trainers["options"], trainers["ratios"]
        lines += [
            "## Trainer step time and peak memory",
            "",
            f"Model `{options['model_size']}` ({MODEL_SIZES[options['model_size']]['num_hidden_layers']} layers, "
            f"hidden {MODEL_SIZES[options['model_size']]['hidden_size']}), batch {options['batch_size']} completions "
            f"({options['num_generations']} per prompt), {options['max_completion_length']} completion tokens max, "
            f"steps_per_generation {options['steps_per_generation']}, loss_type `dr_grpo` for both, GRPO with "
            f"`scale_rewards=\"none\"`. {len(trainers['runs']['nft'])} pairs of fresh processes alternated "
            f"NFT/GRPO; {options['warmup']} warm-up steps then {options['steps']} measured steps per run. Step time = "
            "wall time between optimizer-step ends (generation + loss + backward + optimizer); with "
            "steps_per_generation > 1 most steps reuse buffered generations, so the *median* isolates the "
            "optimization step (where the two trainers differ) and the *mean* includes the amortised generation. "
            "TRL's `step_time` (training_step only) is shown too, and the process CPU time per step, which other jobs "
            "on a shared machine disturb less than wall time (on a GPU it misses device time). Peak memory = "
            f"{trainers['runs']['nft'][0]['memory_kind']}.",
            "",
            "| metric | NFT (median of runs) | GRPO (median of runs) | ratio NFT/GRPO: median | min – max | target |",
            "|---|---|---|---|---|---|",
        ]
        rows = [("median step time (ms)", "step_time_median", 1e3, "≤ 1.02"),
                ("mean step time (ms)", "step_time_mean", 1e3, "≤ 1.02"),
                ("median step CPU time (ms)", "step_cpu_time_median", 1e3, "≤ 1.02"),
                ("median TRL step_time (ms)", "trl_step_time_median", 1e3, "≤ 1.02"),
                ("peak memory (MiB)", "peak_memory_bytes", 1 / 2**20, "≤ 1.00")]
        for label, key, scale, target in rows:
            nft = statistics.median(r[key] for r in trainers["runs"]["nft"]) * scale
            grpo = statistics.median(r[key] for r in trainers["runs"]["grpo"]) * scale
            ratio = ratios[key]
            lines.append(f"| {label} | {nft:.2f} | {grpo:.2f} | {ratio['median']:.3f} | "
                         f"{ratio['min']:.3f} – {ratio['max']:.3f} | {target} |")
        spread = ratios["step_time_median"]["max"] - ratios["step_time_median"]["min"]
        if spread > 0.04:
            lines += ["", f"The step-time ratios of single pairs span {spread:.2f}, more than the 2% being tested: "
                      "run-to-run noise of this machine dominates, and only the median over pairs estimates the "
                      "ratio (CPU time tracks wall time, so the noise is in the machine's speed, not scheduling)."]
        nft_tps = statistics.median(r["tokens_per_second"] for r in trainers["runs"]["nft"])
        grpo_tps = statistics.median(r["tokens_per_second"] for r in trainers["runs"]["grpo"])
        lines += ["", f"Throughput (prompt + completion tokens per second): NFT {nft_tps:.0f}, GRPO {grpo_tps:.0f}.",
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
                        "`benchmarks/gpu_speed.sh`.\n")
    with path.open("a") as handle:
        handle.write(f"\n## {device_name} — {stamp}\n{body}")


# ------------------------------------------------------------------------------------------------------ CLI
def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--model-size", choices=sorted(MODEL_SIZES), default="tiny")
    parser.add_argument("--pairs", type=int, default=3, help="NFT/GRPO pairs of fresh processes (alternated)")
    parser.add_argument("--steps", type=int, default=20, help="measured optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=4, help="optimizer steps discarded at the start of each run")
    parser.add_argument("--batch-size", type=int, default=64, help="completions per optimizer step")
    parser.add_argument("--num-generations", type=int, default=8)
    parser.add_argument("--max-completion-length", type=int, default=32)
    parser.add_argument("--steps-per-generation", type=int, default=4, help="optimizer steps per generation batch")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--loss-rows", type=int, default=64)
    parser.add_argument("--loss-tokens", type=int, default=4096)
    parser.add_argument("--loss-repeats", type=int, default=30)
    parser.add_argument("--skip-trainers", action="store_true")
    parser.add_argument("--skip-loss", action="store_true")
    parser.add_argument("--output-dir", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--results-name", default="speed", help="writes <name>.md and <name>.json")
    parser.add_argument("--append-to", type=Path, help="also append the report, headed by device and date, to this file")
    parser.add_argument("--child", nargs=2, metavar=("OPTIONS_JSON", "RESULT_FILE"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.child:
        options, result_file = json.loads(args.child[0]), Path(args.child[1])
        result_file.write_text(json.dumps(run_trainer(options)))
        return {}
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda, but torch.cuda.is_available() is False")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    result = {
        "device_name": torch.cuda.get_device_name() if args.device == "cuda" else "CPU",
        "threads": torch.get_num_threads(),
    }
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
            steps=args.steps,
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


if __name__ == "__main__":
    main()
