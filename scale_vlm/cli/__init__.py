"""``scale-vlm`` command line: one short module per stage, each exposing ``main(argv) -> int``.

Modules are imported only when their command runs, so ``scale-vlm --help`` stays fast.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "sft": ("scale_vlm.cli.sft", "supervised fine-tuning, vanilla or SCALe"),
    "inspect-data": ("scale_vlm.cli.inspect_data", "show every response token with its segment"),
    "plot-schedule": ("scale_vlm.cli.plot_schedule", "print or plot a think/answer weight schedule"),
    "eval": ("scale_vlm.cli.eval", "tag-aware evaluation: accuracy, malformed rate, reasoning length"),
    "demo": ("scale_vlm.cli.demo", "vanilla SFT vs SCALe-SFT on the built-in benchmark, on a CPU"),
    "grpo": ("scale_vlm.cli.grpo", "GRPO from an SFT checkpoint with tag-aware rewards"),
    "compare": ("scale_vlm.cli.compare", "the four-arm comparison: SFT, SCALe, SFT+GRPO, SCALe+GRPO"),
    "make-data": ("scale_vlm.cli.make_data", "write the built-in benchmark to disk"),
    "build-base": ("scale_vlm.cli.build_base", "build the tiny base VLM of the embedded default"),
    "lmms-eval-path": ("scale_vlm.cli.lmms_eval_path", "print the --include_path of the tag-aware lmms-eval tasks"),
}


def _usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: scale-vlm <command> [options]   (scale-vlm <command> --help)", "", "commands:"]
    tail = ["", "errors print as 'scale-vlm <command>: error: ...' with exit status 2; add --traceback for the trace"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines + tail)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from scale_vlm import __version__

        print(__version__)
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"scale-vlm: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    from .common import run_command

    module = importlib.import_module(COMMANDS[name][0])
    try:
        return run_command(name, module.main, rest)
    finally:
        end_process_group()


def end_process_group() -> None:
    """Destroy the process group ``accelerate launch`` / ``torchrun`` runs set up (Trainer never does), so its
    communication threads end before the interpreter shuts down instead of running through its teardown."""
    dist = sys.modules.get("torch.distributed")  # never imports torch for a command that did not
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    raise SystemExit(main())
