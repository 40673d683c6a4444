"""Guards that keep a run from losing work or silently continuing someone else's run.

- ``check_output_writable``: an output folder that cannot be written is found before training, not at the final save.
- The one output-folder rule of every command (``RunFiles``, ``check_output_dir``, ``move_previous_run_aside``): a
  folder holding a previous run of the command is refused, and with ``--overwrite_output_dir`` that run's files are
  moved into ``previous-run-<time>/`` (never deleted), so old and new files are never mixed.
- The run fingerprint (a digest of the prepared training data and the training-relevant settings) is written into
  every checkpoint, inside ``trainer_state.json`` (and as ``scale_run.json`` beside it); resuming from a checkpoint whose fingerprint differs is refused, so a stale
  checkpoint of another run (other data, a finished schedule) is never taken for this run's.
- ``looks_local`` / ``check_local_path``: a path that is clearly meant to be local and does not exist is "not found"
  at once, instead of becoming a slow hub lookup that fails with an unrelated error.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .sft_config import SEGMENT_LOSS_FIELDS

logger = logging.getLogger(__name__)

FINGERPRINT_FILE = "scale_run.json"
# Settings that change what a resumed step computes. A checkpoint written under other values cannot continue this run.
# The upstream training settings, shared by SFT and GRPO:
TRAINING_FINGERPRINT_FIELDS = (
    "learning_rate", "lr_scheduler_type", "warmup_steps", "weight_decay", "max_steps", "num_train_epochs",
    "per_device_train_batch_size", "gradient_accumulation_steps", "seed", "data_seed", "optim", "adam_beta1",
    "adam_beta2", "adam_epsilon", "max_grad_norm",
)
# SFT: and the segment loss's settings (derived from the config's declarations).
FINGERPRINT_FIELDS = (*SEGMENT_LOSS_FIELDS, "max_length", "freeze_vision_tower", *TRAINING_FINGERPRINT_FIELDS)
# GRPO: and what a step samples, how it is rewarded and how the loss is formed (the reward functions' code is not
# fingerprinted, only their weights).
GRPO_FINGERPRINT_FIELDS = (
    *TRAINING_FINGERPRINT_FIELDS, "num_generations", "max_completion_length", "temperature", "top_p", "top_k", "beta",
    "loss_type", "epsilon", "epsilon_high", "scale_rewards", "reward_weights", "num_iterations",
    "steps_per_generation", "accuracy_weight", "format_weight",
)
# The prepared columns an SFT step reads; a GRPO run's prompts, images and graded answers.
SFT_DATA_COLUMNS = ("input_ids", "labels", "segment_ids", "images")
GRPO_DATA_COLUMNS = ("prompt", "images", "answer", "choices")
DATA_EXTENSIONS = (".json", ".jsonl", ".parquet", ".csv", ".arrow", ".txt")


# ------------------------------------------------------------------------------------------- output folder


def check_output_writable(output_dir: str | os.PathLike, what: str = "output_dir") -> None:
    """Create ``output_dir`` if needed and write (then delete) a probe file; raise a readable error if that fails."""
    out = os.fspath(output_dir)
    try:
        os.makedirs(out, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-check-", delete=True) as f:
            f.write(b"ok")
            f.flush()
    except OSError as err:
        raise PermissionError(
            f"cannot write to {what} {out!r} ({err.strerror or err}); choose a folder you can write to, "
            "checked now so that no training is lost at save time"
        ) from err


# What ``save_pretrained`` of a model and its processor writes beside the weights (the weights are each command's
# markers): moved with a previous run so that the folder aside is a loadable model and none of it is taken for the
# new run's (a LoRA run's adapter_config.json beside a full model's weights would be).
MODEL_FILES = (
    "config.json", "generation_config.json", "model-*-of-*.safetensors", "adapter_config.json", "training_args.bin",
    "preprocessor_config.json", "processor_config.json", "video_preprocessor_config.json", "tokenizer.json",
    "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json", "added_tokens.json", "vocab.json",
    "merges.txt", "chat_template.jinja", "chat_template.json",
)
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors")
PREVIOUS_RUN = "previous-run-"


@dataclass(frozen=True)
class RunFiles:
    """The files one command writes into its output folder, as ``fnmatch`` patterns of top-level names.

    ``markers``: any of them means a previous run of the command is there. ``companions``: also that run's, moved
    with it, but not reason enough to refuse a folder (a README.md or config.json may be the user's own).
    ``resume``: how the command continues a run, for the commands that can."""

    command: str
    markers: tuple[str, ...]
    companions: tuple[str, ...] = ()
    resume: str | None = None

    def _matching(self, names: list[str], patterns: tuple[str, ...]) -> list[str]:
        return [n for n in names if not n.startswith(PREVIOUS_RUN) and any(fnmatch.fnmatchcase(n, p) for p in patterns)]

    def found(self, folder: str | os.PathLike) -> list[str]:
        """The markers present in ``folder`` (sorted); empty when there is no previous run."""
        folder = os.fspath(folder)
        return self._matching(sorted(os.listdir(folder)), self.markers) if os.path.isdir(folder) else []

    def to_move(self, folder: str | os.PathLike) -> list[str]:
        """The previous run's files: its markers first, then its companions; empty when there is no previous run."""
        markers = self.found(folder)
        if not markers:
            return []
        rest = [n for n in self._matching(sorted(os.listdir(folder)), self.companions) if n not in markers]
        return markers + rest


class PreviousRunError(FileExistsError):
    """The output folder holds a previous run of the command and neither resuming nor overwriting was asked for."""


def _names(names: list[str], shown: int) -> str:
    more = len(names) - shown
    return ", ".join(names[:shown]) + (f" and {more} more" if more > 0 else "")


def check_output_dir(output_dir: str | os.PathLike, run: RunFiles, overwrite: bool, resuming: bool = False,
                     inputs: Mapping[str, str | None] | None = None, what: str = "--output_dir") -> list[str]:
    """Refuse ``output_dir`` when it holds a previous run of ``run.command`` (unless ``overwrite`` or ``resuming``);
    returns the markers found. ``inputs`` (option -> path this command reads): with ``overwrite``, an input inside
    the files to be moved aside is refused, since the command would then not find it."""
    folder = os.fspath(output_dir)
    found = run.found(folder)
    if not found or resuming:
        return found
    if not overwrite:
        fix = (f"choose another {what}, or pass --overwrite_output_dir to move that run's files into "
               f"{os.path.join(folder, PREVIOUS_RUN)}<time>/ (nothing is deleted)")
        fix = f"{run.resume}, {fix}" if run.resume else fix
        raise PreviousRunError(f"scale-vlm {run.command}: {what} {folder!r} already holds a run of scale-vlm "
                               f"{run.command} ({_names(found, 3)}). {fix[0].upper()}{fix[1:]}.")
    moved = [os.path.realpath(os.path.join(folder, n)) for n in run.to_move(folder)]
    for option, path in (inputs or {}).items():
        real = os.path.realpath(os.path.expanduser(path)) if path else None
        if real and (real == os.path.realpath(folder) or any(real == m or real.startswith(m + os.sep) for m in moved)):
            raise ValueError(
                f"scale-vlm {run.command}: {option} {path!r} is read from {what} {folder!r}, whose previous run "
                f"--overwrite_output_dir would move aside before it is read; choose another {what}"
            )
    return found


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) == 0


