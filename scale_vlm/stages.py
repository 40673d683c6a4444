"""Finished-stage reuse: a stage (a base model, an SFT run, a GRPO run, an evaluation) is redone only when its config
or the code that runs it changed.

Every stage has its own folder holding ``STARTED`` (the hash of its config, written first), ``stage.json`` (its
config, that hash, its results) and a ``DONE`` marker with the same hash, written last; a training stage run
``resumable`` carries on from its last checkpoint in an unfinished folder of the same hash. The hash covers the
config and the code identity (the package version and, in a git checkout, the commit), so a stage is never reused
after the code that produced it changed. A downstream stage puts the hash of the stage it starts from in its own
config, so a redone stage redoes what follows.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

DONE = "DONE"
STAGE_FILE = "stage.json"
STARTED = "STARTED"  # the hash of the stage a folder was started for, written first

logger = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the git checkout the package runs from, or None (an installed wheel, no git)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True,
                             text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def machine() -> dict:
    """Where a run's numbers were measured: the CPU model, the GPU if one is used, and the releases of the libraries
    that compute them. Float reductions differ between CPU kinds (AVX2, AVX-512) and library releases, so two runs are
    exactly comparable only where these match; a record keeps them next to its commit."""
    import platform

    import torch
    import transformers
    import trl

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cpu_count": os.cpu_count(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "trl": trl.__version__}


def code_identity() -> dict:
    """What identifies the code that runs a stage: the package version and the git commit where there is one."""
    from . import __version__

    return {"version": __version__, "commit": git_commit()}


def config_hash(config: dict) -> str:
    """A stable short hash of a JSON-able config."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def stage_hash(config: dict) -> str:
    """The hash a stage is stored under: its config together with :func:`code_identity`."""
    return config_hash({"config": config, "code": code_identity()})


def stage_done(folder: Path, digest: str) -> bool:
    marker = folder / DONE
    return marker.is_file() and marker.read_text().strip() == digest and (folder / STAGE_FILE).is_file()


def run_stage(folder: str | Path, config: dict, fn: Callable[[Path], dict], resumable: bool = False) -> dict:
    """Run ``fn(folder) -> results`` unless ``folder`` holds a finished run of the same ``config`` and code.

    Returns the stage record ``{"config", "code", "hash", "results", "reused"}``. A started stage writes ``STARTED``
    (holding the hash) first; a finished one writes ``stage.json`` then the ``DONE`` marker (holding the hash). An
    unfinished folder of the same config and code is handed to ``fn`` again as it is when the stage is
    ``resumable`` (``fn`` resumes from the checkpoints it left there); any other unfinished or stale folder is never
    deleted: it is moved aside to ``<name>.old-<k>`` and the stage starts afresh."""
    folder = Path(folder)
    digest = stage_hash(config)
    if stage_done(folder, digest):
        record = json.loads((folder / STAGE_FILE).read_text())
        record["reused"] = True
        logger.warning("reusing finished stage %s", folder)
        return record
    started = folder / STARTED
    if resumable and started.is_file() and started.read_text().strip() == digest:
        logger.warning("resuming unfinished stage %s (same config and code) from its last checkpoint", folder)
    else:
        if folder.exists():
            k = 1
            while folder.with_name(f"{folder.name}.old-{k}").exists():
                k += 1
            aside = folder.with_name(f"{folder.name}.old-{k}")
            logger.warning("stage folder %s is unfinished or from another config or code; moving it to %s", folder,
                           aside)
            folder.rename(aside)
        folder.mkdir(parents=True)
        started.write_text(digest + "\n")
    results = fn(folder)
    record = {"config": config, "code": code_identity(), "hash": digest, "results": results}
    (folder / STAGE_FILE).write_text(json.dumps(record, indent=1, default=str) + "\n")
    (folder / DONE).write_text(digest + "\n")
    record["reused"] = False
    return record
