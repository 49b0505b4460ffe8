"""The packaged recipes carry the official values in our units (docs/paper_recipes.md "Recipe audit")."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from trl_nft.math_recipe.official_scale import OFFICIAL_WORLD_SIZES, equivalent_adam_epsilon, equivalent_max_grad_norm

from tests.conftest import REPO_ROOT

RECIPE_DIR = REPO_ROOT / "trl_nft" / "math_recipe" / "recipes"
# recipe -> (GPUs it launches, official run it reproduces or None)
RECIPES = {
    "qwen2.5-math-7b": (8, "7b"),
    "qwen2.5-32b": (32, "32b"),
    "qwen2.5-math-1.5b-single-gpu": (1, None),
}
# The official runs' hardware (NVlabs/NFT train_7B.sh: 1 node x 8 GPUs; train_32B.sh: 4 nodes x 8), which the
# recipes' launch settings reproduce with TRL's named accelerate configs.
LAUNCH = {
    "qwen2.5-math-7b": {"accelerate_config": "zero3", "num_processes": 8},
    "qwen2.5-32b": {"accelerate_config": "zero3", "num_machines": 4, "num_processes": 32},
    "qwen2.5-math-1.5b-single-gpu": {"accelerate_config": "single_gpu", "num_processes": 1},
}
OFFICIAL_WARMUP_ROLLOUT_STEPS = 10  # train_7B.sh / train_32B.sh: actor_rollout_ref.actor.optim.lr_warmup_steps=10
PAPER_ROLLOUT_STEPS = 320
OFFICIAL_LENGTHS = {"7b": (512, 3584), "32b": (2048, 14_336)}  # (max_prompt_length, max_response_length)
OFFICIAL_SEQUENCES_PER_STEP = 512  # train_prompt_mini_bsz 32 prompts x n_resp_per_prompt 16


def load(name):
    return yaml.safe_load((RECIPE_DIR / f"{name}.yaml").read_text())


def steps_per_generation(recipe, gpus):
    completions_per_step = recipe["per_device_train_batch_size"] * recipe["gradient_accumulation_steps"] * gpus
    assert recipe["generation_batch_size"] % completions_per_step == 0
    return recipe["generation_batch_size"] // completions_per_step


def test_every_recipe_is_audited():
    assert sorted(p.stem for p in RECIPE_DIR.glob("*.yaml")) == sorted(RECIPES)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipes_launch_on_their_hardware(name):
    recipe = load(name)
    assert {key: recipe[key] for key in LAUNCH[name]} == LAUNCH[name]
    assert recipe["num_processes"] == RECIPES[name][0]  # the GPU count every batch-size check below assumes


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_optimizer_is_the_official_one(name):
    recipe = load(name)
    # verl's scheduler steps once per rollout step: warm-up in generation batches, lr constant within one
    assert recipe["lr_scheduler_per_generation"] is True
    assert recipe["warmup_steps"] == OFFICIAL_WARMUP_ROLLOUT_STEPS
    assert recipe["lr_scheduler_type"] == "constant_with_warmup"
    assert recipe["weight_decay_all_parameters"] is True  # verl's AdamW over model.parameters()
    assert (recipe["eval_temperature"], recipe["eval_top_p"]) == (0.6, 0.7)  # train_*.sh val_kwargs


def test_32b_recipe_uses_the_qwen25_math_system_prompt():
    from trl_nft.testing.tiny_models import QWEN25_MATH_SYSTEM_PROMPT

    assert load("qwen2.5-32b")["system_prompt"] == QWEN25_MATH_SYSTEM_PROMPT
    assert "system_prompt" not in load("qwen2.5-math-7b")  # Qwen2.5-Math's chat template adds it by default


@pytest.mark.parametrize("name", [name for name, (_, official) in RECIPES.items() if official])
def test_paper_recipes_match_the_official_run(name):
    gpus, official = RECIPES[name]
    recipe = load(name)
    per_rollout = steps_per_generation(recipe, gpus)
    assert per_rollout == 16  # the paper's 16 optimizer steps per rollout step
    assert recipe["generation_batch_size"] == 512 * recipe["num_generations"] and recipe["num_generations"] == 16
    assert recipe["max_steps"] == PAPER_ROLLOUT_STEPS * per_rollout and "num_train_epochs" not in recipe
    assert (recipe["max_prompt_length"], recipe["max_completion_length"]) == OFFICIAL_LENGTHS[official]
    expected_clip = equivalent_max_grad_norm(1.0, OFFICIAL_SEQUENCES_PER_STEP, recipe["max_completion_length"],
                                             OFFICIAL_WORLD_SIZES[official])
    assert recipe["max_grad_norm"] == pytest.approx(expected_clip, rel=1e-3)
    expected_eps = equivalent_adam_epsilon(OFFICIAL_SEQUENCES_PER_STEP, recipe["max_completion_length"],
                                           OFFICIAL_WORLD_SIZES[official])
    assert recipe["adam_epsilon"] == pytest.approx(expected_eps, rel=1e-3)
    assert recipe["vllm_importance_sampling_correction"] is False  # the official runs had no such correction
    assert recipe["dynamic_sampling"] and recipe["max_generation_rounds"] == 10  # filter_groups, max_num_gen_batches
    assert recipe["dynamic_sampling_first_round_oversample"] == 3  # gen_batch_size = 3 x train_batch_size
    assert recipe["loss_type"] == "dr_grpo" and recipe["beta"] == 0.0 and recipe["entropy_coef"] == 0.0
    assert recipe["learning_rate"] == 1e-6 and recipe["weight_decay"] == 0.1 and recipe["temperature"] == 1.0


def test_single_gpu_recipe_evaluates_on_math500_from_the_hub():
    from trl_nft.math_recipe.benchmarks import BENCHMARKS

    recipe = load("qwen2.5-math-1.5b-single-gpu")
    assert recipe["eval_dataset_name"] == BENCHMARKS["math500"].hub_id == "HuggingFaceH4/MATH-500"
    assert recipe.get("dataset_test_split", "test") == BENCHMARKS["math500"].hub_split


def test_single_gpu_recipe_keeps_fp32_master_weights():
    recipe = load("qwen2.5-math-1.5b-single-gpu")
    assert recipe["dtype"] == "float32" and recipe["bf16"] is True and "deepspeed" not in recipe
    expected_clip = equivalent_max_grad_norm(1.0, OFFICIAL_SEQUENCES_PER_STEP, recipe["max_completion_length"],
                                             OFFICIAL_WORLD_SIZES["7b"])
    assert recipe["max_grad_norm"] == pytest.approx(expected_clip, rel=2e-3)
    expected_eps = equivalent_adam_epsilon(OFFICIAL_SEQUENCES_PER_STEP, recipe["max_completion_length"],
                                           OFFICIAL_WORLD_SIZES["7b"])
    assert recipe["adam_epsilon"] == pytest.approx(expected_eps, rel=2e-3)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_paper_recipes_train_with_the_official_verifier(name):
    # NFT verifier.py:66-68: the official runs score DAPO training data with verl's strict-box DAPO rule; users' own
    # data (the single-GPU recipe) keeps the default math_accuracy_reward.
    official = RECIPES[name][1] is not None
    assert load(name).get("reward_funcs", ["math_accuracy_reward"]) == (
        ["dapo_math_reward"] if official else ["math_accuracy_reward"]
    )


# Official mini-batch order: 7B keeps each group within one or a few adjacent optimizer steps, 32B (Ulysses
# sequence parallelism 8) scatters it over about half of them (docs/paper_recipes.md, "Mini-batch composition").
KEEPS_GROUPS_TOGETHER = {"qwen2.5-math-7b": True, "qwen2.5-32b": False, "qwen2.5-math-1.5b-single-gpu": False}


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_mini_batch_composition_is_the_official_runs(name):
    from trl_nft.group_order import check_whole_group_layout

    recipe = load(name)
    assert recipe["keep_groups_together"] is KEEPS_GROUPS_TOGETHER[name]
    check_whole_group_layout(  # the recipe's batch shape could keep groups together on its own hardware
        group_size=recipe["num_generations"],
        per_device_batch=recipe["per_device_train_batch_size"],
        steps_per_generation=steps_per_generation(recipe, RECIPES[name][0]),
        gradient_accumulation_steps=recipe["gradient_accumulation_steps"],
    )
