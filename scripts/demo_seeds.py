"""Run ``scale-vlm demo`` over several seeds and write a mean / spread table (``seeds.md``, ``seeds.json``).

    python scripts/demo_seeds.py --seeds 0 1 2 --output_dir runs/demo-seeds [any demo option, e.g. --max_steps 200]
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path

from scale_vlm.demo import METHODS, DemoConfig, run_demo
from scale_vlm.report import markdown_table, mean_std, over_seeds, seed_stats

METRICS = ("accuracy", "malformed_rate", "mean_think_tokens", "train_seconds")


def aggregate(per_seed: dict[int, dict]) -> dict:
    seeds = sorted(per_seed)
    methods = {s: per_seed[s]["methods"] for s in seeds}
    return {
        "seeds": seeds, "methods": over_seeds(methods, METHODS, METRICS),
        "majority_baseline": seed_stats(per_seed[s]["majority_baseline"]["accuracy"] for s in seeds),
        "scale_minus_vanilla_accuracy": seed_stats(methods[s]["scale"]["accuracy"] - methods[s]["vanilla"]["accuracy"]
                                                   for s in seeds),
    }


def table(agg: dict) -> str:
    rows = [[method, mean_std(m["accuracy"]), mean_std(m["malformed_rate"]), mean_std(m["mean_think_tokens"], 1),
             mean_std(m["train_seconds"], 0)] for method, m in agg["methods"].items()]
    rows.append(["majority answer", mean_std(agg["majority_baseline"]), "-", "-", "-"])
    lines = [
        f"Seeds: {', '.join(map(str, agg['seeds']))} (mean ± sample std; per-seed values in seeds.json)",
        "",
        markdown_table(("method", "accuracy", "malformed rate", "mean think tokens", "train wall (s)"), rows),
    ]
    d = agg["scale_minus_vanilla_accuracy"]
    per_seed = ", ".join(f"{v:+.3f}" for v in d["values"])
    lines += ["", f"SCALe minus vanilla accuracy per seed: {per_seed} (mean {d['mean']:+.3f})"]
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
            futures = {seed: pool.submit(run_demo, cfg, print) for seed, cfg in cfgs.items()}
            per_seed = {seed: f.result() for seed, f in futures.items()}
    else:
        per_seed = {seed: run_demo(cfg, print) for seed, cfg in cfgs.items()}
    agg = aggregate(per_seed)
    agg["command"] = "python scripts/demo_seeds.py " + " ".join(sys.argv[1:] if argv is None else argv)
    (out / "seeds.json").write_text(json.dumps(agg, indent=1) + "\n")
    text = table(agg)
    (out / "seeds.md").write_text(f"# scale-vlm demo over seeds\n\nCommand: `{agg['command']}`\n\n{text}\n")
    print("\n" + text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
