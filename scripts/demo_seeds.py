"""Run ``scale-vlm demo`` over several seeds and write a mean / spread table (``seeds.md``, ``seeds.json``).

    python scripts/demo_seeds.py --seeds 0 1 2 --output_dir runs/demo-seeds [any demo option, e.g. --max_steps 200]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import fields
from pathlib import Path

from scale_vlm.demo import METHODS, DemoConfig, run_demo

METRICS = ("accuracy", "malformed_rate", "mean_think_tokens", "train_seconds")


def _stats(values: list[float]) -> dict:
    return {
        "mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values), "max": max(values), "values": values,
    }


def aggregate(per_seed: dict[int, dict]) -> dict:
    out = {"seeds": sorted(per_seed), "methods": {}, "majority_baseline": {}}
    for method in METHODS:
        out["methods"][method] = {m: _stats([per_seed[s]["methods"][method][m] for s in sorted(per_seed)]) for m in METRICS}
    out["majority_baseline"] = _stats([per_seed[s]["majority_baseline"]["accuracy"] for s in sorted(per_seed)])
    diffs = [per_seed[s]["methods"]["scale"]["accuracy"] - per_seed[s]["methods"]["vanilla"]["accuracy"] for s in sorted(per_seed)]
    out["scale_minus_vanilla_accuracy"] = _stats(diffs)
    return out


def table(agg: dict) -> str:
    def ms(st, scale=1.0, digits=3):
        return f"{st['mean'] * scale:.{digits}f} ± {st['std'] * scale:.{digits}f}"

    lines = [
        f"Seeds: {', '.join(map(str, agg['seeds']))} (mean ± sample std; per-seed values in seeds.json)", "",
        "| method | accuracy | malformed rate | mean think tokens | train wall (s) |", "|---|---|---|---|---|",
    ]
    for method in METHODS:
        m = agg["methods"][method]
        lines.append(f"| {method} | {ms(m['accuracy'])} | {ms(m['malformed_rate'])} | "
                     f"{ms(m['mean_think_tokens'], digits=1)} | {ms(m['train_seconds'], digits=0)} |")
    lines.append(f"| majority answer | {ms(agg['majority_baseline'])} | - | - | - |")
    d = agg["scale_minus_vanilla_accuracy"]
    lines += ["", f"SCALe minus vanilla accuracy per seed: {', '.join(f'{v:+.3f}' for v in d['values'])} "
                  f"(mean {d['mean']:+.3f})"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--output_dir", default="runs/demo-seeds")
    parser.add_argument("--jobs", type=int, default=1, help="seeds run in parallel processes (one thread each)")
    args, rest = parser.parse_known_args(argv)
    out = Path(args.output_dir)
    per_seed = {}
    known = {f.name for f in fields(DemoConfig)}
    extra = {}
    i = 0
    while i < len(rest):  # --name value pairs (or bare boolean flags) forwarded to DemoConfig
        name = rest[i].lstrip("-").replace("-", "_")
        if name not in known:
            parser.error(f"unknown option {rest[i]}")
        ftype = DemoConfig.__dataclass_fields__[name].type
        ftype = ftype if isinstance(ftype, str) else ftype.__name__
        has_value = i + 1 < len(rest) and not rest[i + 1].startswith("--")
        if ftype == "bool":
            extra[name] = rest[i + 1].lower() in ("1", "true", "yes") if has_value else True
        else:
            if not has_value:
                parser.error(f"{rest[i]} needs a value")
            extra[name] = {"int": int, "float": float}.get(ftype, str)(rest[i + 1])
        i += 2 if has_value else 1
    cfgs = {seed: DemoConfig(**{**extra, "seed": seed, "output_dir": str(out / f"seed{seed}")}) for seed in args.seeds}
    if args.jobs > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {seed: pool.submit(run_demo, cfg) for seed, cfg in cfgs.items()}
            per_seed = {seed: f.result() for seed, f in futures.items()}
    else:
        per_seed = {seed: run_demo(cfg) for seed, cfg in cfgs.items()}
    agg = aggregate(per_seed)
    agg["command"] = "python scripts/demo_seeds.py " + " ".join(sys.argv[1:] if argv is None else argv)
    (out / "seeds.json").write_text(json.dumps(agg, indent=1) + "\n")
    text = table(agg)
    (out / "seeds.md").write_text(f"# scale-vlm demo over seeds\n\nCommand: `{agg['command']}`\n\n{text}\n")
    print("\n" + text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