def move_previous_run_aside(output_dir: str | os.PathLike, run: RunFiles, overwrite: bool, resuming: bool = False,
                            say: Callable[[str], None] | None = None) -> Path | None:
    """With ``overwrite`` (and not ``resuming``), move the previous run's files (``run.to_move``) into a new
    ``output_dir/previous-run-YYYYmmdd-HHMMSS/`` and say so in one line (stderr by default); other files stay.
    Moved, not deleted: the user may still want them; and none is taken for the new run's (a later
    ``--resume_from_checkpoint true`` cannot find the old checkpoints). Only the main process moves (the other ranks
    of a distributed run see the same folder). Returns the folder they went to, or None."""
    folder = Path(output_dir)
    if not overwrite or resuming or not _is_main_process():
        return None
    names = run.to_move(folder)
    if not names:
        return None
    stamp = time.strftime(f"{PREVIOUS_RUN}%Y%m%d-%H%M%S")
    aside, n = folder / stamp, 1
    while True:
        try:
            aside.mkdir()
            break
        except FileExistsError:  # a second overwrite within the same second
            n += 1
            aside = folder / f"{stamp}-{n}"
    for name in names:
        shutil.move(folder / name, aside / name)
    line = (f"scale-vlm {run.command}: --overwrite_output_dir: moved the previous run's {_names(names, 4)} to "
            f"{aside} (delete it when no longer needed)")
    (say or (lambda text: print(text, file=sys.stderr, flush=True)))(line)
    return aside


# ------------------------------------------------------------------------------------------- fingerprint


