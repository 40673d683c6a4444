"""``scale-vlm demo``: vanilla SFT vs SCALe-SFT on the built-in benchmark with the tiny base VLM, on a CPU."""

from __future__ import annotations

from trl import TrlParser

from ..demo import DemoConfig, run_demo


def main(argv: list[str]) -> int:
    (cfg,) = TrlParser((DemoConfig,)).parse_args_and_config(args=argv)
    try:
        run_demo(cfg)
    except FileExistsError as err:
        print(f"scale-vlm demo: {err}")
        return 1
    return 0
