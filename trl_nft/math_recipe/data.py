r"""Math prompt datasets in the NFT paper's format, ready for TRL trainers and `trl_nft.math_recipe.evaluate`.

Every loader returns a `datasets.Dataset` with three columns:

- ``prompt``: the problem followed by the paper's instruction
  "Please reason step by step, and put your final answer within \boxed{}.", either as plain text or as a
  conversational ``[{"role": "user", "content": ...}]`` prompt (TRL then applies the model's chat template);
- ``answer``: the gold final answer (read by `trl_nft.rewards.math_accuracy_reward`);
- ``problem``: the bare problem text.

Sources understood by `load_math_dataset`:

- DAPO-Math-17k (the paper's training set; hub name ``BytedTsinghua-SIA/DAPO-Math-17k``, or a local copy):
  ``prompt`` is a chat list whose user message wraps the problem in DAPO's "Answer:" instructions (stripped here)
  and ``reward_model.ground_truth`` holds the answer. The hub copy repeats each problem many times, so
  duplicates are dropped by default for this schema;
- MATH-style files with ``problem`` + ``answer`` (or ``problem`` + a ``solution`` ending in ``\boxed{}``);
- GSM8K files with ``question`` + ``answer`` (reasoning then ``#### N``: the gold is ``N``);
- any local json/jsonl/parquet/csv file or directory, or hub dataset, with those (or explicitly named) columns.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from pathlib import Path
from typing import Any

from trl_nft.dataset_checks import require_chat_template
from trl_nft.rewards import extract_gold_answer, strip_invisible_chars

logger = logging.getLogger(__name__)

PAPER_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
DAPO_HUB_NAME = "BytedTsinghua-SIA/DAPO-Math-17k"
PROMPT_FORMATS = ("chat", "plain")

# DAPO-Math-17k wraps each problem in instructions for its own "Answer: N" format; NFT uses \boxed{} instead.
DAPO_PREFIX = (
    "Solve the following math problem step by step. The last line of your response should be of the form "
    "Answer: $Answer (without quotes) where $Answer is the answer to the problem."
)
DAPO_SUFFIX = 'Remember to put your answer on its own line after "Answer:".'

# Short names for hub datasets: name -> (hub path, config).
HUB_ALIASES = {
    "dapo-math-17k": (DAPO_HUB_NAME, None),
    "dapo": (DAPO_HUB_NAME, None),
    "gsm8k": ("openai/gsm8k", "main"),
}
NO_PROBLEM = "without a usable problem (missing or empty)"
NO_ANSWER = "without a usable answer (missing, empty, NaN, boolean or an unsupported type)"
FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}
PROBLEM_COLUMNS = ("problem", "question", "prompt", "query", "input")
ANSWER_COLUMNS = ("answer", "final_answer", "ground_truth", "solution", "target", "gt")


def with_instruction(problem: str) -> str:
    """``problem`` followed by the paper's step-by-step/\\boxed{} instruction (not added twice)."""
    problem = problem.strip()
    if problem.endswith(PAPER_INSTRUCTION):
        return problem
    return f"{problem}\n{PAPER_INSTRUCTION}"


def build_prompt(problem: str, prompt_format: str = "chat", system_prompt: str | None = None) -> str | list[dict]:
    """The prompt for one problem: plain text, or a conversational prompt (optionally with a system message)."""
    if prompt_format not in PROMPT_FORMATS:
        raise ValueError(f"prompt_format must be one of {PROMPT_FORMATS}, got {prompt_format!r}")
    text = with_instruction(problem)
    if prompt_format == "plain":
        return text if system_prompt is None else f"{system_prompt}\n\n{text}"
    messages = [] if system_prompt is None else [{"role": "system", "content": system_prompt}]
    return messages + [{"role": "user", "content": text}]


def strip_dapo_template(text: str) -> str:
    """The bare problem from a DAPO-Math-17k user message (its "Answer:" instructions removed)."""
    text = text.strip()
    if text.startswith(DAPO_PREFIX):
        text = text[len(DAPO_PREFIX) :]
    if text.endswith(DAPO_SUFFIX):
        text = text[: -len(DAPO_SUFFIX)]
    return text.strip()


