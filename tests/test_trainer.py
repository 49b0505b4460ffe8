"""NFTTrainer end to end on a tiny offline model: training, modes, PEFT, KL, off-policy passes, validation, TRL guard."""

from __future__ import annotations

import copy

import pytest
import torch
from trl import GRPOConfig

from tests.conftest import first_char_parity_reward, import_optional, tiny_args, variable_length_batch
from trl_nft import NFTConfig, NFTTrainer
from trl_nft.trainer import HOOKED_TRL_METHODS, trl_signature_mismatches


def make_trainer(model, dataset, tokenizer, tmp_path, reward=first_char_parity_reward, **overrides):
    args = tiny_args(NFTConfig, tmp_path, **overrides)
    return NFTTrainer(model=model, reward_funcs=reward, args=args, train_dataset=dataset, processing_class=tokenizer)


def logged(trainer, key):
    return [entry[key] for entry in trainer.state.log_history if key in entry]


def test_every_trainable_parameter_changes(model, prompt_dataset, tokenizer, tmp_path):
    start = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainer = make_trainer(model, prompt_dataset, tokenizer, tmp_path, optim="adamw_torch", learning_rate=1e-2,
                           max_steps=3, per_device_train_batch_size=16)
    trainer.train()
    assert min(logged(trainer, "nft/degenerate_group_frac")) < 1.0
    unchanged = [name for name, p in trainer.model.named_parameters() if torch.equal(p.detach(), start[name])]
    assert unchanged == []
    for key in ("nft/positive_loss", "nft/negative_loss", "nft/correct_rate_mean", "nft/degenerate_group_frac",
                "nft/negative_floor_frac", "nft/ratio_mean", "nft/ratio_max", "entropy"):
        assert logged(trainer, key), f"metric {key} was not logged"


@pytest.mark.parametrize("loss_type", ["dapo", "bnpo", "grpo"])
@pytest.mark.parametrize("level", ["token", "sequence"])
def test_other_aggregations_and_sequence_level_train(model, prompt_dataset, tokenizer, tmp_path, loss_type, level):
    start = [p.detach().clone() for p in model.parameters()]
    trainer = make_trainer(model, prompt_dataset, tokenizer, tmp_path, loss_type=loss_type,
                           importance_sampling_level=level, per_device_train_batch_size=16)
    trainer.train()
    moved = sum(not torch.equal(p.detach(), s) for p, s in zip(trainer.model.parameters(), start))
    assert moved > 0
    assert all(torch.isfinite(torch.tensor(logged(trainer, "loss"))))


def crafted_batch(trainer, tokenizer, seed=0):
    """A hand-made micro-batch in the layout TRL hands to `_compute_loss`: 2 groups of 4, mixed answers."""
    return variable_length_batch(tokenizer, [5] * 8, seed=seed)


def gradient_for(trainer, inputs):
    trainer.model.zero_grad()
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1  # normally set by the training loop
    trainer.compute_loss(trainer.model, inputs).backward()
    return torch.cat([p.grad.flatten() for p in trainer.model.parameters() if p.grad is not None])


@pytest.mark.parametrize("neg_weight, wrong_answers_matter", [(0.0, False), (1.0, True)])
def test_rft_ignores_wrong_answers(model, prompt_dataset, tokenizer, tmp_path, neg_weight, wrong_answers_matter):
    """With neg_weight = 0 the update cannot depend on what the wrong completions say; with NFT it must."""
    trainer = make_trainer(model, prompt_dataset, tokenizer, tmp_path, neg_weight=neg_weight,
                           prompt_weighting="none" if neg_weight == 0 else "dr_grpo")
    inputs = crafted_batch(trainer, tokenizer)
    before = gradient_for(trainer, inputs)
    rewritten = dict(inputs, completion_ids=inputs["completion_ids"].clone())
    wrong = inputs["correct"] == 0
    rewritten["completion_ids"][wrong] = torch.flip(rewritten["completion_ids"][wrong], dims=[1])
    after = gradient_for(trainer, rewritten)
    assert before.abs().max() > 0
    assert (not torch.allclose(before, after)) == wrong_answers_matter


