r"""`dapo_math_reward`: the official NFT training verifier (verl's DAPO scorer in strict-box mode).

Each expected score below is what verl's ``math_dapo.compute_score(response, gold, strict_box_verify=True)`` at the
commit NFT pins decides (mapped from ±1 to 1.0 / 0.0), with the response decoded as verl's naive reward manager
decodes it. The real Qwen2.5 tokenizer is used where special tokens matter.
"""

from __future__ import annotations

import pickle

import pytest

from trl_nft.rewards import DapoMathReward, MathAccuracyReward, dapo_math_reward
from trl_nft.rewards.dapo_math import official_response_text, strict_box_answer, strict_box_score
from trl_nft.rewards.registry import resolve_reward_funcs

FILLER = "Let me double-check this result once more by substituting it back into the equation. "  # 86 characters


@pytest.fixture(scope="module")
def reward(qwen_tokenizer):
    return dapo_math_reward.with_tokenizer(qwen_tokenizer)


def score(reward, tokenizer, texts, golds, conversational=False):
    """Score completion texts as TRL would pass them: token ids (special tokens included) and decoded completions."""
    ids = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
    decoded = tokenizer.batch_decode(ids, skip_special_tokens=True)
    completions = [[{"role": "assistant", "content": d}] for d in decoded] if conversational else decoded
    return reward(completions=completions, completion_ids=ids, answer=golds)


# ------------------------------------------------------------------------------------ the official rule
@pytest.mark.parametrize(
    "response, gold, expected",
    [
        ("The answer is \\boxed{42}.", "42", 1.0),
        ("The answer is \\boxed{ 42}.", "42", 0.0),  # a space inside the box: not the same string
        ("The answer is \\boxed{42.0}.", "42", 0.0),  # no numeric normalisation
        ("The answer is $\\boxed{42}$", "42", 1.0),
        ("First \\boxed{41}, no: \\boxed{42}", "42", 1.0),  # the last box wins
        ("First \\boxed{42}, no: \\boxed{41}", "42", 0.0),
        ("So \\boxed{42} and also \\boxed{4", "42", 0.0),  # the last box is unclosed: no answer at all
        ("The answer is 42.", "42", 0.0),  # no box
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}", 1.0),  # nested braces matched
        ("\\boxed{\\dfrac{1}{2}}", "\\frac{1}{2}", 0.0),
        ("\\boxed{\\{1,2\\}}", "\\{1,2\\}", 1.0),  # escaped braces are counted like any brace, as in verl
        ("\\boxed{x\\}", "x\\", 1.0),  # so an escaped `\}` closes the box
        ("\\boxed 42", "42", 0.0),  # only `\boxed{` opens a box
        ("\\fbox{42}", "42", 0.0),
    ],
)
def test_strict_box_rule(response, gold, expected):
    assert strict_box_score(response, gold) == expected


def test_only_the_last_100_characters_are_read():
    box = "\\boxed{42}"
    inside = box + "x" * (100 - len(box))  # the box opens exactly 100 characters before the end
    assert len(inside) == 100 and strict_box_answer("y" * 500 + inside) == "42"
    assert strict_box_answer("y" * 500 + inside + "x") is None  # one character more: `\` falls out of the window
    assert strict_box_answer("\\boxed{42}" + "x" * 95) is None  # the box is cut at the window's start
    # a box whose opening fell out of the window: only the later, complete one is seen
    assert strict_box_answer("\\boxed{\\frac{1}{2}}" + "x" * 85 + "\\boxed{7}") == "7"


def test_the_window_is_taken_before_the_box_is_searched():
    # The last box is unclosed and the closed one sits >100 characters back: wrong. A search over the whole text
    # from the end (a different rule) would also find nothing; one over the closed boxes only would say right.
    assert strict_box_score("\\boxed{42}" + FILLER + "\\boxed{", "42") == 0.0
    assert strict_box_score("\\boxed{42}" + FILLER, "42") == 1.0  # 86 characters after it: still inside


# ---------------------------------------------------------------------- decoding, with the real tokenizer
def test_decoded_like_verl_special_tokens_kept_one_trailing_eos_removed(qwen_tokenizer):
    def response(text):
        return official_response_text(qwen_tokenizer(text, add_special_tokens=False)["input_ids"], qwen_tokenizer)

    assert qwen_tokenizer.eos_token == "<|im_end|>"  # as in Qwen2.5's own tokenizer files
    assert response("\\boxed{42}<|im_end|>") == "\\boxed{42}"
    assert response("\\boxed{42}<|im_end|><|im_end|>") == "\\boxed{42}<|im_end|>"  # removed once only
    assert response("\\boxed{42}<|endoftext|>") == "\\boxed{42}<|endoftext|>"  # not the eos token: kept


def test_a_generated_end_token_counts_inside_the_window(reward, qwen_tokenizer):
    # 85 characters after the box. Generation also stops at `<|endoftext|>` (Qwen2.5's model config), which is not
    # the tokenizer's eos token: verl keeps its 13 characters, and the box's `\` falls out of the window.
    tail = "\\boxed{42}" + "y" * 85
    texts = [tail + "<|endoftext|>", tail + "<|im_end|>", tail]
    assert score(reward, qwen_tokenizer, texts, ["42"] * 3) == [0.0, 1.0, 1.0]


