"""``scale-vlm inspect-data``: render examples through a model's processor and show each response token's segment.

Human-readable by default; ``--json`` prints, per example, the decoded think and answer segments and their token
counts, then a summary of the think/answer token imbalance over the inspected examples.
"""

from __future__ import annotations

import json
import statistics
import sys
from dataclasses import dataclass, field

from trl import TrlParser

from ..segments import (
    SEGMENT_ANSWER,
    SEGMENT_NAMES,
    SEGMENT_PROMPT,
    SEGMENT_THINK,
    TagFields,
    Tags,
)


@dataclass
class InspectArguments(TagFields):
    # TRL's option names; --model / --dataset (eval's older spellings) work too, so one spelling serves every command.
    model_name_or_path: str = field(metadata={"help": "Model (for its processor and chat template).",
                                              "aliases": ["--model"]})
    dataset_name: str = field(metadata={"help": "Data file, datasets folder or dataset name.", "aliases": ["--dataset"]})
    dataset_train_split: str = field(default="train", metadata={"help": "Split to inspect."})
    num_examples: int = field(default=3, metadata={"help": "Examples to show token by token."})
    summary_examples: int | None = field(default=None, metadata={"help": "Examples in the summary (default: all)."})
    json: bool = field(default=False, metadata={"help": "Print JSON instead of the human-readable view."})
    max_length: int | None = field(default=None, metadata={"help": "Check truncation against this length."})
    image_root: str | None = field(default=None, metadata={"help": "Folder for relative image paths."})
    bad_example_policy: str = field(default="error", metadata={"help": "'error' or 'skip' bad examples."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow custom code from the model repo."})


def inspect_rows(dataset, processor, tags: Tags, max_length=None, image_root=None, limit=None, policy="error"):
    """Yield ``(index, rendered, think_ids, answer_ids)`` for each row (skipping bad ones under ``skip``)."""
    from ..data.formats import ExampleError, normalize_example
    from ..data.render import render_example

    n = len(dataset) if limit is None else min(limit, len(dataset))
    for i in range(n):
        try:
            rendered = render_example(normalize_example(dataset[i], i, image_root, tags), processor, tags, max_length, i)
        except ExampleError as err:
            if policy == "error":
                raise
            print(f"skipped {err}", file=sys.stderr)
            continue
        think = [t for t, s in zip(rendered.input_ids, rendered.segment_ids) if s == SEGMENT_THINK]
        answer = [t for t, s in zip(rendered.input_ids, rendered.segment_ids) if s == SEGMENT_ANSWER]
        yield i, rendered, think, answer


def imbalance_summary(think_counts: list[int], answer_counts: list[int]) -> dict:
    total_t, total_a = sum(think_counts), sum(answer_counts)
    return {
        "num_examples": len(think_counts),
        "mean_think_tokens": statistics.fmean(think_counts) if think_counts else 0.0,
        "mean_answer_tokens": statistics.fmean(answer_counts) if answer_counts else 0.0,
        "think_to_answer_ratio": total_t / max(total_a, 1),
        # Share of a token-mean loss that the answer receives: what vanilla SFT gives it.
        "vanilla_answer_share": total_a / max(total_t + total_a, 1),
    }


def main(argv: list[str] | None = None) -> int:
    from ..run_guard import check_local_path
    from .common import parse

    (args,) = parse(TrlParser((InspectArguments,), prog="scale-vlm inspect-data"), argv)
    if not args.model_name_or_path or not args.dataset_name:
        raise ValueError("--model_name_or_path and --dataset_name are required")
    check_local_path(args.model_name_or_path, "model")
    check_local_path(args.dataset_name, "dataset")
    from ..data.prepare import load_rows
    from ..processors import load_processor

    processor = load_processor(args.model_name_or_path, trust_remote_code=args.trust_remote_code)
    tokenizer = getattr(processor, "tokenizer", processor)
    tags = args.tags
    dataset, root = load_rows(args.dataset_name, args.dataset_train_split, args.image_root)
    shown, think_counts, answer_counts = [], [], []
    for i, rendered, think, answer in inspect_rows(
        dataset, processor, tags, args.max_length, root, args.summary_examples, args.bad_example_policy
    ):
        think_counts.append(len(think))
        answer_counts.append(len(answer))
        if len(shown) >= args.num_examples:
            continue
        entry = {
            "index": i,
            "think_text": tokenizer.decode(think),
            "answer_text": tokenizer.decode(answer),
            "think_tokens": len(think),
            "answer_tokens": len(answer),
        }
        shown.append(entry)
        if not args.json:
            print(f"=== example {i}: {len(think)} think tokens, {len(answer)} answer tokens")
            for pos, (tok, seg) in enumerate(zip(rendered.input_ids, rendered.segment_ids)):
                if seg != SEGMENT_PROMPT:
                    print(f"  {pos:5d}  {SEGMENT_NAMES[seg]:<6}  {tokenizer.convert_ids_to_tokens(tok)!r:<24} {tokenizer.decode([tok])!r}")
    summary = imbalance_summary(think_counts, answer_counts)
    if args.json:
        print(json.dumps({"examples": shown, "summary": summary}, indent=2, ensure_ascii=False))
    else:
        print(
            f"=== summary over {summary['num_examples']} examples: think {summary['mean_think_tokens']:.1f} tokens, "
            f"answer {summary['mean_answer_tokens']:.1f} tokens on average; think/answer "
            f"{summary['think_to_answer_ratio']:.1f}x; a token-mean loss gives the answer "
            f"{100 * summary['vanilla_answer_share']:.1f}% of its weight"
        )
    return 0