@pytest.mark.parametrize("loss_type", ["dr_grpo", "grpo", "bnpo", "dapo"])
def test_sequence_level_counts_each_sequence_once(model, prompt_dataset, tokenizer, tmp_path, loss_type):
    """On-policy both levels reduce to −(r − r̂)·Σ_t ∇log π per sequence, so their updates must be identical.

    The completions have different lengths: a sequence loss broadcast over its tokens would weigh long answers more.
    """
    batch = variable_length_batch(tokenizer, [2, 9, 4, 9, 3, 8, 1, 6])
    gradients = {}
    for level in ("token", "sequence"):
        trainer = make_trainer(copy.deepcopy(model), prompt_dataset, tokenizer, tmp_path / level, loss_type=loss_type,
                               importance_sampling_level=level, max_completion_length=12)
        gradients[level] = gradient_for(trainer, batch)
    assert gradients["token"].abs().max() > 0
    torch.testing.assert_close(gradients["sequence"], gradients["token"], rtol=1e-4, atol=1e-8)


def test_all_wrong_batch_gives_no_gradient(model, prompt_dataset, tokenizer, tmp_path):
    trainer = make_trainer(model, prompt_dataset, tokenizer, tmp_path)
    inputs = crafted_batch(trainer, tokenizer)
    inputs.update(correct=torch.zeros(8), correct_rate=torch.zeros(8))
    assert gradient_for(trainer, inputs).abs().max() == 0


def test_peft_trains_adapter_only(model, prompt_dataset, tokenizer, tmp_path):
    peft = import_optional("peft")
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    base = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainer = make_trainer(model, prompt_dataset, tokenizer, tmp_path, optim="adamw_torch", max_steps=2,
                           per_device_train_batch_size=16)
    trainer = NFTTrainer(model=model, reward_funcs=first_char_parity_reward, args=trainer.args,
                         train_dataset=prompt_dataset, processing_class=tokenizer, peft_config=config)
    lora_start = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_B" in n}
    trainer.train()
    params = dict(trainer.model.named_parameters())
    assert lora_start and all(not torch.equal(params[n].detach(), v) for n, v in lora_start.items())
    for name, p in params.items():
        if "lora_" in name:
            continue
        original = name.replace("base_model.model.", "").replace(".base_layer", "")
        assert not p.requires_grad
        assert torch.equal(p.detach(), base[original]), name


def test_kl_to_reference_model(model, prompt_dataset, tokenizer, tmp_path):
    # TRL builds the frozen reference by loading the policy's checkpoint, so hand it a path as users do.
    model.save_pretrained(tmp_path / "policy")
    tokenizer.save_pretrained(tmp_path / "policy")
    trainer = make_trainer(str(tmp_path / "policy"), prompt_dataset, tokenizer, tmp_path, beta=0.1, max_steps=3, learning_rate=0.2,
                           per_device_train_batch_size=16)
    assert trainer.ref_model is not None
    trainer.train()
    kl = logged(trainer, "kl")
    assert len(kl) == 3 and kl[0] == pytest.approx(0.0, abs=1e-6) and kl[-1] > 0


def test_num_iterations_uses_old_policy(model, prompt_dataset, tokenizer, tmp_path):
    trainer = make_trainer(model, prompt_dataset, tokenizer, tmp_path, num_iterations=2, max_steps=2,
                           learning_rate=0.2, per_device_train_batch_size=16)
    trainer.train()
    ratio_max = logged(trainer, "nft/ratio_max")
    assert ratio_max[0] == pytest.approx(1.0)  # first pass: π_θ = π_old
    assert ratio_max[1] > 1.0 + 1e-4  # second pass over the same completions: off-policy


