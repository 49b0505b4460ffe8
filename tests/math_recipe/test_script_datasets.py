"""The training script's dataset options are TRL's (`trl.ScriptArguments`, `trl.DatasetMixtureConfig`), each working
through the math loader: splits, dataset_config, streaming, mixtures, evaluation sets, and the earlier names."""

from __future__ import annotations

import json
import warnings

import pytest
import trl
import yaml

from trl_nft import cli
from trl_nft.math_recipe import script as math_script
from trl_nft.math_recipe.data import PAPER_INSTRUCTION
from trl_nft.math_recipe.script import ScriptArguments

CPU = ["--model_name_or_path", "m", "--prompt_format", "plain", "--use_cpu", "true", "--bf16", "false"]


def write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture
def split_folder(tmp_path):
    """A local dataset folder with train and test splits (MATH-style columns)."""
    folder = tmp_path / "sums"
    write_jsonl(folder / "train.jsonl", [{"problem": f"{a} + 1 = ?", "answer": str(a + 1)} for a in range(6)])
    write_jsonl(folder / "test.jsonl", [{"problem": f"{a} + 2 = ?", "answer": str(a + 2)} for a in range(3)])
    return folder


def datasets_for(argv):
    return math_script.load_datasets(*cli.parse_train_args([*CPU, *argv]))


def test_script_arguments_are_trls():
    assert issubclass(ScriptArguments, trl.ScriptArguments) and issubclass(ScriptArguments, trl.DatasetMixtureConfig)


def test_train_and_test_splits_as_in_trl_grpo(split_folder):
    train, evaluation = datasets_for(["--dataset_name", str(split_folder), "--eval_strategy", "steps",
                                      "--eval_steps", "1"])
    assert train["problem"] == [f"{a} + 1 = ?" for a in range(6)]
    assert evaluation["answer"] == ["2", "3", "4"]  # dataset_test_split 'test' of dataset_name
    train, _ = datasets_for(["--dataset_name", str(split_folder), "--dataset_train_split", "test"])
    assert len(train) == 3


def test_eval_dataset_name_is_read_with_dataset_test_split(tmp_path, split_folder):
    other = tmp_path / "held_out"
    write_jsonl(other / "validation.jsonl", [{"question": "1 + 1 = ?", "answer": "2"}])
    _, evaluation = datasets_for(["--dataset_name", str(split_folder), "--eval_dataset_name", str(other),
                                  "--dataset_test_split", "validation", "--eval_strategy", "steps", "--eval_steps", "1"])
    assert evaluation["answer"] == ["2"]


def test_eval_dataset_name_is_not_loaded_when_nothing_evaluates(tmp_path, split_folder):
    """A recipe edited to `eval_strategy: no` runs offline although it still names a hub evaluation set."""
    _, evaluation = datasets_for(["--dataset_name", str(split_folder), "--eval_dataset_name",
                                  str(tmp_path / "not_there"), "--eval_strategy", "no"])
    assert evaluation is None


def test_evaluation_without_a_test_split_says_what_to_give(tmp_path):
    data = write_jsonl(tmp_path / "only_train" / "train.jsonl", [{"problem": "1 + 1 = ?", "answer": "2"}])
    with pytest.raises(ValueError, match=r"dataset_test_split='test'.*--eval_dataset_name"):
        datasets_for(["--dataset_name", str(data.parent), "--eval_strategy", "steps", "--eval_steps", "1"])


@pytest.mark.parametrize("old, new, value", [("dataset_split", "dataset_train_split", "test"),
                                             ("eval_dataset_split", "dataset_test_split", "validation")])
def test_earlier_names_still_work_with_a_deprecation_note(tmp_path, old, new, value):
    with pytest.warns(FutureWarning, match=f"--{old} is deprecated: use --{new}"):
        script_args, _, _ = cli.parse_train_args([*CPU, f"--{old}", value])
    assert getattr(script_args, new) == value and getattr(script_args, old) is None
    config = tmp_path / "old.yaml"
    config.write_text(yaml.safe_dump({old: value}))  # recipes written with the earlier name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        script_args, _, _ = cli.parse_train_args([*CPU, "--config", str(config)])
    assert getattr(script_args, new) == value
    with pytest.raises(ValueError, match=f"--{old} '{value}' and --{new} 'other' disagree"):
        cli.parse_train_args([*CPU, f"--{old}", value, f"--{new}", "other"])


def test_dataset_config_and_streaming_reach_the_hub_loader(monkeypatch):
    from datasets import Dataset

    calls = []

    def fake_load_dataset(path, name=None, split=None, streaming=False, **kwargs):
        calls.append((path, name, split, streaming))
        rows = Dataset.from_dict({"question": ["1 + 1 = ?"], "answer": ["Because ... #### 2"]})
        return rows.to_iterable_dataset() if streaming else rows

    monkeypatch.setattr("datasets.load_dataset", fake_load_dataset)
    train, _ = datasets_for(["--dataset_name", "openai/gsm8k", "--dataset_config", "socratic"])
    assert calls[-1] == ("openai/gsm8k", "socratic", "train", False) and train["answer"] == ["2"]
    datasets_for(["--dataset_name", "gsm8k"])  # the alias brings its own config
    assert calls[-1] == ("openai/gsm8k", "main", "train", False)
    train, _ = datasets_for(["--dataset_name", "gsm8k", "--dataset_streaming", "true", "--max_train_samples", "1"])
    assert calls[-1] == ("openai/gsm8k", "main", "train", True) and list(train) == [
        {"prompt": f"1 + 1 = ?\n{PAPER_INSTRUCTION}", "answer": "2",
         "problem": "1 + 1 = ?"}]


