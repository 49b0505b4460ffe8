"""Dynamic sampling (DAPO-style, as the official NFT runs): every generation batch filled with informative groups.

* `mixin`: `DynamicSamplingMixin`, the trainer part (generation rounds, carried-over groups, metrics);
* `rows`: moving rows of TRL's batches between rounds and processes;
* `prompt_stream`: refill prompts drawn like a dataloader;
* `round_sizing`: how many prompts each round generates.

Turned on with `NFTConfig(dynamic_sampling=True)`.
"""
