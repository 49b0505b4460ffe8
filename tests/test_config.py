"""`NFTConfig` construction: NFT's own validation comes before GRPOConfig's / TrainingArguments' checks."""

from __future__ import annotations

import re

import pytest

from tests.conftest import tiny_args
from trl_nft import NFTConfig


def test_bad_nft_field_is_reported_before_the_bf16_check(tmp_path):
    # bf16=True on a CPU-only machine fails TrainingArguments' own check; the mistyped weighting must be named first.
    with pytest.raises(ValueError, match=r"prompt_weighting='dr-grpo'"):
        NFTConfig(output_dir=str(tmp_path), prompt_weighting="dr-grpo", bf16=True)


def test_defaults_construct_on_a_cpu_machine(tmp_path):
    # The README's snippet: no use_cpu, no bf16 given.
    config = NFTConfig(output_dir=str(tmp_path))
    assert config.prompt_weighting == "dr_grpo"


# ------------------------------------------------------------------------------------ from a GRPOConfig
GRPO_SETTINGS = dict(
    use_cpu=True, learning_rate=3e-6, per_device_train_batch_size=4, gradient_accumulation_steps=2,
    num_generations=4, max_completion_length=96, temperature=0.7, beta=0.04, seed=7, logging_steps=3,
    report_to="none", hub_token="hf_secret", save_only_model=True, num_iterations=2,
)


def grpo_config(tmp_path, **settings):
    from trl import GRPOConfig

    return GRPOConfig(output_dir=str(tmp_path / "grpo"), **{**GRPO_SETTINGS, **settings})


def test_plain_to_dict_copy_fails_as_grpo_config_itself_reports(tmp_path):
    """Why from_grpo_config exists: to_dict() has the post-init values, both halves of the batch pair among them."""
    config = grpo_config(tmp_path, generation_batch_size=32)
    with pytest.raises(ValueError, match="generation_batch_size' and 'steps_per_generation'"):
        NFTConfig(**config.to_dict())
    assert config.to_dict()["hub_token"] == "<HUB_TOKEN>"  # and tokens come back masked


@pytest.mark.parametrize("batch", [dict(generation_batch_size=32), dict(steps_per_generation=8)],
                         ids=["generation_batch_size", "steps_per_generation"])
def test_from_grpo_config_keeps_every_setting(tmp_path, batch):
    source = grpo_config(tmp_path, **batch)
    config = NFTConfig.from_grpo_config(source, neg_weight=0.5, dynamic_sampling=True)
    assert type(config) is NFTConfig
    for name in (*GRPO_SETTINGS, "output_dir", "generation_batch_size", "steps_per_generation", "bf16"):
        assert getattr(config, name) == getattr(source, name), name
    assert (config.generation_batch_size, config.steps_per_generation) == (32, 8)
    assert (config.neg_weight, config.dynamic_sampling) == (0.5, True)
    assert config.loss_type == "dr_grpo"  # left at GRPOConfig's default ("dapo"): NFT's default applies


def test_from_grpo_config_lets_post_init_fill_in_again(tmp_path):
    """Values GRPOConfig derived are not frozen: overrides of what they derive from take effect."""
    source = grpo_config(tmp_path)  # batch pair, bf16 (True with use_cpu) and activation_checkpointing derived
    config = NFTConfig.from_grpo_config(source, gradient_accumulation_steps=4, use_cpu=False,
                                        gradient_checkpointing=False)
    assert (config.steps_per_generation, config.generation_batch_size) == (4, 16)
    assert config.bf16 is False  # NFTConfig's fallback on a machine without a bf16 GPU, not a frozen bf16=True
    assert config.activation_checkpointing is False
    resized = NFTConfig.from_grpo_config(grpo_config(tmp_path, steps_per_generation=4), generation_batch_size=48)
    assert (resized.generation_batch_size, resized.steps_per_generation) == (48, 12)


def test_from_grpo_config_keeps_nft_fields_of_an_nft_config(tmp_path):
    source = NFTConfig(output_dir=str(tmp_path), use_cpu=True, neg_weight=0.0, prompt_weighting="none",
                       loss_type="bnpo", steps_per_generation=2, dynamic_sampling=True, max_generation_rounds=3)
    config = NFTConfig.from_grpo_config(source)
    for name in ("neg_weight", "prompt_weighting", "loss_type", "steps_per_generation", "generation_batch_size",
                 "dynamic_sampling", "max_generation_rounds"):
        assert getattr(config, name) == getattr(source, name), name


def test_from_grpo_config_leaves_out_grpo_surrogate_options_with_one_warning(tmp_path):
    source = grpo_config(tmp_path, epsilon=0.3, scale_rewards="none", delta=4.0, loss_type="cispo")
    with pytest.warns(UserWarning, match=r"not copied.*epsilon=0.3.*scale_rewards='none'.*delta=4.0.*loss_type='cispo'"):
        config = NFTConfig.from_grpo_config(source)
    assert (config.epsilon, config.scale_rewards, config.delta, config.loss_type) == (0.2, "group", None, "dr_grpo")


def test_from_grpo_config_rejects_unknown_overrides(tmp_path):
    with pytest.raises(TypeError, match=r"no field\(s\) \['neg_wieght'\]"):
        NFTConfig.from_grpo_config(grpo_config(tmp_path), neg_wieght=1.0)


@pytest.mark.parametrize("settings", [dict(), dict(eval_strategy="steps", per_device_eval_batch_size=8,
                                                   load_best_model_at_end=True, save_strategy="steps")])
