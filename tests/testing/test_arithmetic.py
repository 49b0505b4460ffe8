"""The offline arithmetic testbed: buggy teacher, split, reward, evaluation and the accuracy callback."""

from __future__ import annotations

import math
import random
from types import SimpleNamespace

import pytest
import torch

from tests.conftest import tiny_args
from trl_nft.testing.arithmetic import (
    AdditionTask,
    HeldoutAccuracyCallback,
    HeldoutEvaluator,
    PolicyDiagnostics,
    UpdateNormCallback,
    build_model,
    build_testbed,
    build_tokenizer,
    correct_answer,
    count_carries,
    exact_match_reward,
    pass_at_k,
    pretraining_batch,
    sample_with_entropy,
    supervised_pretrain,
)

MICRO = dict(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)


def carry_free_sum(a: int, b: int) -> str:
    """What a teacher that drops every carry writes: each column mod 10."""
    digits = []
    while a or b:
        digits.append((a % 10 + b % 10) % 10)
        a, b = a // 10, b // 10
    return "".join(map(str, reversed(digits))).lstrip("0") or "0"


class OracleModel(torch.nn.Module):
    """Stands in for a policy in `generate`: answers with `solve(a, b)` then EOS, padding after it."""

    def __init__(self, tokenizer, solve):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # evaluation reads the device from the parameters
        self.tokenizer, self.solve = tokenizer, solve

    def generate(self, input_ids, attention_mask, max_new_tokens, **kwargs):
        prompts = self.tokenizer.batch_decode(input_ids, skip_special_tokens=True)
        rows = []
        for prompt in prompts:
            a, b = map(int, prompt.rstrip("=").split("+"))
            ids = self.tokenizer(self.solve(a, b), add_special_tokens=False)["input_ids"] + [self.tokenizer.eos_token_id]
            ids = ids[:max_new_tokens]
            rows.append(ids + [self.tokenizer.pad_token_id] * (max_new_tokens - len(ids)))
        return torch.cat([input_ids, torch.tensor(rows)], dim=1)


@pytest.mark.parametrize("rate", [0.0, 0.3, 1.0])
def test_teacher_drops_carries_at_the_configured_rate(rate):
    task = AdditionTask(num_digits=3, carry_bug_rate=rate)
    rng, tokenizer = random.Random(0), build_tokenizer()
    carries = dropped = 0
    for _ in range(40):
        batch = pretraining_batch(task, tokenizer, 100, rng)
        carries, dropped = carries + batch.carries, dropped + batch.dropped
    assert carries > 4000  # ~1.35 carries per 3-digit problem
    assert dropped / carries == pytest.approx(rate, abs=0.02)


def test_teacher_is_exact_without_bug_and_carry_free_with_certain_bug():
    rng = random.Random(0)
    exact, always_buggy = AdditionTask(carry_bug_rate=0.0), AdditionTask(carry_bug_rate=1.0)
    for a, b in [(999, 1), (372, 459), (500, 500), (123, 456), (987, 654)]:
        assert exact.teacher_answer(a, b, rng)[0] == correct_answer(a, b)
        assert always_buggy.teacher_answer(a, b, rng)[0] == carry_free_sum(a, b)
    assert always_buggy.teacher_answer(372, 459, rng)[0] == "721"
    assert count_carries(372, 459) == 2 and count_carries(123, 456) == 0


def test_heldout_split_is_disjoint_deterministic_and_sized():
    task = AdditionTask(num_digits=2, heldout_fraction=0.2)
    pairs = [(a, b) for a in range(10, 100) for b in range(10, 100)]
    share = sum(task.is_heldout(a, b) for a, b in pairs) / len(pairs)
    assert share == pytest.approx(0.2, abs=0.02)
    train = task.sample_problems(500, heldout=False, seed=1)
    heldout = task.sample_problems(500, heldout=True, seed=1)
    assert not set(train) & set(heldout)
    assert heldout == task.sample_problems(500, heldout=True, seed=1)


