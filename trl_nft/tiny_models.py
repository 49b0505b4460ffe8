"""Tiny, offline models for tests, demos and benchmarks: a character tokenizer and a random-init Qwen2 model.

Nothing here touches a model hub: the tokenizer is built with the `tokenizers` library from an alphabet.
"""

from __future__ import annotations

import string

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


def save_tiny_model(path, tokenizer=None, **model_kwargs) -> str:
    """Build a tiny model + tokenizer and save both under `path` (so it can be loaded by name like a hub model)."""
    tokenizer = tokenizer or build_char_tokenizer()
    model = build_tiny_qwen2(tokenizer, **model_kwargs)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)