def dataset_digest(dataset, columns: tuple[str, ...] = SFT_DATA_COLUMNS) -> str:
    """SHA-256 of the rows the trainer feeds the model: by default the prepared SFT rows (token ids, labels,
    segments, images); token-id columns as int64, images by their bytes, any other column (GRPO's prompt messages,
    answers, choices) as the JSON of its values."""
    import pyarrow.compute as pc

    columns = [c for c in columns if c in dataset.column_names]
    h = hashlib.sha256(repr((len(dataset), columns)).encode())
    for batch in dataset.select_columns(columns).with_format("arrow").iter(batch_size=1000):
        for name in columns:
            col = batch.column(name)
            if name not in SFT_DATA_COLUMNS:
                h.update(json.dumps(col.to_pylist(), sort_keys=True, default=str).encode())
                continue
            # list_flatten and list_value_length respect slices, so only this batch's values are hashed.
            h.update(pc.list_value_length(col).to_numpy(zero_copy_only=False).tobytes())
            values = pc.list_flatten(col)
            if name == "images":
                for image in values.to_pylist():
                    image = image if isinstance(image, dict) else {"path": image}  # a path column, not decoded
                    h.update(repr((image.get("path"), len(image.get("bytes") or b""))).encode())
                    h.update(image.get("bytes") or b"")
            else:
                h.update(values.to_numpy(zero_copy_only=False).astype("int64").tobytes())
    return h.hexdigest()


def _plain(value):
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(getattr(value, "value", value))


def run_fingerprint(train_dataset, args, fields: tuple[str, ...] = FINGERPRINT_FIELDS,
                    columns: tuple[str, ...] = SFT_DATA_COLUMNS) -> dict:
    return {
        "data_sha256": dataset_digest(train_dataset, columns),
        "num_examples": len(train_dataset),
        "config": {name: _plain(getattr(args, name, None)) for name in fields},
    }


def attach_run_fingerprint(trainer, fields: tuple[str, ...] = FINGERPRINT_FIELDS,
                           columns: tuple[str, ...] = SFT_DATA_COLUMNS) -> None:
    """Compute the trainer's run fingerprint and write it into every checkpoint it saves: inside
    ``trainer_state.json`` (a stateful callback's state, written in the same file and moment as the step, the file
    that marks a checkpoint complete, so a complete checkpoint always holds it) and as ``scale_run.json`` beside it
    (to read; written after, so a crash can leave it short, and never relied on when the first copy is there)."""
    from transformers import TrainerCallback
    from transformers.trainer_callback import ExportableState

    fingerprint = run_fingerprint(trainer.train_dataset, trainer.args, fields, columns)
    trainer.run_fingerprint = fingerprint

    class WriteRunFingerprint(TrainerCallback, ExportableState):
        def __init__(self, fingerprint: dict):
            self.fingerprint = fingerprint

        def state(self) -> dict:
            return {"args": {"fingerprint": self.fingerprint}, "attributes": {}}

        def on_save(self, args, state, control, **kwargs):
            folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
            if state.is_world_process_zero and os.path.isdir(folder):
                path = os.path.join(folder, FINGERPRINT_FILE)
                with open(path + ".tmp", "w") as f:
                    json.dump(self.fingerprint, f, indent=1)
                os.replace(path + ".tmp", path)  # whole or absent, never half-written

    trainer.add_callback(WriteRunFingerprint(fingerprint))


def stored_fingerprint(checkpoint: str) -> dict | None:
    """The run fingerprint a checkpoint holds: the copy in its ``trainer_state.json``, else (checkpoints of earlier
    versions) its ``scale_run.json``, else None."""
    with open(os.path.join(checkpoint, "trainer_state.json")) as f:
        saved = (json.load(f).get("stateful_callbacks") or {}).get("WriteRunFingerprint")
    if isinstance(saved, dict) and isinstance(saved.get("args", {}).get("fingerprint"), dict):
        return saved["args"]["fingerprint"]
    path = os.path.join(checkpoint, FINGERPRINT_FILE)
    if os.path.isfile(path):
        with open(path) as f:
            return json.load(f)
    return None


class StaleCheckpointError(ValueError):
    """Resuming from a checkpoint written by a run with other data or settings."""


def fingerprint_mismatch(saved: dict, current: dict) -> list[str]:
    """Human-readable differences between a checkpoint's fingerprint and this run's (empty when they match)."""
    problems = []
    if saved.get("data_sha256") != current["data_sha256"]:
        problems.append(
            f"the training data differ ({saved.get('num_examples')} prepared examples with digest "
            f"{str(saved.get('data_sha256'))[:12]} in the checkpoint, {current['num_examples']} with digest "
            f"{current['data_sha256'][:12]} now)"
        )
    old = saved.get("config", {})
    for name, value in current["config"].items():
        if name in old and old[name] != value:
            problems.append(f"{name} is {old[name]!r} in the checkpoint but {value!r} now")
    return problems


