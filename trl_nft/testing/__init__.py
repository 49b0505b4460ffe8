"""Helpers for tests, benchmarks and the offline demo, not for training real models (as `transformers.testing_utils`):

* `tiny_models`: random-init Qwen2-style models with a character tokenizer or the real Qwen2.5 tokenizer;
* `arithmetic`: the offline carry-bug addition testbed (task, pretraining, held-out accuracy, callbacks);
* `readme_snippets`: runs the README's Python snippets offline (the README test, CI's check of the installed wheel).
"""
