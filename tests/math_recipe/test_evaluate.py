"""Tests for trl_nft.math_recipe.evaluate: a tiny random model runs end to end, and an oracle generator scores 100%."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from trl_nft.math_recipe.evaluate import BENCHMARKS, evaluate_benchmarks, main, markdown_table, render_prompts

from tests.conftest import SHARED_DATA

MATH_EVAL = SHARED_DATA / "math_eval"
PAPER_HEADER = "| Model | AIME24 | MATH500 | AIME25 | AMC23 | Olympiad | Minerva | Avg |"


@pytest.fixture
def data_dir():
    if not MATH_EVAL.is_dir():
        pytest.skip(f"shared benchmark data not found at {MATH_EVAL}")
    return MATH_EVAL


def _oracle(data_dir: Path, limit: int):
    """A generator that answers every benchmark prompt with its gold answer in a box."""
    from trl_nft.math_recipe.data import load_math_dataset

    gold_by_prompt = {}
    for name in BENCHMARKS:
        dataset = load_math_dataset(data_dir / f"{name}.jsonl", prompt_format="plain", limit=limit)
        gold_by_prompt.update(zip(dataset["prompt"], dataset["answer"]))
    return lambda prompts: [f"Reasoning... so the answer is $\\boxed{{{gold_by_prompt[p]}}}$." for p in prompts]


def test_oracle_scores_100_on_every_benchmark_with_paper_k(data_dir):
    results = evaluate_benchmarks(_oracle(data_dir, limit=3), data_dir, limit=3)
    assert list(results["benchmarks"]) == list(BENCHMARKS)
    for name, entry in results["benchmarks"].items():
        assert entry["accuracy"] == 100.0, name
        assert entry["k"] == BENCHMARKS[name].paper_samples
        assert entry["num_samples"] == 3 * entry["k"]
    assert results["average"] == 100.0
    assert results["benchmarks"]["aime24"]["k"] == 32 and results["benchmarks"]["math500"]["k"] == 1


def test_wrong_generator_scores_zero_and_table_keeps_paper_order(data_dir):
    results = evaluate_benchmarks(
        lambda prompts: [r"\boxed{-123456789}" for _ in prompts],
        data_dir,
        benchmarks=["math500", "aime24"],
        n_samples_override=2,
        limit=2,
    )
    assert results["benchmarks"]["aime24"]["accuracy"] == 0.0
    table = markdown_table(results, "wrong")
    assert table.splitlines()[0] == PAPER_HEADER
    assert table.splitlines()[2] == "| wrong | 0.0 | 0.0 | – | – | – | – | 0.0 |"


def test_prompts_use_the_chat_template_only_when_there_is_one(data_dir):
    from trl_nft.math_recipe.data import load_math_dataset
    from trl_nft.testing.tiny_models import build_char_tokenizer

    dataset = load_math_dataset(data_dir / "aime24.jsonl", limit=1)
    tokenizer = build_char_tokenizer()
    plain = render_prompts(dataset, tokenizer)
    assert plain == render_prompts(dataset, None)
    tokenizer.chat_template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}<assistant>"
    templated = render_prompts(dataset, tokenizer)
    assert templated[0] == f"<user>{plain[0]}<assistant>"


def test_tiny_random_model_runs_every_benchmark_from_the_command_line(data_dir, tmp_path, capsys):
    from trl_nft.testing.tiny_models import build_char_tokenizer, build_tiny_qwen2

    tokenizer = build_char_tokenizer()
    model = build_tiny_qwen2(tokenizer, seed=0)
    model_dir = tmp_path / "tiny-qwen2"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    output = tmp_path / "eval" / "results.json"

    results = main(
        [
            "--model", str(model_dir), "--data_dir", str(data_dir), "--output", str(output),
            "--backend", "transformers", "--limit", "2", "--max_new_tokens", "8",
            "--n_samples_override", "1", "--batch_size", "2",
        ]
    )  # fmt: skip

    saved = json.loads(output.read_text())
    assert saved["backend"] == "transformers"
    assert saved["sampling"]["max_new_tokens"] == 8
    assert list(saved["benchmarks"]) == list(BENCHMARKS)
    for entry in saved["benchmarks"].values():
        assert entry["num_problems"] == 2 and entry["num_samples"] == 2
        assert 0.0 <= entry["accuracy"] <= 100.0
    assert saved["average"] == results["average"]
    table = output.with_suffix(".md").read_text()
    assert table.splitlines()[0] == PAPER_HEADER
    assert PAPER_HEADER in capsys.readouterr().out


@pytest.mark.parametrize(
    "size, expected",
    [("7b", dict(temperature=0.6, top_p=0.7, max_new_tokens=3584)),  # NFT_7B: 4096 context - 512 prompt tokens
     ("32b", dict(temperature=1.0, top_p=0.7, max_new_tokens=7168))],  # NFT_32B: 8192 context - 1024
)
def test_paper_settings_per_model_size(size, expected):
    from trl_nft.math_recipe.evaluate import build_parser, sampling_settings

    settings = sampling_settings(build_parser().parse_args(["--model", "m", "--data_dir", "d", "--paper_settings", size]))
    assert {key: getattr(settings, key) for key in expected} == expected
    overridden = sampling_settings(build_parser().parse_args(
        ["--model", "m", "--data_dir", "d", "--paper_settings", size, "--temperature", "0.0"]))
    assert overridden.temperature == 0.0 and overridden.max_new_tokens == expected["max_new_tokens"]


def test_dashed_spellings_are_still_accepted():
    from trl_nft.math_recipe.evaluate import build_parser

    dashed = build_parser().parse_args(["--model", "m", "--data-dir", "d", "--max-new-tokens=8", "--top-p", "0.5",
                                        "--n-samples-override", "2", "--paper-settings", "32b"])
    underscored = build_parser().parse_args(["--model", "m", "--data_dir", "d", "--max_new_tokens", "8", "--top_p",
                                             "0.5", "--n_samples_override", "2", "--paper_settings", "32b"])
    assert dashed == underscored
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--model", "m", "--max-new-token", "8"])  # a misspelling stays an error


def test_the_benchmarks_come_from_the_hub_by_default(fake_hub):
    from tests.math_recipe.hub_fixtures import synthetic

    hub = fake_hub({name: synthetic(name) for name in BENCHMARKS})
    gold = {}
    for name in BENCHMARKS:
        from trl_nft.math_recipe.benchmarks import load_benchmark

        dataset = load_benchmark(name, limit=2, prompt_format="plain")
        gold.update(zip(dataset["prompt"], dataset["answer"]))
    results = evaluate_benchmarks(lambda prompts: [f"\\boxed{{{gold[p]}}}" for p in prompts], limit=2)
    assert results["average"] == 100.0 and list(results["benchmarks"]) == list(BENCHMARKS)
    assert {call[0] for call in hub.calls} == {b.hub_id for b in BENCHMARKS.values()}


def test_download_to_writes_the_files_without_a_model(fake_hub, tmp_path, capsys):
    from tests.math_recipe.hub_fixtures import synthetic

    fake_hub({name: synthetic(name) for name in BENCHMARKS})
    result = main(["--download_to", str(tmp_path / "math_eval"), "--benchmarks", "aime24,amc23"])
    assert sorted(Path(path).name for path in result["downloaded"]) == ["aime24.jsonl", "amc23.jsonl"]
    assert f"--data_dir {tmp_path / 'math_eval'}" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--benchmarks", "aime24"])  # no --model, no --download_to
    assert "--model is required" in capsys.readouterr().err


# ----------------------------------------------------------------------------- scoring at an intermediate accuracy
# Per benchmark, per problem, the k = 4 samples' outcomes: "right", "wrong" (boxed), "none" (no final answer) or
# "ungradable" (the verifier returns None, as when math-verify cannot parse the gold answer).
SCORING_PLAN = {
    "aime24": [["ungradable"] * 4, ["right", "wrong", "none", "right"],  # an ungradable problem before others
               ["right", "right", "right", "wrong"]],
    "math500": [["wrong", "none", "none", "wrong"], ["right", "wrong", "wrong", "wrong"],
                ["right", "right", "right", "wrong"]],
}
OUTCOME_SCORE = {"right": 1.0, "wrong": 0.0, "none": 0.0, "ungradable": None}


def outcome_completion(outcome: str) -> str:
    return "I give up." if outcome == "none" else f"so the answer is $\\boxed{{{outcome}}}$"


def write_scoring_benchmarks(directory: Path) -> None:
    """Three problems per benchmark, named so that the generator can tell them apart."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, problems in SCORING_PLAN.items():
        rows = [{"problem": f"{name} problem {index}", "answer": str(index)} for index in range(len(problems))]
        (directory / f"{name}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))


def planned_generator():
    """Answers the j-th request of a problem's prompt with the plan's j-th outcome (k requests per prompt)."""
    asked = {}

    def generate(prompts):
        completions = []
        for prompt in prompts:
            name, index = next((n, i) for n, problems in SCORING_PLAN.items() for i in range(len(problems))
                               if f"{n} problem {i}" in prompt)
            sample = asked.get(prompt, 0)
            asked[prompt] = sample + 1
            completions.append(outcome_completion(SCORING_PLAN[name][index][sample]))
        return completions

    return generate


def outcome_reward(completions, answer, **kwargs):
    by_completion = {outcome_completion(outcome): score for outcome, score in OUTCOME_SCORE.items()}
    return [by_completion[completion] for completion in completions]


@pytest.mark.parametrize("batch_size", [None, 5])
def test_scores_are_avg_at_k_with_ungradable_and_unanswered_counted(tmp_path, batch_size):
    """avg@k (mean over all k samples, not pass@k), the benchmarks' mean (not max), and the two counts."""
    write_scoring_benchmarks(tmp_path)
    results = evaluate_benchmarks(planned_generator(), tmp_path, benchmarks=list(SCORING_PLAN), n_samples_override=4,
                                  batch_size=batch_size, reward=outcome_reward)
    aime, math500 = results["benchmarks"]["aime24"], results["benchmarks"]["math500"]
    assert aime["accuracy"] == pytest.approx(100 * 5 / 12)  # pass@4 would be 2/3, the best sample 100
    assert math500["accuracy"] == pytest.approx(100 * 4 / 12)
    assert (aime["k"], aime["num_problems"], aime["num_samples"]) == (4, 3, 12)
    assert (aime["ungradable"], aime["no_answer"]) == (1, 1)
    assert (math500["ungradable"], math500["no_answer"]) == (0, 2)
    assert results["average"] == pytest.approx((aime["accuracy"] + math500["accuracy"]) / 2)


# ----------------------------------------------------------------------------- what reaches the generator
def recording_generator(calls):
    def generate(prompts):
        calls.append(list(prompts))
        return [r"\boxed{0}" for _ in prompts]

    return generate


def test_generation_is_chunked_by_batch_size(tmp_path):
    write_scoring_benchmarks(tmp_path)  # 3 problems per benchmark
    for batch_size, sizes in [(None, [36]), (5, [5] * 7 + [1])]:
        calls = []
        evaluate_benchmarks(recording_generator(calls), tmp_path, benchmarks=["aime24"], n_samples_override=12,
                            batch_size=batch_size, reward=lambda completions, answer: [0.0] * len(completions))
        assert [len(chunk) for chunk in calls] == sizes, batch_size
    calls = []  # the default: 32 prompts per call
    evaluate_benchmarks(recording_generator(calls), tmp_path, benchmarks=["aime24"], n_samples_override=12,
                        reward=lambda completions, answer: [0.0] * len(completions))
    assert [len(chunk) for chunk in calls] == [32, 4]


def test_prompts_are_rendered_with_the_tokenizers_chat_template(tmp_path):
    class ChatTokenizer:
        chat_template = "given"

        def apply_chat_template(self, messages, tokenize, add_generation_prompt):
            return "CHAT:" + messages[-1]["content"]

    write_scoring_benchmarks(tmp_path)
    calls = []
    evaluate_benchmarks(recording_generator(calls), tmp_path, tokenizer=ChatTokenizer(), benchmarks=["math500"],
                        n_samples_override=1, reward=lambda completions, answer: [0.0] * len(completions))
    assert calls and all(prompt.startswith("CHAT:") and "math500 problem" in prompt for prompt in calls[0])


def test_bad_benchmark_names_and_short_generators_are_named(tmp_path):
    write_scoring_benchmarks(tmp_path)
    with pytest.raises(ValueError, match=r"unknown benchmarks \['aime26'\]; choose from \['aime24'"):
        evaluate_benchmarks(recording_generator([]), tmp_path, benchmarks=["aime26"])
    with pytest.raises(ValueError, match="generate returned 2 completions for 3 prompts"):
        evaluate_benchmarks(lambda prompts: ["x", "y"], tmp_path, benchmarks=["math500"], n_samples_override=1,
                            batch_size=None)


def test_each_benchmark_reports_its_time_and_no_benchmark_averages_to_nan(tmp_path):
    write_scoring_benchmarks(tmp_path)
    results = evaluate_benchmarks(recording_generator([]), tmp_path, benchmarks=["math500"], n_samples_override=1,
                                  reward=lambda completions, answer: [0.0] * len(completions))
    assert 0 <= results["benchmarks"]["math500"]["seconds"] < 60
    assert math.isnan(evaluate_benchmarks(recording_generator([]), tmp_path, benchmarks=[])["average"])
