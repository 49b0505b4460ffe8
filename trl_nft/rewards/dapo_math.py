r"""The official NFT training verifier (verl's DAPO scorer, strict-box mode) as a TRL reward: 1.0 right, 0.0 wrong.

The paper's runs score training completions with a rule much stricter than math-verify. Read from the code the
official NVlabs/NFT repository runs (commit ed8e5b0; these files are unchanged at b358fae), with verl pinned at
01ef7184 (NFT ``README.md:34,52`` at ed8e5b0):

1. Routing: NFT's ``verifier.py:66-68`` sends the ``math_dapo_boxed`` data source (the DAPO training set) to verl's
   ``math_dapo.compute_score(..., strict_box_verify=True)``; ``main_nft.py:95-98`` installs that router.
2. Decoding: verl's ``workers/reward_manager/naive.py:104-113`` decodes the valid response tokens with
   ``tokenizer.decode(ids)`` -- special tokens kept -- and removes ``tokenizer.eos_token`` once if the text ends with
   it. Any other special token the model wrote stays in the text and takes up room in the window below: with
   Qwen2.5's tokenizers (eos token ``<|im_end|>``) a completion that stops on ``<|endoftext|>`` (the model config's
   eos, where generation also stops) keeps those 13 characters.
3. Window: ``math_dapo.py:278`` keeps the last 300 characters, then ``is_correct_strict_box`` (``math_dapo.py:230``)
   the last 100 of those: the last 100 characters of the decoded response.
4. Answer: ``last_boxed_only_string`` (``math_dapo.py:30-48``) finds the LAST ``\boxed{`` in the window and
   matches braces by counting every ``{`` and ``}`` (a backslash escapes nothing); an unclosed last box is no
   answer, even when an earlier box is closed. ``remove_boxed`` (``math_dapo.py:60-63``) takes the content.
5. Comparison: ``extracted_pred == gt`` (``math_dapo.py:236``), exact string equality, nothing normalised:
   against the gold ``42``, ``\boxed{ 42}`` and ``\boxed{42.0}`` are wrong.
6. Score: ±1.0 (``math_dapo.py:283``); NFT reads it as correct / wrong, so here 1.0 / 0.0.

Consequence (the paper relies on it): an answer boxed early and then followed by more than ~100 characters -- more
reasoning, or a completion that runs on until it is cut off -- is wrong here and right with `math_accuracy_reward`.
Being cut off is not itself checked: a completion truncated within 100 characters of its box is right.

The gold is read as `math_accuracy_reward` reads it (`extract_gold_answer`: a bare answer as given, surrounding
whitespace removed; a full solution's last box), so DAPO-Math-17k's ``reward_model.ground_truth`` (``"34"``)
is compared as the official run compares it.

Typical use::

    trainer = NFTTrainer(model, reward_funcs=[dapo_math_reward], ...)   # binds the trainer's tokenizer
    reward = DapoMathReward(tokenizer=tokenizer)                        # any other trainer, or by hand
"""

from __future__ import annotations

import copy
from typing import Any

from trl_nft.rewards.answers import extract_gold_answer, gold_column, matching_brace

# math_dapo.py:278 (the last 300 characters), then math_dapo.py:230 (the last 100 of those).
OFFICIAL_SCORED_CHARS = 300
OFFICIAL_BOX_WINDOW_CHARS = 100
BOX_OPENER = "\\boxed{"


def official_response_text(completion_ids: list[int], tokenizer: Any) -> str:
    """A completion as verl's reward manager sees it: special tokens kept, one trailing eos token removed."""
    text = tokenizer.decode(list(completion_ids), skip_special_tokens=False)
    eos_token = tokenizer.eos_token
    if eos_token and text.endswith(eos_token):
        text = text[: -len(eos_token)]
    return text


