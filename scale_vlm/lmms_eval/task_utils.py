"""Task functions of the ``scale_vlm_*`` lmms-eval tasks (the YAMLs in ``tasks/`` name them with ``!function``):
scale-vlm's prompt, parser and scorer, nothing new.

Each document goes through the dataset adapter that ``scale-vlm eval`` uses (:mod:`scale_vlm.eval.adapters`), so
the prompt, images, gold and choices are the ones scale-vlm trains and evaluates with. ``process_results`` scores
the raw output through :func:`scale_vlm.eval.evaluate.score_outputs`, the function behind ``scale-vlm eval``'s
predictions (its parser and scorer also give the GRPO rewards). The task YAMLs set ``reasoning_tags: none``, so
lmms-eval hands over the output with its think block, which the malformed rate and the think length need.

Think length is counted in whitespace-separated words (``think_words``): lmms-eval gives ``process_results`` no
tokenizer, so the model's own token count (``think_tokens`` in ``scale-vlm eval``) cannot be taken here.
"""

from __future__ import annotations

from scale_vlm.eval.adapters import EvalExample, iconqa_examples, scienceqa_examples
from scale_vlm.eval.evaluate import score_outputs


class _WordCounter:
    """Stands in for a tokenizer in ``score_outputs``' length counts: one 'token' per whitespace-separated word."""

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict:
        return {"input_ids": text.split()}


WORDS = _WordCounter()


def _one(examples: list[EvalExample], schema: str, doc) -> EvalExample:
    if len(examples) != 1:  # the adapters drop nothing without image_only; a changed adapter must not go unnoticed
        raise ValueError(f"{schema} document {doc.get('id', doc.get('question_id'))!r}: the adapter gave "
                         f"{len(examples)} examples instead of one")
    return examples[0]


def scienceqa_example(doc, with_images: bool = True) -> EvalExample:
    if not with_images:  # prompt, gold and choices do not depend on the image: skip decoding it
        doc = {**doc, "image": None}
    return _one(scienceqa_examples([doc]), "ScienceQA", doc)


def iconqa_example(doc) -> EvalExample:
    return _one(iconqa_examples([doc]), "IconQA", doc)


def score(example: EvalExample, results) -> dict:
    """lmms-eval metrics of one document from scale-vlm's prediction row for its (first) output."""
    (row,) = score_outputs([example], [results[0]], WORDS)
    return {
        "accuracy": float(row["correct"]),
        "malformed_rate": float(row["malformed"]),
        "think_words": float(row["think_tokens"]),
    }


def scienceqa_doc_to_visual(doc):
    return scienceqa_example(doc).images


def scienceqa_doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return scienceqa_example(doc, with_images=False).prompt


def scienceqa_doc_to_target(doc):
    return scienceqa_example(doc, with_images=False).gold


def scienceqa_process_results(doc, results):
    return score(scienceqa_example(doc, with_images=False), results)


def iconqa_doc_to_visual(doc):
    return iconqa_example(doc).images


def iconqa_doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return iconqa_example(doc).prompt


def iconqa_doc_to_target(doc):
    return iconqa_example(doc).gold


def iconqa_process_results(doc, results):
    return score(iconqa_example(doc), results)