def test_streaming_gives_the_same_rows_as_an_iterable_dataset_that_knows_its_columns(split_folder):
    from datasets import IterableDataset

    streamed, _ = datasets_for(["--dataset_name", str(split_folder), "--dataset_streaming", "true"])
    loaded, _ = datasets_for(["--dataset_name", str(split_folder)])
    assert isinstance(streamed, IterableDataset)
    assert streamed.column_names == ["prompt", "answer", "problem"]  # TRL's and NFT's dataset checks read these
    assert list(streamed) == loaded.to_list()
    assert len(list(streamed)) == len(list(streamed)) == 6  # every pass (epoch) reads all rows again


def test_a_mixture_of_sources_with_different_columns(tmp_path):
    math_style = write_jsonl(tmp_path / "math.jsonl", [{"problem": f"m{i}", "answer": str(i)} for i in range(8)])
    gsm_style = write_jsonl(tmp_path / "gsm.jsonl", [{"question": f"g{i}", "answer": f"... #### {i}",
                                                      "problem": "a column `columns` leaves out"} for i in range(4)])
    dapo_style = write_jsonl(tmp_path / "dapo.jsonl", [{"prompt": [{"role": "user", "content": "d"}],
                                                        "reward_model": {"ground_truth": "1"}}] * 5)
    config = tmp_path / "mix.yaml"
    config.write_text(yaml.safe_dump({"datasets": [
        {"path": str(math_style)},
        {"path": "json", "data_files": str(gsm_style), "columns": ["question", "answer"]},  # TRL's own form
        {"path": str(dapo_style)},
    ]}))
    train, evaluation = datasets_for(["--config", str(config)])
    assert train["problem"] == [f"m{i}" for i in range(8)] + [f"g{i}" for i in range(4)] + ["d"]  # DAPO deduplicated
    assert train["answer"][8:] == ["0", "1", "2", "3", "1"] and evaluation is None


def test_mixture_fractions_and_test_split(tmp_path):
    first = write_jsonl(tmp_path / "a.jsonl", [{"problem": f"a{i}", "answer": str(i)} for i in range(30)])
    second = write_jsonl(tmp_path / "b.jsonl", [{"problem": f"b{i}", "answer": str(i)} for i in range(10)])
    config = tmp_path / "mix.yaml"
    config.write_text(yaml.safe_dump({"datasets": [{"path": str(first), "fraction": 2},
                                                   {"path": str(second), "fraction": 1}],
                                      "test_split_size": 0.2}))
    train, evaluation = datasets_for(["--config", str(config), "--seed", "3"])
    problems = list(train["problem"]) + list(evaluation["problem"])
    # shares 2/3 and 1/3 of a mixture as large as possible without repeating a row: all 10 of b, 20 of a
    assert sorted(problems) == sorted([f"a{i}" for i in range(20)] + [f"b{i}" for i in range(10)])
    assert (len(train), len(evaluation)) == (24, 6)
    again, _ = datasets_for(["--config", str(config), "--seed", "3"])
    assert list(again["problem"]) == list(train["problem"])  # the split follows --seed


def test_the_model_card_names_dataset_name_but_no_single_dataset_for_a_mixture(tmp_path):
    config = tmp_path / "mix.yaml"
    config.write_text(yaml.safe_dump({"datasets": [{"path": "dapo-math-17k"}, {"path": "gsm8k"}]}))
    mixture_args, _, _ = cli.parse_train_args([*CPU, "--config", str(config)])
    assert math_script.model_card_dataset(mixture_args) is None
    single_args, _, _ = cli.parse_train_args(CPU)
    assert math_script.model_card_dataset(single_args) == "BytedTsinghua-SIA/DAPO-Math-17k"


def test_mixture_fractions_for_all_or_none(tmp_path):
    first = write_jsonl(tmp_path / "a.jsonl", [{"problem": "a", "answer": "1"}])
    config = tmp_path / "mix.yaml"
    config.write_text(yaml.safe_dump({"datasets": [{"path": str(first), "fraction": 0.5}, {"path": str(first)}]}))
    with pytest.raises(ValueError, match="set `fraction` for every dataset of the mixture or for none"):
        datasets_for(["--config", str(config)])


def test_a_streamed_dataset_trains(tmp_path, split_folder):
    from trl_nft.testing.tiny_models import save_tiny_model

    model_dir = save_tiny_model(tmp_path / "tiny")
    argv = ["--model_name_or_path", str(model_dir), "--dataset_name", str(split_folder), "--dataset_streaming",
            "true", "--prompt_format", "plain", "--output_dir", str(tmp_path / "out"), "--use_cpu", "true",
            "--max_steps", "2", "--per_device_train_batch_size", "4", "--num_generations", "2",
            "--max_completion_length", "8", "--report_to", "none", "--save_strategy", "no", "--dtype", "float32",
            "--reward_workers", "1", "--disable_tqdm", "true"]
    trainer = math_script.build_trainer(*cli.parse_train_args(argv))
    try:
        trainer.train()
    finally:
        math_script.close_rewards(trainer.reward_funcs)
    assert trainer.state.global_step == 2
