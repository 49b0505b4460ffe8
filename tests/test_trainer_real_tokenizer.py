"""NFTTrainer with the real Qwen2.5 tokenizer: a completion that is only the stop token trains as a wrong answer."""

from __future__ import annotations

import math

from datasets import Dataset

from tests.conftest import tiny_args
from trl_nft import NFTConfig, NFTTrainer
from trl_nft.rewards import completion_text, math_accuracy_reward
from trl_nft.tiny_models import build_tiny_qwen2


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
