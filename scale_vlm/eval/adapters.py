"""Dataset adapters: every evaluation source becomes a list of :class:`EvalExample`.

Sources: ScienceQA (Hugging Face schema), IconQA (lmms-lab schema), the built-in benchmark, and any other
dataset through a column mapping. Rows load from a local path (JSON, JSONL, parquet, a ``save_to_disk`` folder)
or a hub dataset name through ``datasets.load_dataset``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from ..data.prepare import read_json_rows
from ..prompts import OPTION_LETTERS, format_options, reasoning_instruction
from ..scoring import resolve_option
from ..segments import DEFAULT_TAGS, Tags

SCIENCEQA_HUB = "derek-thomas/ScienceQA"
ICONQA_HUB = "lmms-lab/ICON-QA"
# Names (case-insensitive) that select an adapter and, for hub datasets, the repository to load.
KNOWN_DATASETS: dict[str, tuple[str, str | None]] = {
    "scienceqa": ("scienceqa", SCIENCEQA_HUB),
    SCIENCEQA_HUB.lower(): ("scienceqa", SCIENCEQA_HUB),
    "iconqa": ("iconqa", ICONQA_HUB),
    "lmms-lab/iconqa": ("iconqa", ICONQA_HUB),
    ICONQA_HUB.lower(): ("iconqa", ICONQA_HUB),
    "builtin": ("builtin", None),
}
ADAPTERS = ("auto", "scienceqa", "iconqa", "builtin", "columns")


@dataclass
class EvalExample:
    """One evaluation question, whatever dataset it came from."""

    id: str
    images: list[Image.Image]
    prompt: str
    """The full user text, ending with the reasoning instruction."""
    gold: str
    """Option letter for multiple choice, else the short answer text."""
    choices: list[str] = field(default_factory=list)
    category: str | None = None


@dataclass
class ColumnMapping:
    """Which columns of an arbitrary dataset hold what (the generic adapter)."""

    image_column: str | None = "image"
    question_column: str = "question"
    answer_column: str = "answer"
    choices_column: str | None = None
    category_column: str | None = None
    id_column: str | None = None


# ----------------------------------------------------------------------------------------------- images


def to_pil(value: Any, base_dir: Path | None, where: str) -> Image.Image:
    """A PIL RGB image from a PIL image, a ``{"bytes", "path"}`` dict (datasets' Image feature) or a file path
    (relative paths resolve against ``base_dir``). ``where`` names the example in the error.

    The training-side loader does the work, so evaluation converts CMYK/RGBA/16-bit images and enforces the
    pixel limit exactly as training does."""
    from ..data.formats import ExampleError, load_image

    try:
        return load_image(value, None, str(base_dir) if base_dir is not None else None)
    except ExampleError as err:
        raise ValueError(f"{where}: cannot load image {_short(value)}: {err.problem}") from err


def _short(value: Any) -> str:
    if isinstance(value, Image.Image):
        return f"<PIL {value.size}>"
    text = repr(value if not isinstance(value, Mapping) else {k: v for k, v in value.items() if k != "bytes"})
    return text if len(text) < 120 else text[:117] + "..."


def _images(value: Any, base_dir: Path | None, where: str) -> list[Image.Image]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [to_pil(v, base_dir, where) for v in value if v is not None]
    return [to_pil(value, base_dir, where)]


def split_choices(value: Any) -> list[str]:
    """Choices given as a list or as a comma-separated string (the lmms-lab IconQA convention)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [c.strip() for c in value.split(",") if c.strip()]
    return [str(c) for c in value]


def build_prompt(question: str, choices: Sequence[str] = (), context: str | None = None, tags: Tags = DEFAULT_TAGS) -> str:
    """``Context: ...\\nQuestion: ...\\nOptions: (A) .. (B) ..\\n`` + the reasoning instruction."""
    lines = []
    if context is not None:
        lines.append(f"Context: {context}")
    lines.append(f"Question: {question}")
    if choices:
        lines.append(f"Options: {format_options(choices)}")
    lines.append(reasoning_instruction(tags))
    return "\n".join(lines)


def _letter_gold(answer: Any, choices: Sequence[str], where: str) -> str:
    """Gold as an option letter: from an index, a letter, or the text of one of the choices."""
    if isinstance(answer, bool):
        raise ValueError(f"{where}: answer {answer!r} is not an option index or text")
    if isinstance(answer, int):
        if not 0 <= answer < len(choices):
            raise ValueError(f"{where}: answer index {answer} is outside the {len(choices)} choices {list(choices)}")
        return OPTION_LETTERS[answer]
    index = resolve_option(str(answer), choices)
    if index is None:
        raise ValueError(f"{where}: answer {answer!r} matches none of the choices {list(choices)}")
    return OPTION_LETTERS[index]


def _require(row: Mapping, keys: Iterable[str], where: str, schema: str) -> None:
    missing = [k for k in keys if k not in row]
    if missing:
        raise ValueError(f"{where}: missing column(s) {missing} of the {schema} schema; row has {sorted(row)}")


# ---------------------------------------------------------------------------------------------- adapters


def scienceqa_examples(
    rows: Iterable[Mapping], *, image_only: bool = False, tags: Tags = DEFAULT_TAGS,
    base_dir: Path | None = None, category_column: str = "category", limit: int | None = None,
) -> list[EvalExample]:
    """ScienceQA rows (``image``, ``question``, ``choices``, ``answer`` index, ``hint``, ``subject``,
    ``category``) with the conventional context/question/options prompt; the gold is the option letter.
    ``image_only`` keeps only questions with an image (the usual "IMG" subset)."""
    examples = []
    for index, row in enumerate(rows):
        where = f"ScienceQA example {index}"
        _require(row, ("question", "choices", "answer"), where, "ScienceQA")
        if image_only and row.get("image") is None:
            continue
        choices = split_choices(row["choices"])
        hint = (row.get("hint") or "").strip()
        examples.append(EvalExample(
            id=str(row.get("id", f"scienceqa-{index}")),
            images=_images(row.get("image"), base_dir, where),
            prompt=build_prompt(row["question"], choices, context=hint or "N/A", tags=tags),
            gold=_letter_gold(row["answer"], choices, where),
            choices=choices,
            category=row.get(category_column) or None,
        ))
        if limit is not None and len(examples) >= limit:
            break
    return examples


def iconqa_examples(
    rows: Iterable[Mapping], *, tags: Tags = DEFAULT_TAGS, base_dir: Path | None = None, limit: int | None = None,
    image_only: bool = False,
) -> list[EvalExample]:
    """IconQA rows in the lmms-lab schema (``query_image``, ``question``, ``choices`` comma-separated, ``answer``
    text, ``ques_type``). Multiple choice golds become the matching option letter; fill-in-the-blank golds stay
    text. For ``choose_img`` questions the ``choice_image_<i>`` columns, when present, follow the query image."""
    examples = []
    for index, row in enumerate(rows):
        where = f"IconQA example {index}"
        _require(row, ("query_image", "question", "answer"), where, "IconQA")
        if image_only and row.get("query_image") is None:
            continue
        choices = split_choices(row.get("choices"))
        images = _images(row.get("query_image"), base_dir, where)
        question = row["question"]
        choice_images = [row.get(f"choice_image_{i}") for i in range(len(choices))]
        if choices and all(img is not None for img in choice_images) and row.get("ques_type") == "choose_img":
            images += [to_pil(img, base_dir, where) for img in choice_images]
            question += " The options are shown as images after the question image, in order."
        examples.append(EvalExample(
            id=str(row.get("question_id", row.get("id", f"iconqa-{index}"))),
            images=images,
            prompt=build_prompt(question, choices, tags=tags),
            gold=_letter_gold(row["answer"], choices, where) if choices else str(row["answer"]).strip(),
            choices=choices,
            category=row.get("ques_type") or None,
        ))
        if limit is not None and len(examples) >= limit:
            break
    return examples


def builtin_examples(
    rows: Iterable[Mapping], *, base_dir: Path | None = None, limit: int | None = None, image_only: bool = False,
    tags: Tags = DEFAULT_TAGS,
) -> list[EvalExample]:
    """The built-in benchmark (``id``, ``image``, ``prompt`` with options and instruction, ``answer``,
    ``choices``, ``category``): a direct mapping, the prompt is used as written."""
    examples = []
    for index, row in enumerate(rows):
        where = f"built-in benchmark example {index}"
        _require(row, ("image", "prompt", "answer"), where, "built-in benchmark")
        if image_only and row.get("image") is None:
            continue
        gold = str(row["answer"]).strip()
        if not gold:
            raise ValueError(f"{where}: empty answer")
        examples.append(EvalExample(
            id=str(row.get("id", f"builtin-{index}")),
            images=_images(row.get("image"), base_dir, where),
            prompt=row["prompt"],
            gold=gold,
            choices=split_choices(row.get("choices")),
            category=row.get("category") or None,
        ))
        if limit is not None and len(examples) >= limit:
            break
    return examples


def column_examples(
    rows: Iterable[Mapping], columns: ColumnMapping = ColumnMapping(), *, tags: Tags = DEFAULT_TAGS,
    base_dir: Path | None = None, limit: int | None = None, image_only: bool = False,
) -> list[EvalExample]:
    """Any dataset through :class:`ColumnMapping`. With a choices column, an integer answer is an option index
    and a text answer must name one of the choices; the gold becomes its letter."""
    examples = []
    for index, row in enumerate(rows):
        where = f"example {index}"
        needed = [columns.question_column, columns.answer_column]
        needed += [c for c in (columns.image_column, columns.choices_column, columns.category_column, columns.id_column) if c]
        _require(row, needed, where, "column-mapped")
        image = row.get(columns.image_column) if columns.image_column else None
        if image_only and not image:
            continue
        choices = split_choices(row[columns.choices_column]) if columns.choices_column else []
        answer = row[columns.answer_column]
        if choices:
            gold = _letter_gold(answer, choices, where)
        else:
            gold = str(answer).strip()
            if not gold:
                raise ValueError(f"{where}: empty answer in column {columns.answer_column!r}")
        examples.append(EvalExample(
            id=str(row[columns.id_column]) if columns.id_column else str(index),
            images=_images(image, base_dir, where),
            prompt=build_prompt(str(row[columns.question_column]), choices, tags=tags),
            gold=gold,
            choices=choices,
            category=str(row[columns.category_column]) if columns.category_column and row[columns.category_column] is not None else None,
        ))
        if limit is not None and len(examples) >= limit:
            break
    return examples


# ------------------------------------------------------------------------------------------------ loading


def detect_adapter(column_names: Iterable[str]) -> str:
    """Guess the schema from the column names."""
    names = set(column_names)
    if {"query_image", "question", "answer"} <= names:
        return "iconqa"
    if {"image", "question", "choices", "answer", "hint"} <= names:
        return "scienceqa"
    if {"image", "prompt", "answer"} <= names:
        return "builtin"
    return "columns"


def _pick_split(data, split: str, source: str):
    from datasets import DatasetDict

    if isinstance(data, DatasetDict):
        if split not in data:
            raise ValueError(f"{source} has no split {split!r}; available: {sorted(data)}")
        return data[split]
    return data


def load_rows(name_or_path: str, split: str = "test") -> tuple[Sequence[Mapping] | Any, Path | None]:
    """Rows of a local file/folder or hub dataset, and the folder relative image paths resolve against."""
    path = Path(name_or_path)
    if path.is_file():
        if path.suffix in (".json", ".jsonl"):
            return read_json_rows(path), path.parent
        if path.suffix == ".parquet":
            from datasets import Dataset

            return Dataset.from_parquet(str(path)), path.parent
        raise ValueError(f"{name_or_path}: unsupported file type {path.suffix!r}; use .json, .jsonl or .parquet")
    if path.is_dir():
        if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists() or (path / "state.json").exists():
            from datasets import load_from_disk

            return _pick_split(load_from_disk(str(path)), split, name_or_path), path
        for suffix in (".jsonl", ".json", ".parquet"):
            candidate = path / f"{split}{suffix}"
            if candidate.is_file():
                return load_rows(str(candidate), split)
        raise ValueError(
            f"{name_or_path}: a folder must be a datasets.save_to_disk folder or hold {split}.jsonl, {split}.json "
            f"or {split}.parquet"
        )
    from datasets import load_dataset

    return load_dataset(name_or_path, split=split), None


def builtin_rows(split: str = "test", num_examples: int = 500, seed: int = 0, tags: Tags = DEFAULT_TAGS):
    """Generate the built-in benchmark (``scale_vlm.bench``); ``split`` picks its random stream."""
    from ..bench import BenchConfig, make_benchmark

    return make_benchmark(BenchConfig(seed=seed, num_examples=num_examples, split=split), tags)


def load_eval_dataset(
    name_or_path: str,
    split: str = "test",
    *,
    adapter: str = "auto",
    image_only: bool = False,
    limit: int | None = None,
    columns: ColumnMapping | None = None,
    tags: Tags = DEFAULT_TAGS,
    builtin_size: int = 500,
    seed: int = 0,
) -> list[EvalExample]:
    """Load ``name_or_path`` (local path, known name or hub dataset) and adapt it to :class:`EvalExample` s.

    ``adapter``: ``auto`` (known name, else guessed from the columns), ``scienceqa``, ``iconqa``, ``builtin`` or
    ``columns`` (uses ``columns``). ``limit`` keeps the first N examples (after the ``image_only`` filter).
    ``builtin`` generates ``builtin_size`` examples (or ``limit`` when smaller) of the built-in benchmark's
    ``split`` stream with ``seed``."""
    if adapter not in ADAPTERS:
        raise ValueError(f"unknown adapter {adapter!r}; expected one of {ADAPTERS}")
    if limit is not None and limit <= 0:
        raise ValueError(f"limit must be positive, got {limit}")
    known = KNOWN_DATASETS.get(name_or_path.lower()) if not Path(name_or_path).exists() else None
    if known is not None and known[0] == "builtin":
        size = min(builtin_size, limit) if limit is not None else builtin_size
        rows, base_dir = builtin_rows(split, size, seed, tags), None
        chosen = "builtin" if adapter == "auto" else adapter
    else:
        source = known[1] if known is not None else name_or_path
        rows, base_dir = load_rows(source, split)
        if adapter != "auto":
            chosen = adapter
        elif known is not None:
            chosen = known[0]
        else:
            names = rows.column_names if hasattr(rows, "column_names") else (rows[0].keys() if len(rows) else ())
            chosen = "columns" if columns is not None else detect_adapter(names)
    common = dict(tags=tags, base_dir=base_dir, limit=limit, image_only=image_only)
    if chosen == "scienceqa":
        return scienceqa_examples(rows, **common)
    if chosen == "iconqa":
        return iconqa_examples(rows, **common)
    if chosen == "builtin":
        return builtin_examples(rows, **common)
    return column_examples(rows, columns or ColumnMapping(), **common)

