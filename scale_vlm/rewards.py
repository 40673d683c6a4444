"""GRPO reward functions with TRL's signature ``f(prompts, completions, **columns) -> list[float]``.

The rewards read completions through the evaluator's parser (:func:`scale_vlm.parsing.parse_output`,
:func:`scale_vlm.parsing.is_well_formed`) and score answers with the evaluator's scorer
(:func:`scale_vlm.scoring.score_answer`), so the RL signal and the reported accuracy cannot drift apart:

* ``accuracy_reward``: 1.0 when the parsed answer scores correct against the ``answer`` column (with the
  ``choices`` column for option questions), else 0.0; exactly the ``correct`` field of ``scale-vlm eval``.
* ``format_reward``: 1.0 when the completion is exactly one closed think block followed by one closed, non-empty
  answer block (:func:`is_well_formed`), else 0.0.

Completions arrive as strings (standard prompts) or as a list of messages (conversational prompts, the VLM
case); both are handled. Weights go to ``GRPOConfig.reward_weights`` (see :class:`ScaleGRPOConfig`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .parsing import ReasoningFormat, as_tagged, is_well_formed, parse_output
from .scoring import score_answer
from .segments import DEFAULT_TAGS, Tags

RewardFunc = Callable[..., list[float]]


def completion_text(completion: Any) -> str:
    """The generated text of one completion: a string, or the concatenated text of a conversational completion
    (``[{"role": "assistant", "content": "..."}]``, content as a string or as typed parts)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        completion = [completion]
    parts: list[str] = []
    for message in completion:
        content = message.get("content", "") if isinstance(message, dict) else message
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, Sequence):
            parts += [p.get("text", "") for p in content if isinstance(p, dict) and p.get("type", "text") == "text"]
    return "".join(parts)


def _choices_at(choices: Sequence | None, index: int) -> list[str] | None:
    if choices is None:
        return None
    value = choices[index]
    return list(value) if value else None


def accuracy_reward(prompts, completions, answer, choices=None, tags: Tags = DEFAULT_TAGS, **kwargs) -> list[float]:
    """1.0 when the parsed ``<answer>`` is correct for the gold ``answer`` (option letter or short text), else 0.0."""
    if len(answer) != len(completions):
        raise ValueError(f"{len(completions)} completions but {len(answer)} gold answers")
    rewards = []
    for i, completion in enumerate(completions):
        parsed = parse_output(completion_text(completion), tags)
        rewards.append(1.0 if score_answer(parsed.answer, str(answer[i]), _choices_at(choices, i)) else 0.0)
    return rewards


def format_reward(prompts, completions, tags: Tags = DEFAULT_TAGS, **kwargs) -> list[float]:
    """1.0 for ``<think>..</think><answer>..</answer>`` exactly (both closed, in order, answer non-empty), else 0.0."""
    return [1.0 if is_well_formed(completion_text(c), tags) else 0.0 for c in completions]


REWARDS: dict[str, RewardFunc] = {"accuracy": accuracy_reward, "format": format_reward}


def make_reward_funcs(names: Sequence[str] = ("accuracy", "format"), tags: Tags = DEFAULT_TAGS,
                      reasoning: ReasoningFormat | None = None, tokenizer=None) -> list[RewardFunc]:
    """Reward functions bound to ``tags``, named ``accuracy_reward`` / ``format_reward`` (TRL logs
    ``rewards/<name>/mean`` per function). ``reasoning``: the policy family's format
    (:func:`scale_vlm.data.render.reasoning_format`); completions are read through :func:`as_tagged` first, as
    evaluation reads its outputs, so the rewards mean what accuracy and malformed rate mean. Where the family's
    delimiters are special tokens (Gemma-4's ``<|channel>``), which TRL's decoded completions drop, the completions
    are decoded again from TRL's ``completion_ids`` with ``tokenizer``, keeping them, as evaluation decodes."""
    keep: set[int] = set()
    if reasoning is not None and tokenizer is not None:
        from .eval.generate import delimiter_token_ids

        keep = delimiter_token_ids(tokenizer, reasoning)
    funcs = []
    for name in names:
        if name not in REWARDS:
            raise ValueError(f"unknown reward {name!r}; choose from {sorted(REWARDS)}")
        base = REWARDS[name]

        def bound(prompts, completions, _base=base, **kwargs):
            kwargs.pop("tags", None)
            if reasoning is not None:
                if keep and kwargs.get("completion_ids") is not None:
                    from .eval.generate import decode_completions

                    completions = decode_completions(tokenizer, kwargs["completion_ids"], keep)
                completions = [as_tagged(completion_text(c), reasoning, tags) for c in completions]
            return _base(prompts, completions, tags=tags, **kwargs)

        bound.__name__ = bound.__qualname__ = base.__name__
        bound.__doc__ = base.__doc__
        funcs.append(bound)
    return funcs
