"""Helpers for the drop-in scenarios: what a GRPOTrainer user relies on, checked on NFTTrainer runs.

Each scenario trains a tiny model the way people use `GRPOTrainer` and checks, through `trains`, that the parameters
move when some group is mixed and that the expected metrics were logged; `captured_warnings` collects what the user
would see, so a scenario can assert that no warning false for NFT is among it.
"""

from __future__ import annotations

import contextlib
import logging
import re
import warnings

import torch
from trl.chat_template_utils import qwen2_5_chat_template

from trl_nft.testing.tiny_models import build_char_tokenizer

# Claims TRL makes about GRPO's objective that do not hold for NFT's (see trl_nft/grpo_warnings.py).
FALSE_FOR_NFT = (re.compile(r"weights each sequence by its completion length"),)

NFT_METRICS = ("nft/positive_loss", "nft/negative_loss", "nft/correct_rate_mean", "nft/degenerate_group_frac",
               "nft/ratio_mean", "entropy", "reward")


def chat_tokenizer():
    """The tests' character tokenizer with Qwen2.5's chat template (it renders tools and tool calls)."""
    tokenizer = build_char_tokenizer()
    tokenizer.chat_template = qwen2_5_chat_template
    return tokenizer


# A call of the scenarios' `increment(step)` tool in the chat template's format.
TOOL_CALL = '<tool_call>\n{"name": "increment", "arguments": {"step": 1}}\n</tool_call>'


def scripted_generate(tokenizer):
    """A stand-in for `model.generate` (the tiny model cannot write tool calls): the first turn of each group of
    four is tool call, plain answer, tool call, plain answer; a turn after a tool result is a final answer."""
    def encode(text):
        return tokenizer(text + tokenizer.eos_token)["input_ids"]

    first_turn = [encode(TOOL_CALL), encode("No."), encode(TOOL_CALL), encode("No.")]
    after_tool = encode("Done!")

    def generate(input_ids, **kwargs):
        rows = input_ids.shape[0]
        tool_turn = "<tool_response>" in tokenizer.decode(input_ids[0])  # how the template renders a tool result
        completions = [after_tool] * rows if tool_turn else first_turn * (rows // 4)
        width = max(len(ids) for ids in completions)
        padded = [ids + [tokenizer.pad_token_id] * (width - len(ids)) for ids in completions]
        return torch.cat([input_ids, torch.tensor(padded, device=input_ids.device)], dim=1)

    return generate


def logged(trainer, key) -> list:
    return [entry[key] for entry in trainer.state.log_history if key in entry]


def trainable_snapshot(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def trains(trainer, expected_metrics=NFT_METRICS) -> None:
    """Train, then check what a GRPO user relies on: a mixed group was seen, every trainable parameter moved, and the
    expected metrics were logged."""
    before = trainable_snapshot(trainer.model)
    trainer.train()
    assert before, "no trainable parameters"
    assert min(logged(trainer, "nft/degenerate_group_frac")) < 1.0, "no group had both right and wrong answers"
    params = dict(trainer.model.named_parameters())
    unchanged = [name for name, value in before.items() if torch.equal(params[name].detach(), value)]
    assert unchanged == [], f"parameters that did not change: {unchanged}"
    missing = [key for key in expected_metrics if not logged(trainer, key)]
    assert missing == [], f"metrics not logged: {missing}"


@contextlib.contextmanager
def captured_warnings():
    """Python warnings and WARNING log records (TRL, transformers, accelerate, trl_nft) raised in the block."""
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())

    handler = Collect(level=logging.WARNING)
    loggers = [logging.getLogger(), logging.getLogger("transformers")]  # transformers' does not propagate to the root
    for logger in loggers:
        logger.addHandler(handler)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield messages
        finally:
            for logger in loggers:
                logger.removeHandler(handler)
            messages.extend(str(w.message) for w in caught)


def false_for_nft(messages) -> list[str]:
    return [m for m in dict.fromkeys(messages) if any(pattern.search(m) for pattern in FALSE_FOR_NFT)]
