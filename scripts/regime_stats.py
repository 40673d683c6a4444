"""Think/answer regimes of the built-in benchmark: for a grid of trace lengths (``trace_verbosity``:``trace_repeat``)
and trace entropies (``trace_entropy``), the think and answer token counts with the shipped tiny tokenizer, their
ratio, and how random the trace text is given the item.

    python scripts/regime_stats.py [--num_examples 500] [--seed 0] [--lengths 0:0,1:0,2:0,1:2,2:2]
        [--entropies 0,1,2] [--distinct_items 20 --distinct_seeds 16] [--output_dir runs/regime_stats]

Columns: think / answer tokens (means), think/answer ratio (mean of the per-example ratios, as in
``scripts/bench_stats.py``), bits drawn per trace (``prose.Voice.bits``: the entropy of the wording decisions, an
upper bound on the entropy of the trace text given the item) and per think token, and the mean number of distinct
traces of one item over ``--distinct_seeds`` wording seeds (``trace_seed``; scenes, questions and answers fixed).
Writes ``regime_stats.md`` and ``regime_stats.json`` to ``--output_dir`` and prints the table.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from scale_vlm.bench.dataset import BenchConfig, iter_items
from scale_vlm.processors import load_processor
from scale_vlm.tiny.shipped import SHIPPED_BASE


def _pairs(text: str) -> list[tuple[int, int]]:
    out = []
    for part in text.split(","):
        v, _, r = part.strip().partition(":")
        out.append((int(v), int(r or 0)))
    return out


def measure(tok, seed: int, n: int, verbosity: int, repeat: int, entropy: int, distinct_items: int,
            distinct_seeds: int) -> dict:
    voices: list = []
    cfg = BenchConfig(seed=seed, num_examples=n, trace_verbosity=verbosity, trace_repeat=repeat,
                      trace_entropy=entropy)
    think, answer, ratio = [], [], []
    for row in iter_items(cfg, voices=voices):
        k = row["response"].index("</think>") + len("</think>")
        think.append(len(tok(row["response"][:k])["input_ids"]))
        answer.append(len(tok(row["response"][k:] + tok.eos_token)["input_ids"]))
        ratio.append(think[-1] / answer[-1])
    # the same items under other wording seeds: how many different traces one item gets
    seen: list[set[str]] = [set() for _ in range(distinct_items)]
    for s in range(distinct_seeds):
        alt = BenchConfig(seed=seed, num_examples=distinct_items, trace_verbosity=verbosity, trace_repeat=repeat,
                          trace_entropy=entropy, trace_seed=s)
        for i, row in enumerate(iter_items(alt)):
            seen[i].add(row["response"])
    bits = statistics.mean(v.bits for v in voices)
    return {
        "trace_verbosity": verbosity, "trace_repeat": repeat, "trace_entropy": entropy,
        "think_tokens": round(statistics.mean(think), 1), "answer_tokens": round(statistics.mean(answer), 2),
        "ratio": round(statistics.mean(ratio), 1), "ratio_min": round(min(ratio), 1), "ratio_max": round(max(ratio), 1),
        "bits_per_trace": round(bits, 1), "bits_per_think_token": round(bits / statistics.mean(think), 3),
        "distinct_traces": round(statistics.mean(len(s) for s in seen), 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--num_examples", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lengths", default="0:0,1:0,2:0,1:2,2:2", help="trace_verbosity:trace_repeat, comma separated")
    ap.add_argument("--entropies", default="0,1,2", help="trace_entropy levels, comma separated")
    ap.add_argument("--distinct_items", type=int, default=20)
    ap.add_argument("--distinct_seeds", type=int, default=16)
    ap.add_argument("--output_dir", default="runs/regime_stats")
    a = ap.parse_args()
    tok = load_processor(str(SHIPPED_BASE)).tokenizer
    rows = [measure(tok, a.seed, a.num_examples, v, r, int(e), a.distinct_items, a.distinct_seeds)
            for v, r in _pairs(a.lengths) for e in a.entropies.split(",")]
    lines = [
        f"{a.num_examples} examples, seed {a.seed}; distinct traces over {a.distinct_seeds} wording seeds, "
        f"mean of {a.distinct_items} items\n",
        "| verbosity:repeat | entropy | think tokens | answer tokens | think/answer ratio mean [min, max] | "
        "bits drawn / trace | bits / think token | distinct traces / item |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['trace_verbosity']}:{r['trace_repeat']} | {r['trace_entropy']} | {r['think_tokens']} | "
                     f"{r['answer_tokens']} | {r['ratio']} [{r['ratio_min']}, {r['ratio_max']}] | "
                     f"{r['bits_per_trace']} | {r['bits_per_think_token']} | {r['distinct_traces']} |")
    table = "\n".join(lines) + "\n"
    out = Path(a.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "regime_stats.md").write_text(table)
    (out / "regime_stats.json").write_text(json.dumps({"args": vars(a), "rows": rows}, indent=1))
    print(table)


if __name__ == "__main__":
    main()
