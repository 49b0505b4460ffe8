"""The paper's math training run (arXiv 2505.18116): script options, datasets, rewards, trainer, end of run.

Shared by `trl-nft train` (`trl_nft.cli`) and `examples/nft_math.py`; parsing and `--help` live in `trl_nft.cli`.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path

import trl
from trl import DatasetMixtureConfig, ModelConfig, get_peft_config, get_quantization_config
from trl.scripts.utils import DatasetConfig

from trl_nft.config import NFTConfig
from trl_nft.math_recipe.data import HUB_ALIASES, PROMPT_FORMATS, load_math_dataset, load_math_mixture
from trl_nft.rewards.registry import REGISTERED_REWARDS, resolve_reward_funcs
from trl_nft.trainer import NFTTrainer

logger = logging.getLogger(__name__)

# Earlier names of TRL's script options, still accepted (from the command line and from YAML files).
DEPRECATED_ALIASES = {"dataset_split": "dataset_train_split", "eval_dataset_split": "dataset_test_split"}


@dataclass
class ScriptArguments(trl.ScriptArguments, DatasetMixtureConfig):
    """Options of the math training script: TRL's script options (`trl.ScriptArguments`: `dataset_name`,
    `dataset_config`, `dataset_train_split`, `dataset_test_split`, `dataset_streaming`; `trl.DatasetMixtureConfig`:
    `datasets`, `streaming`, `test_split_size`), as in `trl grpo`, plus the recipe's own (prompt format and length,
    held-out set, verifiers). Next to every NFTConfig / GRPOConfig / ModelConfig option."""

    dataset_name: str | None = field(
        default="dapo-math-17k",
        metadata={
            "help": "Training prompts: 'dapo-math-17k' (the paper's set, from the hub), 'gsm8k', a hub dataset name, "
            "or a local json/jsonl/parquet/csv file or directory with problem/answer (or question/answer) columns. "
            "Ignored when a `datasets` mixture is given."
        },
    )
    datasets: list[DatasetConfig] = field(
        default_factory=list,
        metadata={
            "help": "A mixture of training sets instead of dataset_name (in the YAML file, as for `trl grpo`): a list "
            "of {path, name, data_dir, data_files, split, columns, fraction}. Each is read and turned into math "
            "prompts on its own, so sources with different columns mix; `fraction`s set each one's share."
        },
    )
    dataset_split: str | None = field(
        default=None, metadata={"help": "Deprecated name of --dataset_train_split (still accepted)."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep only the first N training prompts."})
    prompt_format: str = field(
        default="chat",
        metadata={
            "help": "'chat' (conversational prompt, rendered with the tokenizer's chat template; the paper) or "
            "'plain' text (for tokenizers without a chat template).",
            "choices": list(PROMPT_FORMATS),
        },
    )
    system_prompt: str | None = field(
        default=None,
        metadata={
            "help": "System message put before every chat prompt (training and evaluation sets). None = the chat "
            "template's own default, if it has one (Qwen2.5-Math's: 'Please reason step by step, and put your final "
            "answer within \\boxed{}.'). The official 32B run gave Qwen2.5-32B that same system prompt. "
            "prompt_format='plain' puts it before the problem, separated by a blank line."
        },
    )
    max_prompt_length: int | None = field(
        default=None,
        metadata={
            "help": "Prompts longer than this many tokens (chat template applied) are dropped, counted and logged, as "
            "the official data pipeline did; official 512 for 7B, 2048 for 32B; None = keep all."
        },
    )
    eval_dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "Held-out set evaluated during training (set eval_strategy='steps' and eval_steps), read like "
            "dataset_name, its dataset_test_split split; e.g. HuggingFaceH4/MATH-500 (split test) or a local file. "
            "eval 'reward' is then its accuracy. Without it, evaluation uses the `datasets` mixture's test split "
            "(test_split_size) or dataset_name's dataset_test_split, as `trl grpo` does."
        },
    )
    eval_dataset_split: str | None = field(
        default=None, metadata={"help": "Deprecated name of --dataset_test_split (still accepted)."}
    )
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep only the first N eval problems."})
    reward_funcs: list[str] = field(
        default_factory=lambda: ["math_accuracy_reward"],
        metadata={
            "help": "Reward functions (verifiers), weighted by reward_weights: registered names "
            f"({', '.join(REGISTERED_REWARDS)}) or dotted import paths such as my_pkg.my_module.my_reward. "
            "Default: math_accuracy_reward; the 7B / 32B paper recipes train with dapo_math_reward (the official "
            "verifier)."
        },
    )
    answer_format: str = field(
        default="boxed",
        metadata={
            "help": "math_accuracy_reward's answer extraction: 'boxed' (last \\boxed{}, the paper), 'gsm8k', 'auto'.",
            "choices": ["boxed", "gsm8k", "auto"],
        },
    )
    reward_timeout: float = field(
        default=5.0, metadata={"help": "math_accuracy_reward: seconds allowed to verify one completion."}
    )
    reward_workers: int | None = field(
        default=None, metadata={"help": "math_accuracy_reward: verifier processes (default: CPUs, at most 8)."}
    )

    def __post_init__(self):
        super().__post_init__()  # the mixture's `datasets` entries (dicts from YAML) become DatasetConfig objects
        for old, new in DEPRECATED_ALIASES.items():
            value = getattr(self, old)
            if value is None:
                continue
            if getattr(self, new) not in (_field_default(new), value):
                raise ValueError(f"--{old} {value!r} and --{new} {getattr(self, new)!r} disagree: {old} is the old "
                                 f"name of {new}; give only --{new}")
            warnings.warn(f"--{old} is deprecated: use --{new} (same meaning, TRL's name)", FutureWarning,
                          stacklevel=2)
            setattr(self, new, value)
            setattr(self, old, None)


def card_dataset_name(dataset_name: str) -> str | None:
    """The dataset as the model card should name it: a hub id (aliases expanded), or None for a local path."""
    if Path(dataset_name).expanduser().exists():
        return None
    return HUB_ALIASES.get(dataset_name.lower(), (dataset_name, None))[0]


def model_card_dataset(script_args: ScriptArguments) -> str | None:
    """The dataset the model card and the hub push name: dataset_name's hub id; none for a `datasets` mixture (as
    `trl grpo`) or a local path."""
    return None if script_args.datasets else card_dataset_name(script_args.dataset_name)


def _load_tokenizer(model_args: ModelConfig, training_args: NFTConfig):
    """The model's tokenizer, for the prompt-length filter (TRL loads its own copy for training)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(
        model_args.model_name_or_path,
        revision=model_args.model_revision,
        trust_remote_code=training_args.trust_remote_code,
    )


