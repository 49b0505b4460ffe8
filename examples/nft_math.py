"""Train a model on math with NFT, the paper's recipe (arXiv 2505.18116), through `accelerate launch`.

    accelerate launch --config_file examples/accelerate_configs/zero3.yaml examples/nft_math.py \
        --config examples/recipes/qwen2.5-math-7b.yaml

Every `NFTConfig` / `GRPOConfig` / `TrainingArguments` option and every TRL `ModelConfig` option can be given in the
recipe YAML or on the command line (the command line wins). Script options are below (`ScriptArguments`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from accelerate import PartialState
from trl import ModelConfig, TrlParser, get_peft_config

from trl_nft import NFTConfig, NFTTrainer
from trl_nft.data import load_math_dataset
from trl_nft.rewards import MathAccuracyReward

logger = logging.getLogger("nft_math")


@dataclass
class ScriptArguments:
    dataset_name: str = field(
        default="dapo-math-17k",
        metadata={
            "help": "Training prompts: 'dapo-math-17k' (the paper's set, from the hub), 'gsm8k', a hub dataset name, or "
            "a local json/jsonl/parquet/csv file or directory with problem/answer (or question/answer) columns."
        },
    )
    dataset_split: str = field(default="train", metadata={"help": "Split of dataset_name to train on."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep only the first N training prompts."})
    prompt_format: str = field(
        default="chat",
        metadata={"help": "'chat' (conversational prompt, the tokenizer's chat template) or 'plain' text."},
    )
    eval_dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "Held-out benchmark evaluated during training (set eval_strategy='steps' and eval_steps), e.g. "
            "a math_eval jsonl such as math500.jsonl. eval 'reward' is then its accuracy."
        },
    )
    eval_dataset_split: str = field(default="test", metadata={"help": "Split of eval_dataset_name."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep only the first N eval problems."})
    answer_format: str = field(
        default="boxed",
        metadata={"help": "Answer extraction of the reward: 'boxed' (last \\boxed{}, the paper), 'gsm8k', 'auto'."},
    )
    reward_timeout: float = field(default=5.0, metadata={"help": "Seconds allowed to verify one completion."})
    reward_workers: int | None = field(default=None, metadata={"help": "Verifier processes (default: CPUs, max 8)."})


def build_trainer(script_args: ScriptArguments, training_args: NFTConfig, model_args: ModelConfig) -> NFTTrainer:
    """Datasets, reward and trainer for the given arguments (separate from `main` so tests can inspect it)."""
    model_init_kwargs = {"revision": model_args.model_revision, "attn_implementation": model_args.attn_implementation,
                         "dtype": model_args.dtype, "trust_remote_code": training_args.trust_remote_code}
    model_init_kwargs.update(training_args.model_init_kwargs or {})
    training_args.model_init_kwargs = {k: v for k, v in model_init_kwargs.items() if v is not None}

    train_dataset = load_math_dataset(script_args.dataset_name, split=script_args.dataset_split,
                                      prompt_format=script_args.prompt_format, limit=script_args.max_train_samples)
    eval_dataset = None
    if script_args.eval_dataset_name:
        eval_dataset = load_math_dataset(script_args.eval_dataset_name, split=script_args.eval_dataset_split,
                                         prompt_format=script_args.prompt_format, limit=script_args.max_eval_samples)
    elif training_args.eval_strategy != "no":
        raise ValueError(f"eval_strategy={training_args.eval_strategy!r} needs --eval_dataset_name")

    reward = MathAccuracyReward(answer_format=script_args.answer_format, timeout=script_args.reward_timeout,
                                num_workers=script_args.reward_workers)
    return NFTTrainer(
        model=model_args.model_name_or_path,
        reward_funcs=[reward],
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        peft_config=get_peft_config(model_args),
    )


def main(argv: list[str] | None = None) -> NFTTrainer:
    parser = TrlParser((ScriptArguments, NFTConfig, ModelConfig))
    script_args, training_args, model_args = parser.parse_args_and_config(args=argv)
    # Join the process group before the model is loaded: under ZeRO-3, `from_pretrained` partitions the weights as it
    # reads them and must already know the world size.
    if PartialState().use_distributed and training_args.deepspeed:
        import deepspeed

        deepspeed.init_distributed()  # reuses the process group PartialState just created
    trainer = build_trainer(script_args, training_args, model_args)
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)
    # Leave the process group together: a rank exiting while its communication threads still run can abort, and
    # the launcher then reports the whole run as failed.
    state = PartialState()
    if state.use_distributed:
        state.wait_for_everyone()
        state.destroy_process_group()
    return trainer


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
