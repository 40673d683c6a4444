"""What every command shares: parsing with readable errors, and one error style (``scale-vlm CMD: error: ...``).

A user mistake (bad data, a bad option value, a typo'd flag, a missing file) is printed as the message (which names
the example), the fix, and exit status 2; the traceback only with ``--traceback`` (or ``SCALE_VLM_TRACEBACK=1``).
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import sys

TRACEBACK_FLAG = "--traceback"
# Errors a user can cause with their data, options or files; anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, OSError)


def parse(parser, argv):
    """``parser.parse_args_and_config(argv)``, with unknown flags reported by name and the closest known ones.

    Unknown flags are looked for first: a typo'd flag would otherwise surface as whatever a config's validation
    says about the option it failed to set (e.g. "--dataset_name is required" for ``--datset_name``)."""
    argv = list(argv or [])
    plain = list(argv)
    if "--config" in plain:  # TrlParser reads --config FILE itself; argparse does not know it
        i = plain.index("--config")
        config = plain[i + 1] if i + 1 < len(plain) else None
        if config is None or not os.path.isfile(config):
            raise FileNotFoundError(
                f"--config {config!r} not found (looked for {os.path.abspath(config or '')}); check the path: a YAML "
                "file of options, such as the scale_config.yaml a run writes" if config else
                "--config needs a YAML file of options, e.g. --config run/scale_config.yaml")
        del plain[i:i + 2]
    given, remaining = _given_options(parser, plain)
    unknown = [a for a in remaining if a.startswith("-")]
    if unknown:
        raise _unknown_options(parser, unknown)
    _accept_alias_keys_in_config(parser, given)
    from ..knobs import options_given

    try:
        with options_given(given):  # --quick keeps them, even at their default values
            return parser.parse_args_and_config(argv)
    except ValueError as err:
        match = re.match(r"Some specified arguments are not used by the HfArgumentParser: (\[.*\])", str(err))
        if not match:
            raise
        raise _unknown_options(parser, re.findall(r"'([^']*)'", match.group(1)) or [match.group(1)]) from None


def _given_options(parser, argv: list[str]) -> tuple[set[str], list[str]]:
    """The options ``argv`` sets (their ``dest``), read by argparse itself, so that every spelling it accepts counts
    (``--name v``, ``--name=v``, an alias, an abbreviation such as ``--num_tr``), and the tokens it did not know.

    argparse fills in a default only where the namespace lacks the attribute: every option starts at a marker, and
    those that no longer hold it were given. Options required on the command line may come from the --config file
    instead, so none is required for this look."""
    unset = object()
    namespace = argparse.Namespace(**{action.dest: unset for action in parser._actions
                                      if action.dest is not argparse.SUPPRESS})
    required = [action for action in parser._actions if action.required]
    for action in required:
        action.required = False
    try:
        _, remaining = parser.parse_known_args(argv, namespace)
    finally:
        for action in required:
            action.required = True
    return {dest for dest, value in vars(namespace).items() if value is not unset}, remaining


def _accept_alias_keys_in_config(parser, given: set[str]) -> None:
    """Let a ``--config`` file use an option's alias as its key (``model:`` for ``model_name_or_path:``), as the
    command line does: TrlParser matches config keys against option names only. The options the file sets are
    added to ``given``."""
    original = getattr(parser, "set_defaults_with_config", None)
    if original is None:
        return
    original = getattr(original, "original", original)

    def set_defaults_with_config(**kwargs):
        renamed = {}
        for key, value in kwargs.items():
            action = parser._option_string_actions.get(f"--{key}")
            renamed[action.dest if action is not None else key] = value
        given.update(renamed)
        return original(**renamed)

    set_defaults_with_config.original = original
    parser.set_defaults_with_config = set_defaults_with_config


def _unknown_options(parser, unknown: list[str]) -> ValueError:
    # argparse also registers a dashed alias of every underscored flag, and some options have older spellings
    # (--model for --model_name_or_path): match against all of them, suggest the option's own name (what the docs use).
    def documented(s: str) -> bool:
        return s.startswith("--") and "-" not in s[2:]

    known = {s: next(o for o in a.option_strings if documented(o))
             for s, a in parser._option_string_actions.items() if documented(s)}
    hints = []
    for flag in unknown:
        close = difflib.get_close_matches(flag.split("=")[0], list(known), n=3, cutoff=0.75)
        names = list(dict.fromkeys(known[c] for c in close))[:2]
        if names:
            hints.append(f"{flag} -> {' or '.join(names)}?")
    message = f"unknown option(s) {', '.join(unknown)}"
    if hints:
        message += f" (did you mean: {'; '.join(hints)})"
    return ValueError(f"{message}; see {parser.prog} --help")


def fix_hint(command: str, err: BaseException) -> str | None:
    from ..data.formats import ExampleError

    if isinstance(err, ExampleError) and command in ("sft", "inspect-data"):
        hint = ("fix or remove that example, or pass --bad_example_policy skip to drop bad examples "
                "(they are counted by reason in the report)")
        if "missing tag" in str(err):  # every example fails alike when the data uses other tag names
            hint += ("; if your data marks reasoning and answer with other tags, name them: --think_open "
                     "--think_close --answer_open --answer_close (see scale-vlm inspect-data)")
        return hint
    return None


def report_error(command: str, err: BaseException) -> int:
    """Print ``scale-vlm COMMAND: error: MESSAGE`` (+ the fix) to stderr; returns the exit status 2."""
    text = str(err) if str(err) else type(err).__name__
    prefix = f"scale-vlm {command}: "
    text = text.removeprefix(prefix)  # messages already addressed to the user by the command
    lines = [f"{prefix}error: {text}"]
    hint = fix_hint(command, err)
    if hint:
        lines.append(f"  fix: {hint}")
    lines.append(f"  (add {TRACEBACK_FLAG} to see where it was raised)")
    print("\n".join(lines), file=sys.stderr, flush=True)
    return 2


_debug = False  # set while a command runs under --traceback (commands may nest run_command)


def run_command(command: str, main, argv: list[str]) -> int:
    """Run a command's ``main(argv)`` under the one error style."""
    global _debug
    outer = _debug
    debug = _debug or TRACEBACK_FLAG in argv or os.environ.get("SCALE_VLM_TRACEBACK", "") not in ("", "0")
    argv = [a for a in argv if a != TRACEBACK_FLAG]
    _debug = debug
    try:
        return int(main(argv) or 0)
    except SystemExit as exit_:
        if isinstance(exit_.code, str) and not debug:  # raise SystemExit("message"): same style as the rest
            return report_error(command, exit_)
        raise
    except USER_ERRORS as err:
        if debug:
            raise
        return report_error(command, err)
    except KeyboardInterrupt:
        print(f"scale-vlm {command}: interrupted", file=sys.stderr)
        return 130
    finally:
        _debug = outer