def is_complete_checkpoint(path: str) -> bool:
    """Trainer writes ``trainer_state.json`` last: a checkpoint without a readable one was cut short by a crash."""
    state = os.path.join(path, "trainer_state.json")
    try:
        with open(state) as f:
            json.load(f)
    except (OSError, ValueError):
        return False
    return any(os.path.exists(os.path.join(path, w)) for w in ("model.safetensors", "model.safetensors.index.json",
                                                                 "adapter_model.safetensors"))


def checkpoints_newest_first(output_dir: str | os.PathLike) -> list[str]:
    """The ``checkpoint-<step>`` folders of ``output_dir``, the highest step first (none: no folder)."""
    steps = []
    for name in os.listdir(output_dir) if os.path.isdir(output_dir) else []:
        if name.startswith("checkpoint-") and name.split("-", 1)[1].isdigit():
            steps.append((int(name.split("-", 1)[1]), os.path.join(output_dir, name)))
    return [path for _, path in sorted(steps, reverse=True)]


def asks_resume(resume) -> bool:
    """Whether a ``--resume_from_checkpoint`` value asks to resume (``true``, ``last`` or a path)."""
    return resume not in (None, False, "", "false", "False")


def resolve_resume_checkpoint(output_dir: str, resume) -> str | None:
    """``--resume_from_checkpoint true`` -> the newest *complete* checkpoint of ``output_dir``; a path is checked."""
    if not asks_resume(resume):
        return None
    if resume is True or str(resume).lower() in ("true", "last"):
        for path in checkpoints_newest_first(output_dir):
            if is_complete_checkpoint(path):
                return path
            logger.warning("skipping incomplete checkpoint %s (the run died while writing it)", path)
        raise ValueError(f"no complete checkpoint to resume from in {output_dir!r}; start without "
                         "--resume_from_checkpoint")
    if not is_complete_checkpoint(str(resume)):
        raise ValueError(f"{resume!r} is not a complete checkpoint (no trainer_state.json or weights); pass "
                         "--resume_from_checkpoint true to take the newest complete one")
    return str(resume)


def check_resume(trainer, resume_from_checkpoint):
    """Resolve ``resume_from_checkpoint`` by the one rule of ``resolve_resume_checkpoint`` (``True`` -> the newest
    complete ``checkpoint-N``, never a half-written one) and refuse a checkpoint written by another run. Returns the
    value to pass on to ``Trainer.train``."""
    path = resolve_resume_checkpoint(trainer.args.output_dir, resume_from_checkpoint)
    if path is None:
        return resume_from_checkpoint
    current = getattr(trainer, "run_fingerprint", None)
    if current is None:
        return path
    saved = stored_fingerprint(path)
    if saved is None:
        logger.warning("%s has no run fingerprint (written by another tool or an older version): cannot check that "
                       "it belongs to this run", path)
        return path
    problems = fingerprint_mismatch(saved, current)
    if problems:
        raise StaleCheckpointError(
            f"refusing to resume from {path}: it was written by a different run: " + "; ".join(problems)
            + ". Resume with the data and settings of that run, or start this run afresh with "
            "--overwrite_output_dir (the old checkpoints are moved aside) or another --output_dir"
        )
    return path


# ------------------------------------------------------------------------------------------- local paths


def looks_local(name: str) -> bool:
    """True when ``name`` is clearly a local path rather than a hub id ``owner/name``: absolute, ``./``/``../``/``~``,
    Windows-style, a data-file extension, more than one ``/``, or a first component that is a local folder."""
    if not name:
        return False
    if os.path.isabs(name) or name.startswith((".", "~")) or "\\" in name:
        return True
    if name.lower().endswith(DATA_EXTENSIONS):
        return True
    parts = name.split("/")
    if len(parts) > 2:
        return True
    return len(parts) == 2 and os.path.isdir(parts[0])


def check_local_path(name: str | None, what: str) -> None:
    """Raise ``FileNotFoundError`` at once for a missing path that is clearly meant to be local."""
    if name and looks_local(name) and not os.path.exists(os.path.expanduser(name)):
        raise FileNotFoundError(
            f"{what} {name!r} not found (looked for {os.path.abspath(os.path.expanduser(name))}); check the path. "
            "Names on the Hugging Face Hub look like 'owner/name'"
        )