def load_datasets(script_args: ScriptArguments, training_args: NFTConfig, model_args: ModelConfig):
    """(train, eval or None) datasets in the paper's prompt format, chosen as `trl grpo` chooses them.

    Training prompts: the `datasets` mixture when given, else `dataset_name` (`dataset_config`, split
    `dataset_train_split`). Evaluation: `eval_dataset_name` (split `dataset_test_split`) when given and
    `eval_strategy` is not "no" (nothing would evaluate it), else the mixture's test split (`test_split_size`),
    else — when `eval_strategy` asks for evaluation — `dataset_name`'s `dataset_test_split`.
    """
    tokenizer = None
    if script_args.max_prompt_length is not None or script_args.prompt_format == "chat":
        tokenizer = _load_tokenizer(model_args, training_args)  # also lets the loader check the chat template
    common = dict(prompt_format=script_args.prompt_format, tokenizer=tokenizer,
                  max_prompt_tokens=script_args.max_prompt_length, system_prompt=script_args.system_prompt)
    mixture_test = None
    if script_args.datasets:
        if script_args.dataset_name != _field_default("dataset_name"):
            logger.warning("both `datasets` and dataset_name=%r are given: the `datasets` mixture is used",
                           script_args.dataset_name)
        if script_args.dataset_streaming and not script_args.streaming:
            logger.warning("dataset_streaming applies to dataset_name; a `datasets` mixture streams with `streaming`")
        mixture = load_math_mixture(script_args.datasets, streaming=script_args.streaming,
                                    test_split_size=script_args.test_split_size, seed=training_args.seed,
                                    limit=script_args.max_train_samples, test_limit=script_args.max_eval_samples,
                                    **common)
        train_dataset, mixture_test = mixture["train"], mixture.get("test")
    else:
        train_dataset = load_math_dataset(script_args.dataset_name, split=script_args.dataset_train_split,
                                          config=script_args.dataset_config, streaming=script_args.dataset_streaming,
                                          limit=script_args.max_train_samples, **common)
    eval_dataset = None
    if script_args.eval_dataset_name and training_args.eval_strategy == "no":
        # Nothing evaluates it: no download (an edited recipe with `eval_strategy: no` must run offline).
        logger.info("eval_strategy='no': eval_dataset_name=%r is not loaded", script_args.eval_dataset_name)
    elif script_args.eval_dataset_name:
        eval_dataset = load_math_dataset(script_args.eval_dataset_name, split=script_args.dataset_test_split,
                                         streaming=script_args.dataset_streaming, limit=script_args.max_eval_samples,
                                         **common)
    elif mixture_test is not None:
        eval_dataset = mixture_test
    elif training_args.eval_strategy != "no":
        if script_args.datasets:
            raise ValueError(f"eval_strategy={training_args.eval_strategy!r} needs an evaluation set: "
                             "--eval_dataset_name, or test_split_size for the `datasets` mixture")
        try:
            eval_dataset = load_math_dataset(script_args.dataset_name, split=script_args.dataset_test_split,
                                             config=script_args.dataset_config,
                                             streaming=script_args.dataset_streaming,
                                             limit=script_args.max_eval_samples, **common)
        except (ValueError, FileNotFoundError) as error:
            raise ValueError(
                f"eval_strategy={training_args.eval_strategy!r} evaluates on dataset_name={script_args.dataset_name!r}"
                f", split dataset_test_split={script_args.dataset_test_split!r}, which failed to load ({error}). "
                "Name a held-out set with --eval_dataset_name (e.g. HuggingFaceH4/MATH-500) or another "
                "--dataset_test_split"
            ) from error
    return train_dataset, eval_dataset