def strict_box_answer(response: str) -> str | None:
    r"""The content of the last ``\boxed{...}`` within the last 100 characters, braces counted; None if none."""
    window = response[-OFFICIAL_SCORED_CHARS:][-OFFICIAL_BOX_WINDOW_CHARS:]
    start = window.rfind(BOX_OPENER)
    if start < 0:
        return None
    content_start = start + len(BOX_OPENER)
    end = matching_brace(window, content_start - 1, skip_escaped=False)  # verl counts escaped braces too
    return None if end is None else window[content_start:end]  # None: the last box is not closed in the window


def strict_box_score(response: str, gold: str) -> float:
    """1.0 if the strict-box answer of ``response`` is exactly ``gold``, else 0.0."""
    return 1.0 if strict_box_answer(response) == gold else 0.0


class DapoMathReward:
    r"""The official NFT training verifier: exact match of the last ``\boxed{}`` in the last 100 decoded characters.

    Args:
        tokenizer: decodes ``completion_ids`` with their special tokens, as the official run does. `NFTTrainer`
            binds its own processing class to a reward built without one (`with_tokenizer`); with another trainer,
            or when calling the reward yourself, pass it here.
        name: ``__name__`` used by TRL for logging.

    Call it like any TRL reward function: ``reward(completions=..., completion_ids=..., answer=[...])`` (or
    ``solution=[...]``). Returns 1.0 / 0.0 per completion, ``None`` where the gold is unusable (missing, empty).
    """

    gold_columns = ("answer", "solution")  # dataset columns the gold may come from (checked by NFTTrainer)

    def __init__(self, tokenizer: Any = None, name: str = "dapo_math_reward"):
        self.tokenizer = tokenizer
        self.__name__ = name

    def with_tokenizer(self, tokenizer: Any) -> DapoMathReward:
        """This reward decoding with ``tokenizer`` (a copy; a reward that already has a tokenizer keeps it)."""
        if self.tokenizer is not None:
            return self
        bound = copy.copy(self)
        bound.tokenizer = getattr(tokenizer, "tokenizer", tokenizer)  # a multimodal processor holds its tokenizer
        return bound

    def __call__(
        self,
        completions: list,
        completion_ids: list | None = None,
        answer: list | None = None,
        solution: list | None = None,
        log_extra=None,
        log_metric=None,
        **kwargs,
    ) -> list[float | None]:
        """Score ``completions`` against the ``answer`` column (or TRL's ``solution`` column); None = skip."""
        golds = gold_column(self.__name__, answer, solution)
        if completion_ids is None:
            raise ValueError(
                f"{self.__name__} reads the generated tokens (completion_ids), as the official verifier does; TRL "
                "passes them to reward functions: when calling it yourself, pass completion_ids=[...]"
            )
        if self.tokenizer is None:
            raise ValueError(
                f"{self.__name__} has no tokenizer to decode completion_ids with their special tokens: train with "
                "NFTTrainer (it binds its processing_class), or build DapoMathReward(tokenizer=your_tokenizer)"
            )
        if not len(golds) == len(completion_ids) == len(completions):
            raise ValueError(
                f"got {len(completions)} completions, {len(completion_ids)} completion_ids and "
                f"{len(golds)} gold answers"
            )
        responses = [official_response_text(ids, self.tokenizer) for ids in completion_ids]
        predictions = [strict_box_answer(response) for response in responses]
        gold_answers = [extract_gold_answer(gold) for gold in golds]
        rewards = [
            None if gold is None else float(predicted == gold) for gold, predicted in zip(gold_answers, predictions)
        ]
        if log_extra is not None:
            log_extra("extracted_answer", ["" if p is None else p for p in predictions])
        if log_metric is not None:
            log_metric("strict_box_missing_frac", sum(p is None for p in predictions) / max(1, len(predictions)))
        return rewards

    def __repr__(self) -> str:
        tokenizer = "None" if self.tokenizer is None else type(self.tokenizer).__name__
        return f"DapoMathReward(tokenizer={tokenizer}, name={self.__name__!r})"


dapo_math_reward = DapoMathReward()
"""Default instance, without a tokenizer: `NFTTrainer` binds its own. Pass it to NFTTrainer as is."""