def test_reward_out_of_range_names_function_and_value(model, prompt_dataset, tokenizer, tmp_path):
    def plus_minus_one(completions, **kwargs):
        return [1.0 if c[:1] < "m" else -1.0 for c in completions]

    trainer = make_trainer(model, prompt_dataset, tokenizer, tmp_path, reward=plus_minus_one)
    with pytest.raises(ValueError, match=r"reward function 'plus_minus_one' returned -1\.0"):
        trainer.train()
    start = [p.detach().clone() for p in model.parameters()]
    trainer = make_trainer(model, prompt_dataset, tokenizer, tmp_path / "t", reward=plus_minus_one,
                           reward_threshold=0.0, per_device_train_batch_size=16)
    trainer.train()
    assert any(not torch.equal(p.detach(), s) for p, s in zip(trainer.model.parameters(), start))


def test_grpo_config_is_rejected_with_a_clear_error(model, prompt_dataset, tokenizer, tmp_path):
    args = tiny_args(GRPOConfig, tmp_path)
    with pytest.raises(TypeError, match="NFTConfig"):
        NFTTrainer(model=model, reward_funcs=first_char_parity_reward, args=args, train_dataset=prompt_dataset,
                   processing_class=tokenizer)


@pytest.mark.parametrize(
    "field, value",
    [
        ("prompt_weighting", "sqrt"),
        ("negative_clip", 0.0),
        ("negative_clip", -1.0),
        ("correct_rate_clip", 0.5),
        ("correct_rate_clip", -0.1),
        ("neg_weight", -0.5),
        ("loss_type", "cispo"),
        ("loss_type", "sapo"),
        ("loss_type", "vespo"),
        ("loss_type", "luspo"),
        ("delta", 2.0),
        ("max_log_ratio", 0.0),
        ("positive_clip", -1.0),
    ],
)
def test_invalid_config_names_field_and_value(tmp_path, field, value):
    with pytest.raises(ValueError, match=f"{field}={value!r}".replace("(", r"\(").replace(".", r"\.")):
        tiny_args(NFTConfig, tmp_path, **{field: value})


@pytest.mark.parametrize("field, value", [("epsilon", 0.3), ("epsilon_high", 0.28), ("scale_rewards", "batch")])
def test_ignored_grpo_options_warn(tmp_path, field, value):
    with pytest.warns(UserWarning, match=f"{field}="):
        tiny_args(NFTConfig, tmp_path, **{field: value})


def test_defaults_are_the_papers(tmp_path):
    config = tiny_args(NFTConfig, tmp_path)
    assert (config.neg_weight, config.prompt_weighting, config.negative_clip, config.positive_clip) == (
        1.0, "dr_grpo", 1.0, 0.0)
    assert (config.correct_rate_clip, config.max_log_ratio, config.loss_type) == (0.02, 10.0, "dr_grpo")


def test_hooked_trl_methods_keep_their_signatures():
    """Fails loudly when a TRL upgrade moves a private method NFTTrainer overrides or calls."""
    mismatches = trl_signature_mismatches()
    assert mismatches == {}, "\n".join(f"{n}: expected {w}, found {g}" for n, (w, g) in mismatches.items())
    assert set(HOOKED_TRL_METHODS) >= {"_calculate_rewards", "_generate_and_score_completions", "_compute_loss"}


def grpo_style_script(trainer_cls, config_cls, model, dataset, tokenizer, output_dir):
    """What a user's GRPO script does; only the two classes are parameters."""
    args = config_cls(output_dir=str(output_dir), use_cpu=True, bf16=False, per_device_train_batch_size=8,
                      num_generations=4, max_completion_length=6, max_steps=1, report_to=[], logging_steps=1,
                      save_strategy="no", disable_tqdm=True)
    trainer = trainer_cls(model=model, reward_funcs=[first_char_parity_reward], args=args, train_dataset=dataset,
                          processing_class=tokenizer)
    trainer.train()
    return trainer


def test_drop_in_replacement_for_grpo_trainer_script(model, prompt_dataset, tokenizer, tmp_path):
    from trl import GRPOTrainer

    grpo = grpo_style_script(GRPOTrainer, GRPOConfig, copy.deepcopy(model), prompt_dataset, tokenizer, tmp_path / "g")
    nft = grpo_style_script(NFTTrainer, NFTConfig, copy.deepcopy(model), prompt_dataset, tokenizer, tmp_path / "n")
    assert not logged(grpo, "nft/positive_loss")
    assert logged(nft, "nft/positive_loss") and nft.args.loss_type == "dr_grpo"