def _field_default(name: str):
    return next(spec.default for spec in fields(ScriptArguments) if spec.name == name)


def build_trainer(script_args: ScriptArguments, training_args: NFTConfig, model_args: ModelConfig) -> NFTTrainer:
    """Datasets, rewards and trainer for the given arguments (separate from `run` so tests can inspect it)."""
    model_init_kwargs = {"revision": model_args.model_revision, "attn_implementation": model_args.attn_implementation,
                         "dtype": model_args.dtype, "trust_remote_code": training_args.trust_remote_code}
    model_init_kwargs.update(training_args.model_init_kwargs or {})
    training_args.model_init_kwargs = {k: v for k, v in model_init_kwargs.items() if v is not None}

    reward_funcs = resolve_reward_funcs(
        script_args.reward_funcs,
        dict(answer_format=script_args.answer_format, timeout=script_args.reward_timeout,
             num_workers=script_args.reward_workers),
    )
    train_dataset, eval_dataset = load_datasets(script_args, training_args, model_args)
    return NFTTrainer(
        model=model_args.model_name_or_path,
        reward_funcs=reward_funcs,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        # --load_in_4bit / --load_in_8bit (QLoRA with --use_peft): TRL puts it into the model's init kwargs
        quantization_config=get_quantization_config(model_args),
        peft_config=get_peft_config(model_args),
    )


def close_rewards(reward_funcs) -> None:
    """Stop the verifier worker processes of rewards that have them (they would also stop at interpreter exit)."""
    for reward in reward_funcs:
        close = getattr(reward, "close", None)
        if callable(close):
            close()


def run(script_args: ScriptArguments, training_args: NFTConfig, model_args: ModelConfig) -> NFTTrainer:
    """Train, save (with an NFT model card naming the dataset), push if asked, and end the run as TRL's scripts do."""
    from accelerate import PartialState

    # Join the process group before the model is loaded: under ZeRO-3, `from_pretrained` partitions the weights as it
    # reads them and must already know the world size.
    if PartialState().use_distributed and training_args.deepspeed:
        import deepspeed

        deepspeed.init_distributed()  # reuses the process group PartialState just created
    trainer = build_trainer(script_args, training_args, model_args)
    try:
        trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
        trainer.save_model(training_args.output_dir)
        dataset_name = model_card_dataset(script_args)
        trainer.create_model_card(model_name=Path(training_args.output_dir).name, dataset_name=dataset_name)
        if training_args.push_to_hub:
            trainer.push_to_hub(dataset_name=dataset_name)
        # Finishes the trackers and leaves the process group (transformers >= 5.18, as `trl grpo` does).
        trainer.end()
    finally:
        close_rewards(trainer.reward_funcs)
    return trainer