def test_post_init_filled_fields_cover_what_grpo_config_fills_in(tmp_path, settings):
    """If TRL or transformers start deriving another field, from_grpo_config must learn about it."""
    import dataclasses

    from trl import GRPOConfig

    from trl_nft.config import POST_INIT_FILLED_FIELDS, _declared_default, _same

    config = GRPOConfig(output_dir=str(tmp_path), use_cpu=True, **settings)
    filled = {f.name for f in dataclasses.fields(config) if f.init and f.name not in {"output_dir", "use_cpu", *settings}
              and not _same(getattr(config, f.name), _declared_default(f))}
    assert filled <= set(POST_INIT_FILLED_FIELDS), filled - set(POST_INIT_FILLED_FIELDS)


def test_trainer_refuses_a_grpo_config_and_names_the_conversion(tmp_path):
    from trl_nft import NFTTrainer

    source = grpo_config(tmp_path)
    with pytest.raises(TypeError, match=r"NFTConfig\.from_grpo_config\(your_grpo_config"):
        NFTTrainer(model="unused-model-name", reward_funcs=lambda **kwargs: [], args=source)


# ------------------------------------------------------------------------------------------- documentation
def nft_own_fields() -> list:
    """Fields NFTConfig adds to GRPOConfig or redefines (a new default, e.g. loss_type)."""
    import dataclasses

    from trl import GRPOConfig

    grpo = {f.name: f for f in dataclasses.fields(GRPOConfig)}
    return [f for f in dataclasses.fields(NFTConfig) if f.name not in grpo or f is not grpo[f.name]]


def documented_parameters() -> dict[str, str]:
    """name -> the `(type, *optional*, defaults to ...)` line of each entry in NFTConfig's Parameters section."""
    import re

    section = NFTConfig.__doc__.split("Parameters:", 1)[1]
    return dict(re.findall(r"^        (\w+) (\(.*\)):$", section, flags=re.M))


def test_every_nft_field_has_a_docstring_entry_with_its_default_and_help_text():
    import dataclasses

    documented = documented_parameters()
    fields = nft_own_fields()
    assert {f.name for f in fields} >= {"neg_weight", "loss_type", "reward_threshold", "dynamic_sampling"}
    for f in fields:
        assert f.name in documented, f"NFTConfig's docstring has no Parameters entry for {f.name}"
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        shown = f'"{default}"' if isinstance(default, str) else repr(default)
        assert f"defaults to `{shown}`" in documented[f.name], (f.name, documented[f.name])
        assert len(f.metadata.get("help", "")) > 20, f"{f.name} has no help text"


@pytest.mark.parametrize(
    "settings, fields",
    [
        (dict(per_device_train_batch_size=6, steps_per_generation=4), ["per_device_train_batch_size", "num_generations"]),
        (dict(per_device_train_batch_size=4, gradient_accumulation_steps=4, steps_per_generation=6),
         ["steps_per_generation (6)", "gradient_accumulation_steps (4)"]),
    ],
)
def test_keep_groups_together_refuses_steps_that_cannot_hold_whole_groups(tmp_path, settings, fields):
    with pytest.raises(ValueError, match="keep_groups_together") as error:
        NFTConfig(output_dir=str(tmp_path), use_cpu=True, num_generations=4, keep_groups_together=True, **settings)
    assert all(field in str(error.value) for field in fields)
    NFTConfig(output_dir=str(tmp_path), use_cpu=True, num_generations=4, **settings)  # TRL's order accepts them


# ------------------------------------------------------------------ validation edges found by mutation testing
@pytest.mark.parametrize("field, value", [
    ("correct_rate_clip", 0.0), ("max_log_ratio", 0.5), ("positive_clip", 0.0), ("neg_weight", 0.0),
    ("max_generation_rounds", 1), ("dynamic_sampling_oversample", 1), ("dynamic_sampling_first_round_oversample", 1),
    ("dynamic_sampling_adaptive_margin", 1.0), ("dynamic_sampling_max_carry_age", 0),
    ("importance_sampling_level", "sequence"),
])
def test_boundary_values_are_accepted(tmp_path, field, value):
    assert getattr(tiny_args(NFTConfig, tmp_path, **{field: value}), field) == value


@pytest.mark.parametrize("field, value", [
    ("max_generation_rounds", 0), ("dynamic_sampling_oversample", 0), ("dynamic_sampling_first_round_oversample", 0),
    ("dynamic_sampling_adaptive_margin", 0.99), ("dynamic_sampling_max_carry_age", -1),
    ("importance_sampling_level", "Sequence"),
])
def test_values_past_the_boundary_name_field_and_value(tmp_path, field, value):
    with pytest.raises(ValueError, match=re.escape(f"{field}={value!r} must be")):
        tiny_args(NFTConfig, tmp_path, **{field: value})


@pytest.mark.parametrize("loss_type, says_why", [("cispo", True), ("made_up", False)])
def test_a_refused_loss_type_says_why_when_there_is_a_reason(tmp_path, loss_type, says_why):
    with pytest.raises(ValueError) as refused:
        tiny_args(NFTConfig, tmp_path, loss_type=loss_type)
    message = str(refused.value)
    assert message.startswith(f"loss_type={loss_type!r} cannot be used with NFT")
    reason = ": it reshapes the policy term, which NFT replaces; choose one of"
    assert (reason in message) == says_why
    assert says_why or "cannot be used with NFT; choose one of" in message


def test_an_ignored_grpo_option_warning_says_why(tmp_path):
    why = r"epsilon=0\.3 has no effect .*no clipped surrogate and no normalised advantages\.$"
    with pytest.warns(UserWarning, match=why):
        NFTConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to=[], epsilon=0.3)
