"""Train the tiny model with a checkpoint every step into `output_dir` (meant to sit on a filesystem too small for
two checkpoints); print, last, one JSON line: the error (type, errno, message) and which checkpoints are complete."""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")

from datasets import Dataset  # noqa: E402

from trl_nft import NFTConfig, NFTTrainer, checkpoints  # noqa: E402
from trl_nft.testing.tiny_models import build_char_tokenizer, build_tiny_qwen2  # noqa: E402


def length_parity_reward(completions, **kwargs):
    return [float(len(completion) % 2) for completion in completions]


def main(output_dir: str, max_steps: int, resume: str | None) -> None:
    tokenizer = build_char_tokenizer()
    args = NFTConfig(output_dir=output_dir, use_cpu=True, per_device_train_batch_size=8, num_generations=4,
                     max_completion_length=6, max_steps=max_steps, save_strategy="steps", save_steps=1, report_to=[],
                     seed=0, disable_tqdm=True, save_total_limit=1)
    trainer = NFTTrainer(model=build_tiny_qwen2(tokenizer, seed=0), reward_funcs=length_parity_reward, args=args,
                         train_dataset=Dataset.from_dict({"prompt": [f"{a}+{b}=" for a in range(4) for b in range(4)]}),
                         processing_class=tokenizer)
    error = None
    try:
        trainer.train(resume_from_checkpoint=resume)
    except Exception as raised:  # noqa: BLE001 - reported to the test as data
        error = {"type": type(raised).__name__, "errno": getattr(raised, "errno", None), "message": str(raised)}
    print(json.dumps({"error": error, "global_step": trainer.state.global_step,
                      "complete": {os.path.basename(path): checkpoints.is_complete(path)
                                   for _, path in checkpoints.checkpoint_folders(output_dir)}}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else None)