def test_plain_and_chat_completions_score_alike(reward, qwen_tokenizer):
    texts = ["Thus \\boxed{12}<|im_end|>", "Thus \\boxed{ 12}<|im_end|>", "Thus 12<|im_end|>", "\\boxed{12}"]
    plain = score(reward, qwen_tokenizer, texts, ["12"] * 4)
    chat = score(reward, qwen_tokenizer, texts, ["12"] * 4, conversational=True)
    assert plain == chat == [1.0, 0.0, 0.0, 1.0]


# --------------------------------------------------------------- where it and math_accuracy_reward differ
def test_disagrees_with_math_accuracy_on_long_tails_only(reward, qwen_tokenizer):
    math_accuracy = MathAccuracyReward(num_workers=0)  # in-process: no worker pool in a unit test
    cases = {
        # boxed early, then more than 100 characters of further text before the end token
        "boxed_then_continued": ("So \\boxed{42}. " + FILLER * 2 + "<|im_end|>", 0.0, 1.0),
        # cut off at the length limit (no end token) 150 characters after its box
        "truncated_far_after_box": ("So \\boxed{42}. " + FILLER + FILLER[:64], 0.0, 1.0),
        # cut off shortly after its box: the official rule has no truncation check, so it is right
        "truncated_near_box": ("So \\boxed{42}. Let me che", 1.0, 1.0),
        "not_normalised": ("So \\boxed{42.0}<|im_end|>", 0.0, 1.0),
        "agree_right": ("So \\boxed{42}<|im_end|>", 1.0, 1.0),
        "agree_wrong": ("So \\boxed{41}<|im_end|>", 0.0, 0.0),
    }
    texts = [text for text, _, _ in cases.values()]
    ids = [qwen_tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
    decoded = qwen_tokenizer.batch_decode(ids, skip_special_tokens=True)
    official = reward(completions=decoded, completion_ids=ids, answer=["42"] * len(texts))
    lenient = math_accuracy(completions=decoded, answer=["42"] * len(texts))
    assert dict(zip(cases, official)) == {name: expected for name, (_, expected, _) in cases.items()}
    assert dict(zip(cases, lenient)) == {name: expected for name, (_, _, expected) in cases.items()}


# ------------------------------------------------------------------------------------------- golds, errors
def test_gold_columns_and_unusable_golds(reward, qwen_tokenizer):
    ids = [qwen_tokenizer("\\boxed{34}", add_special_tokens=False)["input_ids"]] * 4
    completions = ["\\boxed{34}"] * 4
    assert reward(completions=completions, completion_ids=ids, answer=["34", " 34\n", "35", None]) == [
        1.0, 1.0, 0.0, None,  # surrounding whitespace of a gold cell is not part of the answer; None: unusable
    ]
    solutions = ["We find $\\boxed{34}$.", "34", "", 34]  # a full solution's last box, a bare answer, empty, a number
    assert reward(completions=completions, completion_ids=ids, solution=solutions) == [1.0, 1.0, None, 1.0]
    assert DapoMathReward.gold_columns == ("answer", "solution")


def test_errors_name_what_is_missing(reward, qwen_tokenizer):
    ids = [qwen_tokenizer("\\boxed{1}", add_special_tokens=False)["input_ids"]]
    with pytest.raises(ValueError, match=r"has no tokenizer.*NFTTrainer.*DapoMathReward\(tokenizer="):
        dapo_math_reward(completions=["\\boxed{1}"], completion_ids=ids, answer=["1"])
    with pytest.raises(ValueError, match=r"completion_ids"):
        reward(completions=["\\boxed{1}"], answer=["1"])
    with pytest.raises(ValueError, match=r"`answer` \(or `solution`\) column"):
        reward(completions=["\\boxed{1}"], completion_ids=ids)
    with pytest.raises(ValueError, match=r"1 completions, 1 completion_ids and 2 gold answers"):
        reward(completions=["\\boxed{1}"], completion_ids=ids, answer=["1", "2"])


def test_binding_copies_and_keeps_an_explicit_tokenizer(qwen_tokenizer, tokenizer):
    bound = dapo_math_reward.with_tokenizer(qwen_tokenizer)
    assert bound is not dapo_math_reward and dapo_math_reward.tokenizer is None  # the shared default stays unbound
    assert bound.tokenizer is qwen_tokenizer and bound.__name__ == "dapo_math_reward"
    explicit = DapoMathReward(tokenizer=tokenizer)  # the character tokenizer, chosen by the user
    assert explicit.with_tokenizer(qwen_tokenizer) is explicit
    restored = pickle.loads(pickle.dumps(bound))
    ids = [qwen_tokenizer("\\boxed{5}<|im_end|>", add_special_tokens=False)["input_ids"]]
    assert restored(completions=["\\boxed{5}"], completion_ids=ids, answer=["5"]) == [1.0]


def test_logs_the_extracted_answers(reward, qwen_tokenizer):
    logged, metrics = {}, {}
    texts = ["\\boxed{7}", "no box"]
    ids = [qwen_tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    reward(completions=texts, completion_ids=ids, answer=["7", "7"], log_extra=logged.__setitem__,
           log_metric=metrics.__setitem__)
    assert logged == {"extracted_answer": ["7", ""]} and metrics == {"strict_box_missing_frac": 0.5}


def test_registered_name_resolves_to_an_unbound_reward():
    (resolved,) = resolve_reward_funcs(["dapo_math_reward"])
    assert isinstance(resolved, DapoMathReward) and resolved.tokenizer is None
    assert resolved.__name__ == "dapo_math_reward"