def test_pretraining_labels_are_the_answer_and_eos_only():
    tokenizer = build_tokenizer()
    batch = pretraining_batch(AdditionTask(carry_bug_rate=0.0), tokenizer, 8, random.Random(3))
    for ids, labels in zip(batch.input_ids, batch.labels):
        prompt = tokenizer.decode(ids[labels == -100], skip_special_tokens=True)
        answer_ids = labels[labels != -100].tolist()
        assert answer_ids[-1] == tokenizer.eos_token_id
        a, b = map(int, prompt.rstrip("=").split("+"))
        assert tokenizer.decode(answer_ids[:-1]) == correct_answer(a, b)


def test_exact_match_reward():
    assert exact_match_reward(["831", "721", "8310", "", " 831"], ["831"] * 5) == [1.0, 0.0, 0.0, 0.0, 1.0]


def test_evaluator_scores_an_oracle_one_and_a_carry_free_teacher_its_carry_free_share():
    tokenizer = build_tokenizer()
    task = AdditionTask(num_digits=3)
    evaluator = HeldoutEvaluator(tokenizer, task, num_problems=64, samples_per_prompt=2)
    assert evaluator(OracleModel(tokenizer, correct_answer)) == {"greedy": 1.0, "sampled": 1.0}
    carry_free_share = sum(count_carries(int(p[:3]), int(p[4:7])) == 0 for p in evaluator.prompts) / 64
    assert 0 < carry_free_share < 1
    assert evaluator(OracleModel(tokenizer, carry_free_sum))["greedy"] == pytest.approx(carry_free_share)


def test_supervised_pretraining_learns_and_is_deterministic():
    tokenizer = build_tokenizer()
    task = AdditionTask(num_digits=2)
    runs = []
    for _ in range(2):
        model = build_model(tokenizer, seed=0, **MICRO)
        runs.append(supervised_pretrain(model, tokenizer, task, steps=40, batch_size=32, learning_rate=1e-2, seed=0))
    assert runs[0] == runs[1]
    assert sum(runs[0][-5:]) / 5 < 0.8 * sum(runs[0][:5]) / 5  # measured: 2.55 -> 1.85


def test_testbed_cache_reuses_the_pretrained_weights(tmp_path):
    common = dict(task=AdditionTask(num_digits=2), pretrain_steps=3, num_train_prompts=16, num_eval_problems=8,
                  model_size=MICRO, cache_dir=tmp_path)
    first = build_testbed(**common)
    assert len(list(tmp_path.glob("pretrained-*.pt"))) == 1
    second = build_testbed(**common)
    for name, tensor in first.model.state_dict().items():
        assert torch.equal(tensor, second.model.state_dict()[name])
    assert second.pretraining_losses == first.pretraining_losses


def test_accuracy_callback_records_the_curve_during_nft_training(tmp_path):
    from trl_nft import NFTConfig, NFTTrainer

    testbed = build_testbed(AdditionTask(num_digits=2), pretrain_steps=5, num_train_prompts=32,
                            num_eval_problems=8, model_size=MICRO)
    callback = HeldoutAccuracyCallback(testbed.evaluator, every=2)
    rng_state = torch.random.get_rng_state()
    testbed.evaluator(testbed.model)
    assert torch.equal(rng_state, torch.random.get_rng_state())  # evaluation must not perturb training's RNG
    args = tiny_args(NFTConfig, tmp_path, max_steps=3, max_completion_length=4, steps_per_generation=2)
    trainer = NFTTrainer(model=testbed.model, reward_funcs=exact_match_reward, args=args,
                         train_dataset=testbed.train_dataset, processing_class=testbed.tokenizer,
                         callbacks=[callback])
    trainer.train()
    assert [record["step"] for record in callback.history] == [0, 2, 3]
    assert all(0.0 <= record[m] <= 1.0 for record in callback.history for m in ("greedy", "sampled"))


