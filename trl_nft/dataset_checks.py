"""Checks of the datasets given to `NFTTrainer`, run at construction instead of failing on the first step.

TRL reads each row's ``prompt`` and hands every other column to the reward functions; a missing column or a chat
prompt without a chat template otherwise surfaces as a bare ``KeyError: 'prompt'`` or a transformers template error
deep inside the first generation step.

Streaming (iterable) datasets are checked from what they declare (column names, features) without reading a row: a
read at construction would open the stream (a download, a generator's side effects) before training starts.
"""

from __future__ import annotations

from trl.data_utils import is_conversational

BUILD_HINT = "trl_nft.math_recipe.data.load_math_dataset(...) builds prompt/answer columns from problem/answer files"


def require_chat_template(tokenizer, context: str) -> None:
    """ValueError, starting with `context` and naming the fix, when `tokenizer` has no chat template."""
    if getattr(tokenizer, "chat_template", None):
        return
    name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
    raise ValueError(
        f"{context}, but the tokenizer {name!r} has no chat template to render them. Use plain-text prompts "
        "(load_math_dataset(..., prompt_format='plain'), --prompt_format plain), or set tokenizer.chat_template."
    )


def _columns(dataset) -> list[str] | None:
    columns = getattr(dataset, "column_names", None)
    return list(columns) if columns is not None else None  # an IterableDataset may not know its columns


def _is_chat_feature(feature) -> bool:
    """Whether a declared `datasets` feature holds conversations: a list of {"role", "content", ...} messages."""
    message = feature[0] if isinstance(feature, list) and feature else getattr(feature, "feature", None)
    return isinstance(message, dict) and "role" in message


def _holds_conversational_prompts(dataset) -> bool:
    if not hasattr(dataset, "__len__"):  # a stream: judge from its declared features, never from a row
        features = getattr(dataset, "features", None) or {}
        return _is_chat_feature(features.get("prompt"))
    return len(dataset) > 0 and is_conversational(dataset[0])


def check_dataset(dataset, name: str, reward_funcs, processing_class, prompts_from_environment: bool = False) -> None:
    """Raise a ValueError naming the dataset, the column and the fix if `dataset` cannot be trained on.

    `prompts_from_environment`: the trainer has an `environment_factory`, whose `reset()` may supply each prompt, so
    (as in TRL) a dataset needs no 'prompt' column.
    """
    columns = _columns(dataset)
    if columns is None:
        return
    if "prompt" not in columns and not prompts_from_environment:
        raise ValueError(
            f"{name} has no 'prompt' column (its columns are {columns}); TRL generates from each row's 'prompt'. "
            f"Rename the column holding the prompts, e.g. dataset.rename_column('question', 'prompt'), or: {BUILD_HINT}."
        )
    for reward in reward_funcs:
        # Verifiers declare the columns they may read the gold answer from (`MathAccuracyReward.gold_columns`).
        gold_columns = getattr(reward, "gold_columns", None)
        if gold_columns and not set(gold_columns) & set(columns):
            wanted = " (or ".join(repr(c) for c in gold_columns) + ")" * (len(gold_columns) - 1)
            raise ValueError(
                f"{name} has no {wanted} column (its columns are {columns}), which {reward.__name__} compares "
                f"completions with. Rename the gold-answer column to {gold_columns[0]!r}, or: {BUILD_HINT}."
            )
    if _holds_conversational_prompts(dataset):
        require_chat_template(processing_class, f"{name} holds conversational prompts")


def check_trainer_datasets(trainer) -> None:
    """`check_dataset` on the trainer's train and eval datasets (a dict of eval datasets is checked per entry)."""
    # TRL's own condition for a row without a prompt (`GRPOTrainer._generate_and_score_completions`)
    prompts_from_environment = getattr(trainer, "environment_factories", None) is not None
    datasets = {"train_dataset": trainer.train_dataset}
    eval_dataset = trainer.eval_dataset
    if isinstance(eval_dataset, dict):
        datasets.update({f"eval_dataset[{key!r}]": value for key, value in eval_dataset.items()})
    else:
        datasets["eval_dataset"] = eval_dataset
    for name, dataset in datasets.items():
        if dataset is not None:
            check_dataset(dataset, name, trainer.reward_funcs, trainer.processing_class, prompts_from_environment)
