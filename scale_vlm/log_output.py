"""Where the pipelines' log lines go (demo, compare): progress to stdout, the package's warnings to stderr as
``warning: ...``. Below the CLI so that a pipeline's worker processes (the demo trains its methods in two) print
warnings the same way as the command that started them."""

from __future__ import annotations

import logging
import sys

WARNING_LINE = "warning: %(message)s"


class _StdoutHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stdout`` is when a line is logged, not to the stream it was when the handler was
    made: a second pipeline in one process (a notebook, a test) with stdout redirected in between logs to where its
    output goes, not to a closed stream."""

    stream_name = "stdout"

    @property
    def stream(self):
        return getattr(sys, self.stream_name)

    @stream.setter
    def stream(self, value):  # StreamHandler.__init__ sets it; the stream is read at each line instead
        pass


class _StderrHandler(_StdoutHandler):
    stream_name = "stderr"


def _pipeline_handlers(logger: logging.Logger) -> list[logging.Handler]:
    return [h for h in logger.handlers if getattr(h, "pipeline_handler", False)]


def _add_handler_once(logger: logging.Logger, handler_class, line: str, level: int = logging.NOTSET) -> None:
    if not _pipeline_handlers(logger):
        handler = handler_class()
        handler.setLevel(level)
        handler.setFormatter(logging.Formatter(line))
        handler.pipeline_handler = True
        logger.addHandler(handler)


def _add_warning_lines() -> None:
    # WARNING on the handler too: a later, more verbose package level (a test's caplog) must not print INFO here
    _add_handler_once(logging.getLogger("scale_vlm"), _StderrHandler, WARNING_LINE, logging.WARNING)


_quieted: set[str] = set()


def pipeline_logging(progress: dict[str, str] | None = None, quiet: tuple[str, ...] = ()) -> None:
    """Logging of the commands that run whole pipelines (demo, compare). The loggers in ``progress`` (name -> line
    format) send their INFO and WARNING lines (stage started, stage reused) to stdout as the run goes. Every other
    warning of the package (examples skipped, an incomplete checkpoint skipped, fewer GRPO prompts than asked, a
    budget too short) goes to stderr as ``warning: ...``: a pipeline must not hide them. The loggers in ``quiet``
    report errors only. Called again in one process, it adds no second handler."""
    logging.getLogger("scale_vlm").setLevel(logging.WARNING)
    _add_warning_lines()
    for name in _quieted - set(quiet):  # quietened by an earlier pipeline in this process
        logging.getLogger(name).setLevel(logging.NOTSET)
    for name in quiet:
        logging.getLogger(name).setLevel(logging.ERROR)
    _quieted.clear()
    _quieted.update(quiet)
    for name, line in (progress or {}).items():
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO)
        logger.propagate = False
        _add_handler_once(logger, _StdoutHandler, line)


def warnings_on_stderr() -> bool:
    """Whether this process prints the package's warnings as ``warning: ...`` lines (``pipeline_logging`` ran)."""
    return bool(_pipeline_handlers(logging.getLogger("scale_vlm")))


def worker_logging(level: int, warning_lines: bool) -> None:
    """A worker process starts with default logging (a warning would reach stderr bare, through Python's last-resort
    handler): give the package logger the caller's level and, where the caller prints ``warning: ...`` lines, the
    same handler."""
    logging.getLogger("scale_vlm").setLevel(level)
    if warning_lines:
        _add_warning_lines()


def label_warning_lines(label: str) -> None:
    """Start this process's ``warning: ...`` lines with ``label`` (a worker that trains one of several methods)."""
    for handler in _pipeline_handlers(logging.getLogger("scale_vlm")):
        handler.setFormatter(logging.Formatter(label + WARNING_LINE))
