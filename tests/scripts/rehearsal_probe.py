"""A reward function for the production rehearsal that records what reward functions receive.

Passed to `examples/nft_math.py` by dotted path (``--reward_funcs dapo_math_reward
tests.scripts.rehearsal_probe.decoded_text_probe``). Every call appends, per completion, the prompt, the decoded
completion text and its token ids to ``$NFT_REHEARSAL_PROBE_DIR/rank<RANK>.jsonl``. Its reward — 1 for an even
number of decoded characters — only gives the random-init stand-in model informative groups (the math reward is
always 0 for it), so dynamic sampling and the NFT loss have something to work on.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from trl_nft.rewards import completion_text


def decoded_text_probe(prompts, completions, completion_ids, **kwargs) -> list[float]:
    folder = Path(os.environ["NFT_REHEARSAL_PROBE_DIR"])
    step = kwargs["trainer_state"].global_step
    with (folder / f"rank{os.environ.get('RANK', '0')}.jsonl").open("a") as handle:
        for prompt, completion, ids in zip(prompts, completions, completion_ids):
            handle.write(json.dumps({"step": step, "prompt": prompt, "completion": completion_text(completion),
                                     "completion_ids": list(ids)}) + "\n")
    return [float(len(completion_text(completion)) % 2 == 0) for completion in completions]
