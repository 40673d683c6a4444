"""The form of a run's prompts, recorded with the run and compared where the model is evaluated or trained further.

``scale-vlm sft`` trains on each prompt as written in the data; ``scale-vlm eval``'s ScienceQA, IconQA and
column-mapping adapters write their own (``Question: ...\\nOptions: ...\\n`` + the reasoning instruction). A model
scored on other prompts than it learnt can lose most of its accuracy with nothing to say why. So ``sft`` (and
``grpo``) write ``prompt_form.json`` next to the model, and ``eval`` (and ``grpo``) compare the prompts they are about
to use with it before the model loads, and refuse a difference unless told to go on (``--allow_prompt_mismatch``).

A form is a few observable facts of a sample of prompts: whether they are in the evaluation adapters' template, the
text every prompt begins and ends with, and two examples. Two forms differ when the template differs, or when the
common beginnings (or endings) are not one a prefix (suffix) of the other: a smaller sample of the same prompts
shares at least the text a larger one shares, so a held-out split of the training data never differs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..prompts import reasoning_instruction
from ..segments import DEFAULT_TAGS, Tags

PROMPT_FORM_FILE = "prompt_form.json"
SAMPLE_SIZE = 64  # prompts looked at: the first of the data, enough to find a template
TEMPLATE = "the evaluation adapters' template (Question: ... Options: ... + the reasoning instruction)"
AS_WRITTEN = "as written in the data"
_SHOWN = 160  # characters of an example prompt kept in the record


@dataclass
class PromptForm:
    template: str
    """``TEMPLATE`` when every prompt is in the evaluation adapters' form, else ``AS_WRITTEN``."""
    common_prefix: str
    common_suffix: str
    examples: list[str] = field(default_factory=list)
    num_prompts: int = 0
    source: str = ""
    """How the prompts were made: the data and the adapter."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> PromptForm:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def is_template(prompt: str, tags: Tags = DEFAULT_TAGS) -> bool:
    """Whether ``prompt`` is what :func:`scale_vlm.eval.adapters.build_prompt` writes."""
    return prompt.startswith(("Question: ", "Context: ")) and prompt.endswith("\n" + reasoning_instruction(tags))


def prompt_form(prompts: Sequence[str], source: str = "", tags: Tags = DEFAULT_TAGS) -> PromptForm:
    sample = [p for p in prompts[:SAMPLE_SIZE]]
    if not sample:
        raise ValueError("no prompts to take the form of")
    reversed_ = [p[::-1] for p in sample]
    return PromptForm(
        template=TEMPLATE if all(is_template(p, tags) for p in sample) else AS_WRITTEN,
        common_prefix=os.path.commonprefix(sample),
        common_suffix=os.path.commonprefix(reversed_)[::-1],
        examples=[p if len(p) <= _SHOWN else p[:_SHOWN] + "..." for p in sample[:2]],
        num_prompts=len(sample),
        source=source,
    )


def differences(trained: PromptForm, used: PromptForm) -> list[str]:
    """How the prompts ``used`` now differ from those the model was ``trained`` on (empty when they agree)."""
    found = []
    if trained.template != used.template:
        found.append(f"the model was trained on prompts {trained.template}, these are {used.template}")
    if min(trained.num_prompts, used.num_prompts) < 2:
        return found  # the common text of a single prompt is all of it: nothing to compare with
    a, b = trained.common_prefix, used.common_prefix
    if not (a.startswith(b) or b.startswith(a)):
        found.append(f"the training prompts all begin with {a[:80]!r}, these with {b[:80]!r}")
    a, b = trained.common_suffix, used.common_suffix
    if not (a.endswith(b) or b.endswith(a)):
        found.append(f"the training prompts all end with {a[-80:]!r}, these with {b[-80:]!r}")
    return found


def write_prompt_form(output_dir: str | Path, form: PromptForm) -> Path:
    path = Path(output_dir) / PROMPT_FORM_FILE
    path.write_text(json.dumps(form.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def read_prompt_form(model_dir: str | Path) -> PromptForm | None:
    """The form recorded with a model folder, or None (a base model, a hub name, a run of an older version)."""
    path = Path(model_dir) / PROMPT_FORM_FILE
    if not path.is_file():
        return None
    return PromptForm.from_dict(json.loads(path.read_text(encoding="utf-8")))


def check_prompts(model_dir: str, prompts: Sequence[str], source: str, command: str, allow: bool,
                  tags: Tags = DEFAULT_TAGS, say=None) -> dict:
    """Compare ``prompts`` with the form recorded with ``model_dir``: refused (``ValueError``) when they differ,
    unless ``allow``, then said loudly through ``say``. Returns the record for the results (``prompt_check``)."""
    used = prompt_form(prompts, source, tags)
    trained = read_prompt_form(model_dir)
    record = {"trained": trained.to_dict() if trained is not None else None, "used": used.to_dict(),
              "differences": []}
    if trained is None:
        return record
    found = differences(trained, used)
    record["differences"] = found
    if not found:
        return record
    message = (f"the prompts differ from those {model_dir} was trained on ({PROMPT_FORM_FILE}): {'; '.join(found)}. "
               f"Trained on e.g. {trained.examples[0]!r} ({trained.source}); {command} would use e.g. "
               f"{used.examples[0]!r} ({source}).")
    fix = ("score the prompts as the model saw them: pass the data in the training format (the SFT data file and "
           "its test split are read with --adapter sft, the prompts as written), or retrain on prompts in this "
           "form; --allow_prompt_mismatch true goes on anyway (the difference is recorded with the results)")
    if not allow:
        raise ValueError(f"{message} To fix: {fix}")
    (say or print)(f"scale-vlm {command}: WARNING: {message} Going on (--allow_prompt_mismatch true); the "
                   "accuracy is that of other prompts than training's.")
    return record