class ScriptedPolicy(OracleModel):
    """`OracleModel` answering through `generate(..., return_dict_in_generate=True)`: its logits put all mass
    (up to e^-50) on the scripted token, so its entropy is ~0."""

    def generate(self, input_ids, attention_mask, max_new_tokens, **kwargs):
        sequences = super().generate(input_ids, attention_mask, max_new_tokens)
        new_tokens = sequences[:, input_ids.size(1) :]
        logits = torch.nn.functional.one_hot(new_tokens, len(self.tokenizer)).float() * 50.0
        return SimpleNamespace(sequences=sequences, logits=tuple(logits.unbind(1)))


def test_pass_at_k_is_the_unbiased_estimator():
    assert pass_at_k(8, 0, 4) == 0.0 and pass_at_k(8, 8, 1) == 1.0 and pass_at_k(8, 1, 8) == 1.0
    assert pass_at_k(4, 2, 1) == pytest.approx(0.5)
    assert pass_at_k(4, 1, 2) == pytest.approx(1 - 3 / 6)  # 1 − C(3,2)/C(4,2)
    with pytest.raises(ValueError, match="k=5"):
        pass_at_k(4, 1, 5)
    with pytest.raises(ValueError, match="num_correct=5"):
        pass_at_k(4, 5, 2)


def test_diagnostics_split_carry_problems_and_see_no_entropy_in_a_certain_policy():
    tokenizer = build_tokenizer()
    task = AdditionTask(num_digits=3)
    diagnostics = PolicyDiagnostics(tokenizer, task, num_problems=32, samples_per_prompt=4, k=2)
    oracle = diagnostics(ScriptedPolicy(tokenizer, correct_answer))
    assert oracle == pytest.approx({"pass@1": 1.0, "pass@2": 1.0, "sampled_affected": 1.0,
                                    "sampled_unaffected": 1.0, "entropy": 0.0}, abs=1e-12)
    buggy = diagnostics(ScriptedPolicy(tokenizer, carry_free_sum))
    carry_free_share = sum(not hit for hit in diagnostics.affected) / 32
    assert 0 < carry_free_share < 1
    assert buggy["sampled_affected"] == 0.0 and buggy["sampled_unaffected"] == 1.0
    assert buggy["pass@1"] == pytest.approx(carry_free_share)
    with pytest.raises(ValueError, match="PolicyDiagnostics.k=5"):
        PolicyDiagnostics(tokenizer, task, samples_per_prompt=4, k=5)


def test_sampled_entropy_of_a_uniform_policy_is_log_vocab_and_stops_at_eos():
    tokenizer = build_tokenizer()
    model = build_model(tokenizer, seed=0, **MICRO)
    model.lm_head.weight.data.zero_()  # all logits 0: the uniform distribution at every position
    answers, entropy_sums, token_counts = sample_with_entropy(model, tokenizer, ["12+34="] * 64, max_new_tokens=4)
    vocab = model.config.vocab_size
    for answer, entropy, tokens in zip(answers, entropy_sums, token_counts):
        assert 1 <= tokens <= 4 and len(answer) <= tokens
        assert entropy == pytest.approx(tokens * math.log(vocab), rel=1e-5)
    assert min(token_counts) < 4  # some samples hit EOS early: later positions are not counted


def test_update_norm_callback_measures_the_parameter_change_of_each_step():
    model = torch.nn.Linear(3, 2)
    callback = UpdateNormCallback()
    for delta in (0.5, 0.0):
        callback.on_step_begin(None, None, None, model=model)
        with torch.no_grad():
            model.weight.add_(delta)  # 6 entries moved by delta: norm = delta * sqrt(6)
        callback.on_step_end(None, None, None, model=model)
    assert callback.norms == pytest.approx([0.5 * math.sqrt(6), 0.0])
