"""A reward function that records which process called it, for the test of `trl-nft train`'s launcher.

Passed by dotted path (``--reward_funcs math_accuracy_reward tests.scripts.launch_probe.record_process``). Each call
writes the calling process's rank, world size and launch environment to ``$NFT_LAUNCH_PROBE_DIR/rank<RANK>.json``;
its reward is always 0 (the weighted sum with the math reward stays in [0, 1]).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

RECORDED = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "TRL_NFT_LAUNCHED", "ACCELERATE_USE_DEEPSPEED",
            "ACCELERATE_DEEPSPEED_ZERO_STAGE", "ACCELERATE_MIXED_PRECISION")


def record_process(completions, **kwargs) -> list[float]:
    folder = Path(os.environ["NFT_LAUNCH_PROBE_DIR"])
    record = {name: os.environ.get(name) for name in RECORDED}
    record["pid"] = os.getpid()
    (folder / f"rank{os.environ.get('RANK', 'none')}.json").write_text(json.dumps(record))
    return [0.0 for _ in completions]
