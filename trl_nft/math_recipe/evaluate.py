r"""Evaluate a model on the NFT paper's six math benchmarks (avg@k accuracy, JSON + Markdown table).

Usage::

    trl-nft eval --model PATH --output results.json                 # the six benchmarks from the hub
    trl-nft eval --download_to data/math_eval                        # once, where there is internet
    trl-nft eval --model PATH --data_dir data/math_eval --output results.json   # offline, from those files

(``python -m trl_nft.math_recipe.evaluate`` is the same command.) Where each benchmark comes from on the hub and how
its rows are read: `trl_nft.math_recipe.benchmarks`.

The paper reports avg@32 (32 samples per problem, accuracy averaged) for AIME24, AIME25 and AMC23 and avg@1 for
MATH500, OlympiadBench and Minerva Math. Sampling follows the authors' evaluation scripts, per model size
(``--paper-settings``): the 7B model (``save_path=./NFT_7B``, found in NVlabs/NFT ``eval_local_32B.sh``: the two
scripts' names are swapped) at temperature 0.6, top-p 0.7, 4096-token context with 512-token prompts, so at most
3584 new tokens; the 32B model (``save_path=./NFT_32B``, in ``eval_local_7B.sh``) at temperature 1.0, top-p 0.7,
8192-token context with 1024-token prompts, so 7168 new tokens. No top-k in both. Answers are scored with
`trl_nft.rewards.math_accuracy_reward` (last ``\boxed{}`` + math-verify).

Generation is pluggable: `evaluate_benchmarks` takes any ``generate(prompts) -> completions`` function, so vLLM
(used when importable and a GPU is present), batched transformers sampling, or a test oracle all fit.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm.auto import tqdm

from trl_nft.math_recipe.benchmarks import BENCHMARKS, download_benchmarks, load_benchmark
from trl_nft.math_recipe.data import with_instruction

logger = logging.getLogger(__name__)

Generator = Callable[[list[str]], list[str]]
"""Takes rendered prompt strings, returns one sampled completion per prompt (same order)."""


@dataclass
class SamplingSettings:
    """Sampling parameters shared by the backends (defaults: the NFT authors' evaluation of their 7B model)."""

    temperature: float = 0.6
    top_p: float = 0.7
    max_new_tokens: int = 3584
    seed: int = 0


# The authors' evaluation per model size (see the module docstring for which official script holds which).
PAPER_SETTINGS = {
    "7b": SamplingSettings(temperature=0.6, top_p=0.7, max_new_tokens=4096 - 512),
    "32b": SamplingSettings(temperature=1.0, top_p=0.7, max_new_tokens=8192 - 1024),
}


# ---------------------------------------------------------------------------------------------------------------
# Prompts and benchmark data
# ---------------------------------------------------------------------------------------------------------------


def render_prompts(dataset, tokenizer=None) -> list[str]:
    """Prompt strings for generation: the tokenizer's chat template when it has one, else the plain-text prompt."""
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        return [
            tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            for messages in dataset["prompt"]
        ]
    return [with_instruction(problem) for problem in dataset["problem"]]


# ---------------------------------------------------------------------------------------------------------------
# Generation backends
# ---------------------------------------------------------------------------------------------------------------


def transformers_generator(model, tokenizer, settings: SamplingSettings) -> Generator:
    """Batched sampling with ``model.generate`` (left padding); one call per batch of prompts."""
    import torch

    tokenizer.padding_side = "left"  # decoder-only models must be padded on the left to continue the prompt
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    add_special_tokens = not getattr(tokenizer, "chat_template", None)  # a chat template already has its BOS
    sampling = settings.temperature > 0
    generation_kwargs = dict(
        do_sample=sampling,
        max_new_tokens=settings.max_new_tokens,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    if sampling:
        generation_kwargs.update(temperature=settings.temperature, top_p=settings.top_p, top_k=0)  # top_k=0: off
    torch.manual_seed(settings.seed)

    def generate(prompts: list[str]) -> list[str]:
        batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=add_special_tokens)
        batch = batch.to(model.device)
        with torch.inference_mode():
            output = model.generate(**batch, **generation_kwargs)
        return tokenizer.batch_decode(output[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)

    return generate


def vllm_generator(model_path: str, settings: SamplingSettings, tensor_parallel_size: int = 1) -> Generator:
    """Sampling with vLLM; the engine's global seed (not a per-request one) keeps repeated prompts independent."""
    from vllm import LLM, SamplingParams

    llm = LLM(model=model_path, seed=settings.seed, tensor_parallel_size=tensor_parallel_size)
    params = SamplingParams(
        temperature=settings.temperature, top_p=settings.top_p, top_k=-1, max_tokens=settings.max_new_tokens
    )

    def generate(prompts: list[str]) -> list[str]:
        outputs = llm.generate(prompts, params, use_tqdm=False)
        return [output.outputs[0].text for output in outputs]

    return generate


def vllm_usable() -> bool:
    """Whether vLLM is importable and a CUDA device is present."""
    try:
        import torch
        import vllm  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


# ---------------------------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------------------------


def evaluate_benchmarks(
    generate: Generator,
    data_dir: str | Path | None = None,
    benchmarks: list[str] | None = None,
    tokenizer=None,
    n_samples_override: int | None = None,
    limit: int | None = None,
    batch_size: int | None = 32,
    reward=None,
) -> dict:
    """Generate and score every benchmark; returns ``{"benchmarks": {name: {...}}, "average": float}``.

    The benchmarks are read from ``data_dir`` when given, else from the hub (`trl_nft.math_recipe.benchmarks`).

    Each benchmark dict has ``accuracy`` (avg@k in percent), ``k``, ``num_problems``, ``num_samples``,
    ``ungradable`` (problems whose gold math-verify cannot parse; scored 0) and ``no_answer`` (samples without a
    final answer). ``batch_size=None`` hands all of a benchmark's prompts to ``generate`` at once (vLLM).
    """
    from trl_nft.rewards import last_boxed_content, math_accuracy_reward

    reward = math_accuracy_reward if reward is None else reward
    names = list(BENCHMARKS) if benchmarks is None else benchmarks
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown:
        raise ValueError(f"unknown benchmarks {unknown}; choose from {list(BENCHMARKS)}")

    plans = []
    for name in names:
        dataset = load_benchmark(name, data_dir, prompt_format="chat", limit=limit)
        k = n_samples_override or BENCHMARKS[name].paper_samples
        plans.append((name, dataset, k, render_prompts(dataset, tokenizer)))

    results = {}
    total = sum(len(p[3]) * p[2] for p in plans)
    progress = tqdm(total=total, desc="Generating", unit="sample")  # pragma: no mutate (a progress bar)
    for name, dataset, k, prompts in plans:
        repeated = [prompt for prompt in prompts for _ in range(k)]
        golds = [answer for answer in dataset["answer"] for _ in range(k)]
        step = len(repeated) if not batch_size else batch_size
        completions: list[str] = []
        started = time.perf_counter()
        for start in range(0, len(repeated), step):
            chunk = repeated[start : start + step]
            completions.extend(generate(chunk))
            progress.update(len(chunk))
        if len(completions) != len(repeated):
            raise ValueError(f"generate returned {len(completions)} completions for {len(repeated)} prompts")
        scores = reward(completions=completions, answer=golds)
        per_problem = [scores[i * k : (i + 1) * k] for i in range(len(prompts))]
        results[name] = {
            "accuracy": 100.0 * sum(s or 0.0 for s in scores) / len(scores),
            "k": k,
            "num_problems": len(prompts),
            "num_samples": len(scores),
            "ungradable": sum(all(s is None for s in group) for group in per_problem),
            "no_answer": sum(last_boxed_content(c) is None for c in completions),
            "seconds": round(time.perf_counter() - started, 2),
        }
        logger.info("%s: avg@%d = %.2f", name, k, results[name]["accuracy"])
    progress.close()
    average = sum(r["accuracy"] for r in results.values()) / len(results) if results else math.nan
    return {"benchmarks": results, "average": average}


def markdown_table(results: dict, model_name: str = "model") -> str:
    """A Markdown table in the paper's column order (AIME24, MATH500, AIME25, AMC23, Olympiad, Minerva, Avg)."""
    header = ["Model"] + [b.column for b in BENCHMARKS.values()] + ["Avg"]
    row = [model_name]
    for name in BENCHMARKS:
        entry = results["benchmarks"].get(name)
        row.append("–" if entry is None else f"{entry['accuracy']:.1f}")
    row.append(f"{results['average']:.1f}")
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines.append("| " + " | ".join(row) + " |")
    ks = ", ".join(f"{name} avg@{entry['k']}" for name, entry in results["benchmarks"].items())
    return "\n".join(lines) + f"\n\nMetric: {ks}.\n"


# ---------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------


class UnderscoreOptionParser(argparse.ArgumentParser):
    """Options spelled with underscores, as `trl-nft train`'s; the dashed spelling of each (``--max-new-tokens``,
    the one `trl-nft eval` used first) is read as the underscore one."""

    def parse_known_args(self, args=None, namespace=None):
        options = {option for action in self._actions for option in action.option_strings}
        rewritten = []
        for token in sys.argv[1:] if args is None else args:
            name, equals, value = token.partition("=")
            underscored = "--" + name[2:].replace("-", "_")
            dashed_alias = token.startswith("--") and underscored != name and underscored in options
            rewritten.append(underscored + equals + value if dashed_alias else token)
        return super().parse_known_args(rewritten, namespace)


def build_parser(prog: str = "python -m trl_nft.math_recipe.evaluate") -> argparse.ArgumentParser:
    """The ``trl-nft eval`` (= ``python -m trl_nft.math_recipe.evaluate``) argument parser."""
    defaults = SamplingSettings()
    hub_ids = ", ".join(f"{b.name}: {b.hub_id}" for b in BENCHMARKS.values())
    parser = UnderscoreOptionParser(
        prog=prog,
        usage=f"{prog} --model MODEL [--data_dir DIR] [--output FILE] [--option value ...]\n"
        f"       {prog} --download_to DIR [--benchmarks NAMES]",
        description=(
            "avg@k accuracy on the NFT paper's math benchmarks (avg@32 for aime24/aime25/amc23, avg@1 otherwise). "
            f"The benchmarks come from the Hugging Face hub ({hub_ids}) unless --data_dir names a folder of "
            "<benchmark>.jsonl files; --download_to writes that folder once, for machines without internet. "
            "Sampling follows the authors' evaluation per model size (--paper_settings): 7b = temperature 0.6, "
            "top-p 0.7, 3584 new tokens (4096 context minus 512 prompt tokens); 32b = temperature 1.0, top-p 0.7, "
            "7168 new tokens (8192 minus 1024). No top-k. --temperature / --top_p / --max_new_tokens override them. "
            "Dashed spellings such as --data-dir are accepted too."
        ),
    )
    parser.add_argument("--model", help="model directory or hub name (required unless --download_to)")
    parser.add_argument("--benchmarks", default=",".join(BENCHMARKS), help="comma-separated, from: %(default)s")
    parser.add_argument("--data_dir", help="folder with <benchmark>.jsonl files (problem, answer), e.g. written by "
                        "--download_to; default: read the benchmarks from the hub")
    parser.add_argument("--download_to", metavar="DIR", help="write <benchmark>.jsonl for each of --benchmarks into "
                        "DIR from the hub (once, with internet), then exit; later runs read them with --data_dir DIR")
    parser.add_argument("--output", help="write results JSON here, and the Markdown table next to it (.md)")
    parser.add_argument("--paper_settings", choices=sorted(PAPER_SETTINGS), default="7b",
                        help="the authors' sampling settings for this model size (default: %(default)s)")
    parser.add_argument("--temperature", type=float, help="default: from --paper_settings")
    parser.add_argument("--top_p", type=float, help="default: from --paper_settings")
    parser.add_argument("--max_new_tokens", type=int, help="default: from --paper_settings")
    parser.add_argument("--n_samples_override", type=int, help="samples per problem for every benchmark")
    parser.add_argument("--limit", type=int, help="only the first N problems of each benchmark")
    parser.add_argument("--batch_size", type=int, default=32, help="prompts per transformers generate call")
    parser.add_argument("--backend", choices=("auto", "vllm", "transformers"), default="auto")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--tensor_parallel_size", type=int, default=1, help="vLLM only")
    parser.add_argument("--dtype", default="auto", help="transformers only: torch dtype (auto, bfloat16, float32)")
    return parser


def sampling_settings(args: argparse.Namespace) -> SamplingSettings:
    """The paper's settings for the chosen model size, with any explicitly given value taking precedence."""
    paper = PAPER_SETTINGS[args.paper_settings]
    return SamplingSettings(
        temperature=paper.temperature if args.temperature is None else args.temperature,
        top_p=paper.top_p if args.top_p is None else args.top_p,
        max_new_tokens=paper.max_new_tokens if args.max_new_tokens is None else args.max_new_tokens,
        seed=args.seed,
    )


def main(argv: list[str] | None = None, prog: str = "python -m trl_nft.math_recipe.evaluate") -> dict:
    """Run the command line; returns the results dict that is also printed and saved (with --download_to: the files
    written, ``{"downloaded": [paths]}``)."""
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    benchmarks = [name.strip() for name in args.benchmarks.split(",") if name.strip()]
    unknown = [name for name in benchmarks if name not in BENCHMARKS]
    if unknown:
        parser.error(f"--benchmarks: unknown {unknown}; choose from {','.join(BENCHMARKS)}")
    if args.download_to:
        if args.data_dir:
            parser.error("--download_to writes the benchmark files from the hub; --data_dir reads them: give one")
        written = download_benchmarks(args.download_to, benchmarks)
        print(f"wrote {len(written)} benchmark files to {args.download_to}; evaluate offline with "
              f"{prog} --model MODEL --data_dir {args.download_to}")
        return {"downloaded": [str(path) for path in written]}
    if not args.model:
        parser.error("--model is required (a model directory or hub name), unless --download_to")
    settings = sampling_settings(args)
    backend = args.backend
    if backend == "auto":
        backend = "vllm" if vllm_usable() else "transformers"

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    if backend == "vllm":
        generate = vllm_generator(args.model, settings, args.tensor_parallel_size)
        batch_size = None  # vLLM schedules the whole benchmark itself
    else:
        import torch
        from transformers import AutoModelForCausalLM

        device = "cuda" if torch.cuda.is_available() else "cpu"
        model = AutoModelForCausalLM.from_pretrained(args.model, dtype=args.dtype).to(device).eval()
        generate = transformers_generator(model, tokenizer, settings)
        batch_size = args.batch_size

    results = evaluate_benchmarks(
        generate,
        args.data_dir,
        benchmarks,
        tokenizer=tokenizer,
        n_samples_override=args.n_samples_override,
        limit=args.limit,
        batch_size=batch_size,
    )
    results.update(model=args.model, backend=backend, sampling=asdict(settings),
                   data=args.data_dir or "hub")
    table = markdown_table(results, Path(args.model).name or args.model)
    print(table)
    if args.output:
        output = Path(args.output)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(results, indent=2) + "\n")
        output.with_suffix(".md").write_text(table)
        logger.info("wrote %s and %s", output, output.with_suffix(".md"))
    return results


if __name__ == "__main__":
    main()
