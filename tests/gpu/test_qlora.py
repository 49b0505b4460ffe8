"""LoRA and QLoRA (4-bit base weights through bitsandbytes) train with NFT in bf16: one step from a saved model.

The model is loaded by path, as `trl-nft train --use_peft true --load_in_4bit true` loads it: the trainer's
`quantization_config` goes to `from_pretrained`, and PEFT wraps the loaded model. Only the adapters may change.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch
from datasets import Dataset

from tests.conftest import first_char_parity_reward
from tests.gpu.conftest import TINY_QWEN, gpu_args, require_cuda
from trl_nft import NFTConfig, NFTTrainer
from trl_nft.testing.tiny_models import save_tiny_model

pytestmark = pytest.mark.gpu

peft = pytest.importorskip("peft")


def train_one_adapter_step(path, tokenizer, device, tmp_path, quantization_config=None):
    dataset = Dataset.from_dict({"prompt": [f"{a} plus {b} is" for a in range(4) for b in range(2)]})
    model_init_kwargs = {"dtype": torch.bfloat16}
    if quantization_config is not None:
        model_init_kwargs["device_map"] = {"": torch.cuda.current_device()}
    args = gpu_args(NFTConfig, tmp_path / "run", device, per_device_train_batch_size=8, num_generations=4,
                    max_completion_length=8, optim="adamw_torch", learning_rate=1e-2,
                    model_init_kwargs=model_init_kwargs)
    lora = peft.LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    trainer = NFTTrainer(model=str(path), reward_funcs=first_char_parity_reward, args=args, train_dataset=dataset,
                         processing_class=tokenizer, peft_config=lora, quantization_config=quantization_config)
    before = {name: p.detach().float().clone() for name, p in trainer.model.named_parameters()}
    trainer.train()
    after = {name: p.detach().float() for name, p in trainer.model.named_parameters()}
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    log = next(entry for entry in trainer.state.log_history if "loss" in entry)
    return trainer, changed, log


def assert_only_adapters_trained(changed, log):
    assert changed, "one step must change the adapters"
    assert all("lora_" in name for name in changed), sorted(changed)
    assert torch.isfinite(torch.tensor(log["loss"])) and log["nft/degenerate_group_frac"] < 1.0


def test_lora_step_in_bf16(device, qwen_tokenizer, tmp_path):
    path = save_tiny_model(tmp_path / "model", tokenizer="qwen2.5", **TINY_QWEN)
    _, changed, log = train_one_adapter_step(path, qwen_tokenizer, device, tmp_path)
    assert_only_adapters_trained(changed, log)


def test_qlora_4bit_loading_and_step(device, qwen_tokenizer, tmp_path):
    require_cuda(device, "4-bit loading through bitsandbytes")
    if importlib.util.find_spec("bitsandbytes") is None:
        pytest.skip("bitsandbytes is not installed (the quantization extra)")
    import bitsandbytes
    from transformers import BitsAndBytesConfig

    path = save_tiny_model(tmp_path / "model", tokenizer="qwen2.5", **TINY_QWEN)
    four_bit = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
    trainer, changed, log = train_one_adapter_step(path, qwen_tokenizer, device, tmp_path, four_bit)
    quantized = [m for m in trainer.model.modules() if isinstance(m, bitsandbytes.nn.Linear4bit)]
    assert quantized, "the base model's linear layers must be loaded in 4 bits"
    assert_only_adapters_trained(changed, log)