def _message_text(value: Any) -> str | None:
    """Text of a problem cell: a string, or the last user message of a chat list."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        users = [m for m in value if isinstance(m, dict) and m.get("role", "user") == "user"]
        if users and isinstance(users[-1].get("content"), str):
            return users[-1]["content"]
    return None


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _problem_from_row(value: Any) -> str | None:
    text = _message_text(value)
    if text is None:
        return None
    text = strip_invisible_chars(strip_dapo_template(text))
    if text.endswith(PAPER_INSTRUCTION):  # math_eval problems already carry it; `build_prompt` adds it back once
        text = text[: -len(PAPER_INSTRUCTION)].strip()
    return text or None


def _answer_from_row(value: Any) -> str | None:
    if isinstance(value, dict):  # DAPO's reward_model struct
        value = value.get("ground_truth")
    if _is_missing(value):
        return None
    # numbers (csv/parquet may type "18" as 18.0) and lists are written out; booleans and other types give None
    return extract_gold_answer(value)


def _pick_column(
    columns: list[str], wanted: str | None, candidates: tuple[str, ...], kind: str, source_name: str = "dataset"
) -> str:
    if wanted is not None:
        if wanted not in columns:
            raise ValueError(f"{source_name}: {kind} column {wanted!r} not found; its columns are {columns}")
        return wanted
    for name in candidates:
        if name in columns:
            return name
    raise ValueError(
        f"{source_name}: no {kind} column (looked for {list(candidates)}); its columns are {columns}. Name the "
        f"column holding the {kind} with {kind}_column='...'"
    )


def check_chat_template(tokenizer, prompt_format: str, source_name: str = "dataset") -> None:
    """Chat prompts are rendered with the tokenizer's chat template: fail now, with the fix, if it has none."""
    if prompt_format == "chat" and tokenizer is not None:
        require_chat_template(tokenizer, f"{source_name}: prompt_format='chat' builds conversational prompts")


def _is_dapo_schema(columns: list[str]) -> bool:
    return "prompt" in columns and "reward_model" in columns


def _resolve_local(path: Path, split: str, streaming: bool = False):
    """Load a local file, or the ``split`` file of a local directory."""
    from datasets import load_dataset

    if path.is_dir():
        for suffix in FILE_BUILDERS:
            candidate = path / f"{split}{suffix}"
            if candidate.is_file():
                return _resolve_local(candidate, split, streaming)
        return load_dataset(str(path), split=split, streaming=streaming)
    builder = FILE_BUILDERS.get(path.suffix.lower())
    if builder is None:
        raise ValueError(f"unsupported file type {path.suffix!r} for {path} (use one of {sorted(FILE_BUILDERS)})")
    # a lone file is always split "train"
    return load_dataset(builder, data_files=str(path), split="train", streaming=streaming)


def load_raw_dataset(
    source: str | Path,
    split: str = "train",
    config: str | None = None,
    streaming: bool = False,
    data_dir: str | None = None,
    data_files=None,
):
    """Load ``source`` unchanged: a local file/directory, a short alias (``dapo-math-17k``, ``gsm8k``) or a hub name.

    ``config`` is the hub dataset's configuration (`datasets.load_dataset`'s ``name``; TRL's ``dataset_config``),
    ``streaming`` returns an `IterableDataset`; ``data_dir`` / ``data_files`` are passed to `datasets.load_dataset`
    (then ``source`` may also be a builder name such as ``json``, as in TRL's dataset mixtures). Hub names need
    internet access (or the datasets cache with ``HF_HUB_OFFLINE=1``); local paths never touch the network.
    """
    from datasets import load_dataset

    path = Path(source).expanduser()
    if path.exists() and data_dir is None and data_files is None:
        return _resolve_local(path, split, streaming)
    name, alias_config = HUB_ALIASES.get(str(source).lower(), (str(source), None))
    return load_dataset(name, config or alias_config, split=split, streaming=streaming, data_dir=data_dir,
                        data_files=data_files)


def _column_names(dataset) -> list[str]:
    """Columns of a dataset; a streamed one that does not know them yet shows them in its first row."""
    if dataset.column_names is not None:
        return list(dataset.column_names)
    first = next(iter(dataset), None)  # a stream restarts at every iteration: nothing is consumed
    return [] if first is None else list(first)


def _math_features(prompt_format: str, prefix: str = ""):
    """The converted columns' types (a streamed dataset cannot infer them without reading)."""
    from datasets import Features, Value

    text = Value("string")
    prompt = text if prompt_format == "plain" else [{"role": text, "content": text}]
    return Features({f"{prefix}prompt": prompt, f"{prefix}answer": text, f"{prefix}problem": text})