def test_model_card_names_nft_and_its_paper(model, prompt_dataset, tokenizer, tmp_path):
    trainer = make_trainer(model, prompt_dataset, tokenizer, tmp_path)
    trainer.create_model_card(model_name="tiny-nft", dataset_name="BytedTsinghua-SIA/DAPO-Math-17k")
    card = (tmp_path / "README.md").read_text()
    assert "2505.18116" in card and "Bridging Supervised Learning and Reinforcement Learning" in card
    assert "2402.03300" not in card and "DeepSeekMath" not in card  # GRPO's paper entry is not inherited
    assert "@article{chen2025bridging" in card
    front_matter = card.split("---")[1]
    assert "- nft" in front_matter and "BytedTsinghua-SIA/DAPO-Math-17k" in front_matter


# ----------------------------------------------------------------------------- the official optimizer options
def decayed_parameters(trainer):
    optimizer = trainer.create_optimizer()
    ids = {id(p) for group in optimizer.param_groups if group["weight_decay"] > 0 for p in group["params"]}
    return {name for name, p in trainer.model.named_parameters() if id(p) in ids}


def test_weight_decay_all_parameters(model, prompt_dataset, tokenizer, tmp_path):
    names = {name for name, _ in model.named_parameters()}
    biases_and_norms = {name for name in names if "bias" in name or "norm" in name}
    assert biases_and_norms  # the tiny Qwen2 has q/k/v biases and RMSNorm weights

    default = make_trainer(model, prompt_dataset, tokenizer, tmp_path, optim="adamw_torch", weight_decay=0.1)
    assert decayed_parameters(default) == names - biases_and_norms  # transformers' Trainer

    official = make_trainer(model, prompt_dataset, tokenizer, tmp_path / "all", optim="adamw_torch", weight_decay=0.1,
                            weight_decay_all_parameters=True)
    assert decayed_parameters(official) == names  # verl's AdamW over model.parameters()


class GenerationSpy:
    """Records the temperature / top-p each transformers `generate` call samples with."""

    def __init__(self, model):
        self.calls = []
        self._generate = model.generate

        def generate(*args, generation_config=None, **kwargs):
            self.calls.append((generation_config.temperature, generation_config.top_p))
            return self._generate(*args, generation_config=generation_config, **kwargs)

        model.generate = generate


def test_evaluation_decodes_with_its_own_settings(model, prompt_dataset, tokenizer, tmp_path):
    trainer = make_trainer(model, prompt_dataset, tokenizer, tmp_path, temperature=1.0, top_p=1.0, eval_temperature=0.6,
                           eval_top_p=0.7, max_steps=1, per_device_eval_batch_size=8, max_completion_length=4)
    trainer.eval_dataset = prompt_dataset.select(range(8))
    spy = GenerationSpy(trainer.model)
    trainer.train()
    assert spy.calls and set(spy.calls) == {(1.0, 1.0)}  # training keeps its temperature
    spy.calls.clear()
    trainer.evaluate()
    assert spy.calls and set(spy.calls) == {(0.6, 0.7)}
    # restored afterwards: the next training generation samples at the training temperature again
    assert (trainer.generation_config.temperature, trainer.generation_config.top_p) == (1.0, 1.0)
    assert (trainer.generation_kwargs["temperature"], trainer.generation_kwargs["top_p"]) == (1.0, 1.0)


def test_evaluation_decoding_reaches_the_vllm_engine_settings(model, prompt_dataset, tokenizer, tmp_path):
    # vLLM (colocate and server) reads `vllm_generation.temperature` / `.top_p` at every `generate` call.
    from types import SimpleNamespace

    trainer = make_trainer(model, prompt_dataset, tokenizer, tmp_path, eval_temperature=0.6, eval_top_p=0.7)
    engine = SimpleNamespace(temperature=1.0, top_p=1.0)
    trainer.use_vllm, trainer.vllm_generation = True, engine
    trainer.model.train()
    with trainer._evaluation_decoding():
        assert (engine.temperature, engine.top_p) == (1.0, 1.0)
    trainer.model.eval()
    with trainer._evaluation_decoding():
        assert (engine.temperature, engine.top_p) == (0.6, 0.7)
    assert (engine.temperature, engine.top_p) == (1.0, 1.0)


