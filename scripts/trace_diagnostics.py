"""Where the reasoning goes wrong: checks each step of generated traces on the built-in benchmark
(``scale_vlm.bench.diagnostics`` lists the checks).

    python scripts/trace_diagnostics.py runs/demo/vanilla/predictions.jsonl [--seed 0 --trace_entropy 2 ...]

The benchmark knobs must match the run that wrote the predictions (the held-out split is regenerated from them).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import fields

from scale_vlm.bench.dataset import make_benchmark
from scale_vlm.bench.diagnostics import diagnose
from scale_vlm.demo import DemoConfig
from scale_vlm.knobs import BENCH_KNOBS, BenchKnobs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("predictions", nargs="+", help="predictions.jsonl files (same benchmark settings)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--num_test", type=int, default=200)
    for f in fields(DemoConfig):  # the demo's benchmark knobs, with its defaults: the test split must match the run's
        if f.name not in BENCH_KNOBS:
            continue
        ap.add_argument(f"--{f.name}", type=type(f.default), default=f.default, help=f.metadata.get("help"))
    a = ap.parse_args()
    knobs = BenchKnobs(**{k: getattr(a, k) for k in BENCH_KNOBS})
    test = make_benchmark(knobs.bench(a.seed, "test", a.num_test))
    for path in a.predictions:
        with open(path) as f:
            preds = [json.loads(line) for line in f if line.strip()]
        try:
            # trace_entropy > 0 words each sentence in one of several phrasings: compare sentences by content
            print(path, json.dumps(diagnose(preds, test, paraphrased=knobs.trace_entropy > 0)))
        except ValueError as err:
            raise SystemExit(f"{path}: {err}") from None


if __name__ == "__main__":
    main()