def to_math_prompts(
    dataset,
    prompt_format: str = "chat",
    problem_column: str | None = None,
    answer_column: str | None = None,
    deduplicate: bool | None = None,
    system_prompt: str | None = None,
    source_name: str = "dataset",
):
    """Convert a raw dataset into ``prompt``/``answer``/``problem`` columns, dropping rows without both.

    Columns are detected (DAPO, MATH, GSM8K schemas) unless named. ``deduplicate=None`` drops repeated
    (problem, answer) pairs only for the DAPO schema. Raises ValueError when no usable row remains. A streamed
    `IterableDataset` is converted lazily, as its rows arrive (its columns and types are known at once; rows are not
    counted and not deduplicated).
    """
    if prompt_format not in PROMPT_FORMATS:
        raise ValueError(f"prompt_format must be one of {PROMPT_FORMATS}, got {prompt_format!r}")
    from datasets import IterableDataset

    streamed = isinstance(dataset, IterableDataset)
    columns = _column_names(dataset)
    is_dapo = _is_dapo_schema(columns) and problem_column is None and answer_column is None
    if is_dapo:
        problem_key, answer_key = "prompt", "reward_model"
    else:
        problem_key = _pick_column(columns, problem_column, PROBLEM_COLUMNS, "problem", source_name)
        answer_key = _pick_column(columns, answer_column, ANSWER_COLUMNS, "answer", source_name)
    drop_reasons = Counter()

    def convert(batch: dict) -> dict:
        problems = [_problem_from_row(value) for value in batch[problem_key]]
        answers = [_answer_from_row(value) for value in batch[answer_key]]
        keep = [p is not None and a is not None for p, a in zip(problems, answers)]
        drop_reasons.update(NO_PROBLEM if p is None else NO_ANSWER for p, k in zip(problems, keep) if not k)
        problems = [p for p, k in zip(problems, keep) if k]
        answers = [a for a, k in zip(answers, keep) if k]
        prompts = [build_prompt(p, prompt_format, system_prompt) for p in problems]
        # Fresh column names: reusing an input name (e.g. a float `answer` from csv) would cast back to its type.
        return {"new_prompt": prompts, "new_answer": answers, "new_problem": problems}

    renamed = {f"new_{name}": name for name in ("prompt", "answer", "problem")}
    if streamed:
        # Converted as rows arrive: no totals to check or log, and no deduplication (a stream is read again at every
        # epoch, so a set of problems seen so far would drop the whole second epoch).
        if deduplicate or (deduplicate is None and is_dapo):
            logger.warning("%s: streamed, so repeated problems are kept (load it without streaming to drop them)",
                           source_name)
        converted = dataset.map(convert, batched=True, remove_columns=columns,
                                features=_math_features(prompt_format, prefix="new_"))
        return converted.rename_columns(renamed)

    total = len(dataset)
    # No cache reuse: datasets fingerprints `convert` without the helpers it calls, so a cached result could
    # silently come from an older version of this module.
    converted = dataset.map(
        convert, batched=True, remove_columns=columns, load_from_cache_file=False, desc=f"Formatting {source_name}"
    )
    dropped = total - len(converted)
    if dropped:
        reasons = ", ".join(f"{count} {reason}" for reason, count in sorted(drop_reasons.items()))
        logger.warning("%s: dropped %d of %d rows (%s)", source_name, dropped, total, reasons)
    if len(converted) == 0:
        raise ValueError(
            f"{source_name}: no usable rows (need a problem and a gold answer) among {total}; "
            f"columns were {columns}, read problem from {problem_key!r} and answer from {answer_key!r}"
        )
    converted = converted.rename_columns(renamed)
    if deduplicate or (deduplicate is None and is_dapo):
        seen: set[tuple[str, str]] = set()

        def first_time(row: dict) -> bool:
            key = (row["problem"], row["answer"])
            if key in seen:
                return False
            seen.add(key)
            return True

        before = len(converted)
        converted = converted.filter(first_time, load_from_cache_file=False, desc=f"Deduplicating {source_name}")
        duplicates = before - len(converted)
        logger.info("%s: dropped %d duplicate problems, %d remain", source_name, duplicates, len(converted))
    logger.info("%s: %d prompts (%s format)", source_name, len(converted), prompt_format)
    return converted