@pytest.mark.parametrize("field, value", [("eval_temperature", 0.0), ("eval_top_p", 1.5)])
def test_bad_evaluation_decoding_names_the_field(tmp_path, field, value):
    with pytest.raises(ValueError, match=f"{field}={value!r}"):
        tiny_args(NFTConfig, tmp_path, **{field: value})


def test_trl_reads_the_decoding_settings_where_evaluation_sets_them():
    # `_evaluation_decoding` swaps these attributes; TRL must still read them at each generation, not at start-up.
    import inspect

    from trl.generation.vllm_generation import VLLMGeneration
    from trl.trainer.grpo_trainer import GRPOTrainer

    vllm_generate = inspect.getsource(VLLMGeneration.generate)
    assert "self.temperature" in vllm_generate and "self.top_p" in vllm_generate
    generate = inspect.getsource(GRPOTrainer._generate_single_turn)
    assert "generation_config=self.generation_config" in generate
    assert "generation_kwargs=self.generation_kwargs" in generate


class LabelRecordingTrainer(NFTTrainer):
    """Keeps, per generated batch, the rewards in TRL's order and the correct rates handed to the loss."""

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        mode = "train" if self.model.training else "eval"
        self.label_log = getattr(self, "label_log", []) + [(mode, self.seen_rewards, output["correct_rate"].tolist())]
        return output


def test_evaluation_groups_by_its_own_group_size(model, prompt_dataset, tokenizer, tmp_path):
    """`num_generations_eval` (2) differs from training's `num_generations` (4): eval's r̂ is the mean of each pair."""
    def recording_reward(completions, **kwargs):
        rewards = first_char_parity_reward(completions)
        trainer.seen_rewards = rewards
        return rewards

    args = tiny_args(NFTConfig, tmp_path, num_generations=4, num_generations_eval=2, per_device_eval_batch_size=16,
                     eval_strategy="no")
    trainer = LabelRecordingTrainer(model=model, reward_funcs=recording_reward, args=args,
                                    train_dataset=prompt_dataset, eval_dataset=prompt_dataset.select(range(8)),
                                    processing_class=tokenizer)
    trainer.evaluate()
    evaluated = [(rewards, rates) for mode, rewards, rates in trainer.label_log if mode == "eval"]
    assert evaluated
    for rewards, rates in evaluated:
        pairs = [sum(rewards[i : i + 2]) / 2 for i in range(0, len(rewards), 2) for _ in range(2)]
        quads = [sum(rewards[i : i + 4]) / 4 for i in range(0, len(rewards), 4) for _ in range(4)]
        assert rates == pytest.approx(pairs)
        assert pairs != quads, "the rewards must tell groups of two from groups of four"


def test_off_policy_mask_acts_on_the_reused_part_of_a_generation_batch(model, prompt_dataset, tokenizer, tmp_path):
    """Two optimizer steps per generation batch: the first is on-policy (the mask keeps everything), the second
    trains on completions of the previous policy, where TRL's mask must drop far negative-advantage sequences."""
    losses = {}
    for threshold in (None, 1e-6):
        trainer = make_trainer(copy.deepcopy(model), prompt_dataset, tokenizer, tmp_path / str(threshold),
                               steps_per_generation=2, max_steps=2, learning_rate=0.2, per_device_train_batch_size=8,
                               off_policy_mask_threshold=threshold)
        trainer.train()
        losses[threshold] = logged(trainer, "loss")
        assert min(logged(trainer, "nft/degenerate_group_frac")) < 1.0
    assert losses[None][0] == pytest.approx(losses[1e-6][0], rel=1e-6)
    assert losses[None][1] != pytest.approx(losses[1e-6][1], rel=1e-4, abs=1e-7)
