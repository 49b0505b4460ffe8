"""NFTTrainer with the real Qwen2.5 tokenizer: a completion of only the stop token; no full-vocabulary logits."""

from __future__ import annotations

import math

import torch
from datasets import Dataset
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from tests.conftest import tiny_args
from trl_nft import NFTConfig, NFTTrainer
from trl_nft.rewards import completion_text, math_accuracy_reward
from trl_nft.testing.tiny_models import build_tiny_qwen2


def test_completion_of_only_the_stop_token_is_a_wrong_answer(qwen_tokenizer, tmp_path):
    model = build_tiny_qwen2(qwen_tokenizer, hidden_size=16, intermediate_size=32, num_layers=1)
    model.generation_config.eos_token_id = [qwen_tokenizer.eos_token_id, qwen_tokenizer.pad_token_id]
    received = []

    def recording_math_reward(prompts, completions, completion_ids, answer, **kwargs):
        received.extend(zip(completions, completion_ids))
        return math_accuracy_reward(completions, answer=answer)

    dataset = Dataset.from_dict({
        "prompt": [[{"role": "user", "content": f"What is {n}+{n}?"}] for n in range(4)],
        "answer": [str(2 * n) for n in range(4)],
    })
    stop = qwen_tokenizer.convert_tokens_to_ids("<|im_end|>")
    # A huge bias on <|im_end|>: every completion is that one token and nothing else.
    args = tiny_args(NFTConfig, tmp_path, per_device_train_batch_size=8, num_generations=4, max_completion_length=8,
                     generation_kwargs={"sequence_bias": [[[stop], 100.0]]})
    trainer = NFTTrainer(model=model, reward_funcs=recording_math_reward, args=args, train_dataset=dataset,
                         processing_class=qwen_tokenizer)
    trainer.train()

    # chat prompts give chat completions: one assistant message whose text is empty (the stop token is not text)
    assert received and all(completion_text(message) == "" and list(ids) == [stop] for message, ids in received)
    log = next(entry for entry in trainer.state.log_history if "loss" in entry)
    assert log["completions/mean_length"] == 1.0 and log["completions/clipped_ratio"] == 0.0  # stopped, not cut
    assert log["rewards/recording_math_reward/mean"] == 0.0  # an empty answer is wrong, not unscorable
    assert log["nft/degenerate_group_frac"] == 1.0 and log["loss"] == 0.0 and math.isfinite(log["entropy"])


class LargestOpOutput(TorchDispatchMode):
    """Records the element count of the largest tensor any aten op returns (forward and backward)."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        output = func(*args, **(kwargs or {}))
        for value in tree_leaves(output):
            if isinstance(value, torch.Tensor):
                self.largest = max(self.largest, value.numel())
        return output


def test_training_step_never_materialises_the_full_logits(qwen_tokenizer, tmp_path):
    """No op of a training step (generation, loss, backward) returns a (batch × tokens × vocabulary) tensor.

    TRL computes log-probabilities through its fused LM head in vocabulary tiles; NFT must not undo that (e.g. by
    asking the model for logits). The largest op output must stay well below one micro-batch's full logits.
    """
    model = build_tiny_qwen2(qwen_tokenizer, hidden_size=16, intermediate_size=32, num_layers=1)
    dataset = Dataset.from_dict({"prompt": [f"{n} plus {n} is" for n in range(8)]})
    batch, completion_tokens = 4, 32
    args = tiny_args(NFTConfig, tmp_path, per_device_train_batch_size=batch, num_generations=2,
                     max_completion_length=completion_tokens, max_steps=1)
    trainer = NFTTrainer(model=model, reward_funcs=lambda completions, **kwargs: [1.0, 0.0] * (len(completions) // 2),
                         args=args, train_dataset=dataset, processing_class=qwen_tokenizer)
    with LargestOpOutput() as tracker:
        trainer.train()
    prompt_tokens = min(len(qwen_tokenizer(text).input_ids) for text in dataset["prompt"])
    full_logits = batch * (prompt_tokens + completion_tokens) * len(qwen_tokenizer)
    assert tracker.largest < full_logits / 2, (tracker.largest, full_logits)
    # ... while the tracker did see the LM head's tiles (every token against a slice of the vocabulary)
    assert tracker.largest >= batch * completion_tokens * 1024