def prompt_token_counts(prompts: list, tokenizer) -> list[int]:
    """Tokens of each prompt as TRL 1.16's `GRPOTrainer` tokenizes it for generation.

    A conversational prompt is rendered with the tokenizer's chat template and the generation prompt
    (`apply_chat_template(..., add_generation_prompt=True)`); a plain one is tokenized as is (`tokenizer(text)`).
    """
    prompts = list(prompts)  # a `datasets` column is not a list; the tokenizer wants one
    if not prompts:
        return []
    if isinstance(prompts[0], list):
        require_chat_template(tokenizer, "chat prompts are counted as TRL renders them")
        rendered = tokenizer.apply_chat_template(prompts, add_generation_prompt=True, tokenize=True, return_dict=True)
        return [len(ids) for ids in rendered["input_ids"]]
    return [len(ids) for ids in tokenizer(text=prompts)["input_ids"]]


def drop_long_prompts(dataset, tokenizer, max_prompt_tokens: int, source_name: str = "dataset"):
    """Keep the rows whose ``prompt`` is at most ``max_prompt_tokens`` tokens (see `prompt_token_counts`).

    As the official NFT run does (NVlabs/NFT `train_7B.sh:46,76`: a 512-token budget, `filter_overlong_prompts`):
    drop, not truncate — a truncated math problem is a different problem. The number dropped is logged;
    ValueError if none remain.
    """
    if isinstance(max_prompt_tokens, bool) or not isinstance(max_prompt_tokens, int) or max_prompt_tokens < 1:
        raise ValueError(f"max_prompt_tokens must be a positive integer, got {max_prompt_tokens!r}")
    if tokenizer is None:
        raise ValueError("max_prompt_tokens needs the model's tokenizer (tokenizer=...) to count prompt tokens")

    def short_enough(batch: dict) -> list[bool]:
        return [count <= max_prompt_tokens for count in prompt_token_counts(batch["prompt"], tokenizer)]

    from datasets import IterableDataset

    if isinstance(dataset, IterableDataset):  # filtered as rows arrive: nothing to count
        return dataset.filter(short_enough, batched=True)
    total = len(dataset)
    kept = dataset.filter(short_enough, batched=True, load_from_cache_file=False,
                          desc=f"Dropping {source_name} prompts over {max_prompt_tokens} tokens")
    dropped = total - len(kept)
    if dropped:
        logger.warning("%s: dropped %d of %d prompts longer than max_prompt_tokens=%d tokens",
                       source_name, dropped, total, max_prompt_tokens)
    if len(kept) == 0:
        raise ValueError(f"{source_name}: all {total} prompts are longer than max_prompt_tokens={max_prompt_tokens}")
    return kept


def load_math_dataset(
    source: str | Path,
    split: str = "train",
    prompt_format: str = "chat",
    limit: int | None = None,
    problem_column: str | None = None,
    answer_column: str | None = None,
    deduplicate: bool | None = None,
    system_prompt: str | None = None,
    tokenizer=None,
    max_prompt_tokens: int | None = None,
    config: str | None = None,
    streaming: bool = False,
):
    """Load a math dataset as ``prompt``/``answer``/``problem`` columns in the NFT paper's prompt format.

    ``source``: a local json/jsonl/parquet/csv file, a directory holding ``{split}.jsonl`` (etc.), a hub dataset
    name, or the aliases ``"dapo-math-17k"``/``"gsm8k"``. ``split`` is ignored for a single local file; ``config``
    names a hub dataset's configuration. ``streaming=True`` returns an `IterableDataset` converted as rows arrive
    (no deduplication, no row counts). ``prompt_format``: ``"chat"`` (conversational, the default) or ``"plain"``
    text. ``limit`` keeps the first N usable rows. ``max_prompt_tokens`` drops prompts longer than that many tokens
    of ``tokenizer`` (the model's; chat prompts are counted with its chat template, as TRL renders them), before
    ``limit`` applies. Given a ``tokenizer`` without a chat template, ``prompt_format="chat"`` is refused at once
    (use ``"plain"``). See `to_math_prompts` for the other arguments.

    Example::

        train = load_math_dataset("dapo-math-17k")                       # needs internet
        test = load_math_dataset("data/gsm8k", split="test", prompt_format="plain", limit=100)
    """
    check_chat_template(tokenizer, prompt_format, source_name=str(source))
    raw = load_raw_dataset(source, split, config=config, streaming=streaming)
    dataset = to_math_prompts(
        raw,
        prompt_format=prompt_format,
        problem_column=problem_column,
        answer_column=answer_column,
        deduplicate=deduplicate,
        system_prompt=system_prompt,
        source_name=str(source),
    )
    return _filter_and_limit(dataset, tokenizer, max_prompt_tokens, limit, str(source))


