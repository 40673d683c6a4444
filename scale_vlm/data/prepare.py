"""Dataset preparation: normalise, validate and render every example once, under a bad-example policy.

``policy="error"`` (default) stops at the first bad example with an ``ExampleError`` naming its index and problem;
``policy="skip"`` drops bad examples, counts them by reason and reports the counts when preparation ends.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from dataclasses import dataclass, field

from datasets import (
    Dataset,
    Image,
    List,
    disable_progress_bars,
    enable_progress_bars,
    is_progress_bar_enabled,
    load_dataset,
    load_from_disk,
)

from ..segments import DEFAULT_TAGS, SEGMENT_ANSWER, SEGMENT_THINK, Tags
from .formats import RAW_JSON_COLUMN, ExampleError, normalize_example
from .render import render_example

logger = logging.getLogger(__name__)
POLICIES = ("error", "skip")
_SKIP = "_skip_reason"
# Rows of a JSON/JSONL file that Arrow cannot hold in one table (a column that is a string in one row and a list in
# another, a line that is not an object) are kept as JSON text in RAW_JSON_COLUMN and decoded per example by
# normalize_example, so a messy row is an ``ExampleError`` naming its index (or a counted skip), not a crash of the
# whole load, in every command that reads examples.


@dataclass
class PreparationReport:
    total: int = 0
    kept: int = 0
    skipped: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)  # first few skip messages, for the log
    skipped_indices: dict[str, list[int]] = field(default_factory=dict)  # reason -> indices of the skipped examples
    think_tokens: int = 0
    answer_tokens: int = 0

    @property
    def num_skipped(self) -> int:
        return sum(self.skipped.values())

    def summary(self) -> str:
        line = f"prepared {self.kept}/{self.total} examples"
        if self.num_skipped:
            reasons = ", ".join(f"{k}={v}" for k, v in sorted(self.skipped.items()))
            line += f"; skipped {self.num_skipped} ({reasons})"
            line += "".join(f"\n  {msg}" for msg in self.examples)
        if self.think_tokens or self.answer_tokens:
            ratio = self.think_tokens / max(self.answer_tokens, 1)
            line += f"\nsupervised tokens: think {self.think_tokens}, answer {self.answer_tokens} (think/answer {ratio:.1f}x)"
        return line

    def to_dict(self) -> dict:
        return {
            "total": self.total,
            "kept": self.kept,
            "skipped": dict(self.skipped),
            "skipped_examples": {k: list(v) for k, v in sorted(self.skipped_indices.items())},
            "think_tokens": self.think_tokens,
            "answer_tokens": self.answer_tokens,
        }


def prepare_dataset(
    dataset: Dataset,
    processor,
    tags: Tags = DEFAULT_TAGS,
    max_length: int | None = None,
    policy: str = "error",
    image_root: str | None = None,
    num_proc: int | None = None,
    progress: bool = True,
) -> tuple[Dataset, PreparationReport]:
    """Render every row of ``dataset``; returns the rendered dataset (+ an ``images`` column) and a report."""
    if not progress and is_progress_bar_enabled():
        disable_progress_bars()
        try:
            return prepare_dataset(dataset, processor, tags, max_length, policy, image_root, num_proc, progress=True)
        finally:
            enable_progress_bars()
    if policy not in POLICIES:
        raise ValueError(f"bad_example_policy must be one of {POLICIES}, got {policy!r}")
    if len(dataset) == 0:
        raise ValueError("the training dataset is empty")

    def render(row: dict, index: int) -> dict:
        example = normalize_example(row, index, image_root, tags)
        rendered = render_example(example, processor, tags, max_length, index)
        return {**rendered.as_row(), "images": example.images, _SKIP: ""}

    columns = _rendered_columns(dataset, render)

    def render_row(row: dict, index: int) -> dict:
        try:
            return render(row, index)
        except ExampleError as err:
            if policy == "error":
                raise
            # Skipped rows need every column of a rendered row (they are filtered out right after).
            return {**{k: [] for k in columns}, _SKIP: f"{err.reason}\t{err}"}

    rendered = dataset.map(
        render_row,
        with_indices=True,
        remove_columns=dataset.column_names,
        num_proc=num_proc,
        desc="rendering examples",
    )
    report = PreparationReport(total=len(dataset))
    reasons = rendered[_SKIP]
    for index, reason in enumerate(reasons):
        if reason:
            key, message = reason.split("\t", 1)
            report.skipped[key] += 1
            report.skipped_indices.setdefault(key, []).append(index)
            if len(report.examples) < 5:
                report.examples.append(message)
    if report.num_skipped:
        rendered = rendered.filter(lambda r: not r, input_columns=[_SKIP], desc="dropping skipped examples")
    rendered = rendered.remove_columns([_SKIP])
    if "images" in rendered.column_names and not _is_image_list(rendered.features["images"]):
        # Arrow stored the PIL images as plain {"bytes", "path"} structs (e.g. a file image kept by its path):
        # type the column as images again so rows decode to PIL images for the collator.
        rendered = rendered.cast_column("images", List(Image()))
    report.kept = len(rendered)
    if report.kept == 0:
        raise ValueError(f"no usable example left after preparation: {report.summary()}")
    for seg in rendered["segment_ids"]:
        report.think_tokens += sum(1 for s in seg if s == SEGMENT_THINK)
        report.answer_tokens += sum(1 for s in seg if s == SEGMENT_ANSWER)
    # The caller reports the summary (ScaleSFTTrainer logs it once; scale-vlm sft writes data_report.json).
    logger.debug(report.summary())
    return rendered, report


def _is_image_list(feature) -> bool:
    return isinstance(getattr(feature, "feature", None), Image)


def _rendered_columns(dataset: Dataset, render) -> list[str]:
    """Columns of a rendered row (processor-dependent, e.g. ``mm_token_type_ids``), from the first good row.

    A bad row met here is simply passed over: the full pass reports or raises for it under the chosen policy.
    """
    for index in range(len(dataset)):
        try:
            return [k for k in render(dataset[index], index) if k != _SKIP]
        except ExampleError:
            continue
    return ["input_ids", "attention_mask", "labels", "segment_ids", "images"]


# Files that datasets reads with one builder; JSON/JSONL is read by read_json_rows instead (see load_rows).
FILE_BUILDERS = {".parquet": "parquet", ".arrow": "arrow", ".csv": "csv"}
# Unpickling runs code from the file: data in these formats is refused, never loaded (save_to_disk folders are Arrow).
PICKLE_SUFFIXES = (".pkl", ".pickle", ".pt", ".pth", ".joblib")
SPLIT_HINT = "choose one with --dataset_train_split (sft, inspect-data, grpo) or --dataset_test_split (eval)"


def load_rows(name_or_path: str, split: str = "train", image_root: str | None = None) -> tuple[Dataset, str | None]:
    """The one place that turns a dataset argument and a split into rows, for sft, inspect-data, eval and grpo.

    In order:

    - a ``.json`` / ``.jsonl`` file: :func:`read_json_rows` (a list, JSONL, one object, or ``{split: [...]}``
      following ``split``; stray non-UTF-8 bytes replaced and reported);
    - a ``.parquet`` / ``.arrow`` / ``.csv`` file: datasets' builder for it (the file is the split); a pickle
      file is refused;
    - a ``datasets.save_to_disk`` folder: ``load_from_disk``, ``split`` picked from a ``DatasetDict``;
    - a folder holding ``{split}.jsonl`` / ``{split}.json`` / ``{split}.parquet``: that file, as above;
    - any other folder (the hub's own layout ``data/test-00000-of-00001.parquet`` of a downloaded snapshot,
      ``train.csv`` ...): ``datasets.load_dataset(folder)``, ``split`` picked from its splits;
    - a name that looks like a local path but does not exist: "not found" at once (never a hub lookup);
    - anything else: a hub dataset, ``datasets.load_dataset(name, split=split)``.

    Returns the rows and the folder relative image paths resolve against: ``image_root`` when given, else the
    data file's folder or the dataset folder, else None (a hub dataset).
    """
    from ..run_guard import check_local_path

    path = os.fspath(name_or_path)
    if os.path.isfile(path):
        root = image_root or os.path.dirname(os.path.abspath(path))
        suffix = os.path.splitext(path)[1].lower()
        if suffix in (".json", ".jsonl"):
            return _rows_to_dataset(read_json_rows(path, split), path), root
        if suffix in FILE_BUILDERS:
            try:  # one file is one split, whatever its name: datasets calls it "train"
                return load_dataset(FILE_BUILDERS[suffix], data_files=[os.path.abspath(path)], split="train"), root
            except ValueError as err:  # e.g. a CSV holding only its header: "Instruction "train" corresponds to no data"
                raise ValueError(f"{path}: no rows could be read from it as {FILE_BUILDERS[suffix]} ({err})") from None
        if suffix in PICKLE_SUFFIXES:
            raise ValueError(f"{path}: pickle files are never loaded (unpickling runs code from the file); convert "
                             "the data to JSONL or parquet")
        raise ValueError(f"unsupported data file {path!r}: use .json, .jsonl, .parquet, .arrow or .csv")
    if os.path.isdir(path):
        root = image_root or path
        if os.path.exists(os.path.join(path, "dataset_dict.json")) or os.path.exists(os.path.join(path, "state.json")):
            return _pick_split(load_from_disk(path), split, path), root
        for suffix in (".jsonl", ".json", ".parquet"):
            candidate = os.path.join(path, split + suffix)
            if os.path.isfile(candidate):
                return load_rows(candidate, split, root)
        return _pick_split(_load_folder(path, split), split, path), root
    if os.path.exists(path):
        raise ValueError(f"{path!r} is neither a data file nor a datasets folder")
    check_local_path(path, "dataset")  # a misspelt local path is "not found" now, not a hub lookup
    try:
        return load_dataset(path, split=split), image_root
    except ValueError as err:
        if not str(err).startswith("Unknown split"):
            raise
        raise ValueError(f"{path} has no split {split!r}: {err} ({SPLIT_HINT})") from None


def load_training_dataset(name_or_path: str, split: str = "train", image_root: str | None = None) -> tuple[Dataset, str | None]:
    """Raw training rows and the folder for relative image paths: :func:`load_rows`, under its older name."""
    return load_rows(name_or_path, split, image_root)


def _load_folder(path: str, split: str):
    """All splits of a plain folder of data files, as ``datasets.load_dataset`` lays them out."""
    found = [os.path.join(d, f) for d, _, files in os.walk(path) for f in files]
    pickles = [f for f in found if f.lower().endswith(PICKLE_SUFFIXES)]
    if pickles:
        raise ValueError(f"{path}: holds pickle files ({os.path.relpath(pickles[0], path)}"
                         f"{' ...' if len(pickles) > 1 else ''}), which are never loaded (unpickling runs code from "
                         "the file); convert them to JSONL or parquet")
    try:
        return load_dataset(path)
    except FileNotFoundError as err:  # datasets' DataFilesNotFoundError / EmptyDatasetError
        raise ValueError(
            f"{path}: no data files datasets can read ({err}); a dataset folder holds {split}.jsonl / {split}.json, "
            f"parquet/CSV/JSON files (the hub's layout data/{split}-00000-of-00001.parquet works), or is a "
            "datasets.save_to_disk folder"
        ) from None


def _pick_split(data, split: str, source: str) -> Dataset:
    if hasattr(data, "keys"):  # a DatasetDict
        if split not in data:
            raise ValueError(f"{source} has no split {split!r}; available: {sorted(data)} ({SPLIT_HINT})")
        return data[split]
    return data


def _rows_to_dataset(rows: list, path: str) -> Dataset:
    if all(isinstance(r, dict) for r in rows):
        try:
            return Dataset.from_list(rows)
        except (ValueError, TypeError, NotImplementedError) as err:  # pyarrow's ArrowInvalid / ArrowTypeError
            logger.warning("%s: rows differ in shape (%s); each row is decoded on its own", path, err)
    return Dataset.from_dict({RAW_JSON_COLUMN: [json.dumps(r, ensure_ascii=False) for r in rows]})


SPLIT_NAMES = ("train", "test", "validation", "valid", "val", "dev", "eval")
EXAMPLE_KEYS = {"messages", "conversations", "prompt", "completion", "images", "image", "question", "answer", "choices"}


def read_json_rows(path, split: str | None = None) -> list[dict]:
    """Rows of a JSON list, of a JSONL file, of a ``{split: [...]}`` / ``{"data": [...]}`` mapping, or the one
    example of a file that holds a single object.

    A mapping whose values are all lists is a set of splits: ``split`` picks one, and a file without that split is
    an error naming the ones it has (never silently the first list). Any other object is one example.

    Read as text with replacement: a stray non-UTF-8 byte becomes U+FFFD instead of killing the run ("utf-8-sig"
    also drops a byte-order mark, which would otherwise make the first line invalid JSON); the replaced bytes are
    counted and logged with their lines. Shared by training data loading and the evaluation adapters."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        raw = f.read()
    text = raw.decode("utf-8-sig", errors="replace")
    _report_replaced_bytes(path, raw, text)
    if path.endswith(".jsonl"):
        rows = []
        for lineno, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}: line {lineno} is not valid JSON ({err})") from err
        return rows
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    if isinstance(data, dict):
        lists = [k for k, v in data.items() if isinstance(v, list)]
        # {split: [...]} or {"data": [...]}; an example's own list columns (messages, images...) are not splits
        if data and len(lists) == len(data) and not set(data) & EXAMPLE_KEYS:
            if split is not None and split in data:
                return data[split]
            if len(lists) == 1 and lists[0] not in SPLIT_NAMES:
                return data[lists[0]]
            raise ValueError(f"{path} holds the splits {lists} but not {split!r}; {SPLIT_HINT}")
        return [data]  # one example written as a single object
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of examples (or one example object), got {type(data).__name__}")
    return data


def _report_replaced_bytes(path: str, raw: bytes, text: str) -> int:
    """Count the bytes that were not UTF-8 (each became U+FFFD) and log how many and on which lines."""
    replaced = text.count("\ufffd") - raw.count("\ufffd".encode())
    if replaced > 0:
        lines = [i for i, line in enumerate(text.splitlines(), start=1) if "\ufffd" in line]
        logger.warning(
            "%s: %d invalid UTF-8 byte(s) (e.g. Latin-1 text) replaced by U+FFFD, on line(s) %s; re-encode the file "
            "as UTF-8 to keep those characters", path, replaced, ", ".join(map(str, lines[:10])) + (" ..." if len(lines) > 10 else ""),
        )
    return replaced