def _filter_and_limit(dataset, tokenizer, max_prompt_tokens: int | None, limit: int | None, source_name: str):
    if max_prompt_tokens is not None:
        dataset = drop_long_prompts(dataset, tokenizer, max_prompt_tokens, source_name=source_name)
    if limit is not None:
        from datasets import IterableDataset

        dataset = dataset.take(limit) if isinstance(dataset, IterableDataset) else dataset.select(
            range(min(limit, len(dataset))))
    return dataset


def mix_by_fraction(parts: list, fractions: list[float | None]) -> list:
    """Each part cut to its share of a mixture (TRL's `DatasetConfig.fraction`): shares are the fractions normalised
    to sum to one, and the mixture is as large as it can be without repeating any row, so each part keeps its first
    ``round(share * size)`` rows. All fractions None: the parts unchanged."""
    if all(fraction is None for fraction in fractions):
        return parts
    if any(fraction is None for fraction in fractions):
        raise ValueError(f"datasets: set `fraction` for every dataset of the mixture or for none, got {fractions}")
    if any(fraction < 0 for fraction in fractions) or sum(fractions) <= 0:
        raise ValueError(f"datasets: fractions must be >= 0 with a positive sum, got {fractions}")
    shares = [fraction / sum(fractions) for fraction in fractions]
    size = min(len(part) / share for part, share in zip(parts, shares) if share > 0)
    return [part.select(range(round(share * size))) for part, share in zip(parts, shares)]


def load_math_mixture(
    datasets_config: list,
    streaming: bool = False,
    test_split_size: float | None = None,
    seed: int = 0,
    prompt_format: str = "chat",
    tokenizer=None,
    max_prompt_tokens: int | None = None,
    limit: int | None = None,
    test_limit: int | None = None,
    system_prompt: str | None = None,
):
    """TRL's dataset mixture (`trl.DatasetMixtureConfig.datasets`, the ``datasets:`` list of a YAML config) as math
    prompts: {"train": ..., "test": ... (with ``test_split_size``)}.

    Each entry (``path``, ``name``, ``data_dir``, ``data_files``, ``split``, ``columns``, ``fraction``) is loaded as
    `datasets.load_dataset` would (``path`` may also be a local file or one of our aliases) and converted on its own,
    so sources with different columns (DAPO-Math-17k and a problem/answer file) mix. Then fractions apply (over
    usable rows), the parts are concatenated, and ``test_split_size`` splits off a test set with ``seed``.
    ``limit`` / ``test_limit`` keep the first N rows of each.
    """
    from datasets import IterableDataset, concatenate_datasets

    if not datasets_config:
        raise ValueError("datasets: the mixture is empty")
    check_chat_template(tokenizer, prompt_format, source_name="datasets")
    parts = []
    for entry in datasets_config:
        raw = load_raw_dataset(entry.path, entry.split, config=entry.name, streaming=streaming,
                               data_dir=entry.data_dir, data_files=entry.data_files)
        if entry.columns is not None:
            raw = raw.select_columns(entry.columns)
        part = to_math_prompts(raw, prompt_format=prompt_format, system_prompt=system_prompt, source_name=entry.path)
        parts.append(_filter_and_limit(part, tokenizer, max_prompt_tokens, None, entry.path))
    fractions = [entry.fraction for entry in datasets_config]
    if streaming and any(fraction is not None for fraction in fractions):
        raise ValueError("datasets: `fraction` needs the row counts, which a streamed mixture does not have")
    mixture = concatenate_datasets(mix_by_fraction(parts, fractions))
    if not isinstance(mixture, IterableDataset):
        logger.info("datasets: a mixture of %d prompts from %d sources", len(mixture), len(parts))
    if test_split_size is None:
        return {"train": _filter_and_limit(mixture, None, None, limit, "datasets")}
    if streaming:
        raise ValueError("datasets: test_split_size needs the row counts, which a streamed mixture does not have")
    split = mixture.train_test_split(test_size=test_split_size, seed=seed)
    return {"train": _filter_and_limit(split["train"], None, None, limit, "datasets"),
            "test": _filter_and_limit(split["test"], None, None, test_limit, "datasets")}
