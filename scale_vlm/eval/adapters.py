"""Dataset adapters: every evaluation source becomes a list of :class:`EvalExample`.

Sources: ScienceQA (Hugging Face schema), IconQA (lmms-lab schema), the built-in benchmark, and any other
dataset through a column mapping. Rows load through the training data loader
(:func:`scale_vlm.data.prepare.load_rows`): a local file or folder, or a hub dataset name.
"""

from __future__ import annotations

import json
import logging
import numbers
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from PIL import Image

from ..prompts import OPTION_LETTERS, format_options, reasoning_instruction
from ..scoring import resolve_option
from ..segments import DEFAULT_TAGS, Tags

logger = logging.getLogger(__name__)
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
CHOICES_COLUMN = "choices"  # found by name when no --choices_column is given
OPTION_LETTER_GOLD = re.compile(r"\(?[A-Z]\)?")
ADAPTERS = ("auto", "scienceqa", "iconqa", "builtin", "columns", "sft")
# How an answer relates to its choices: a 0-based option index, a letter / the choice's text, or decided per row
# (an integer that could be both is refused; see _letter_gold).
ANSWER_FORMATS = ("auto", "index", "text")


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
    """None: the ``choices`` column when the data has one (found by name, like image/question/answer); "": none."""
    category_column: str | None = None
    id_column: str | None = None
    answer_format: str = "auto"
    """With a choices column: 'index' (0-based option index), 'text' (letter or choice text) or 'auto'."""


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


def _letter_gold(answer: Any, choices: Sequence[str], where: str, answer_format: str = "auto") -> str:
    """Gold as an option letter, from an answer that is an option index, a letter, or the text of a choice.

    ``answer_format``: ``index`` (a 0-based option index), ``text`` (a letter or a choice's text) or ``auto``. Under
    ``auto`` an integer is an index, unless it is also the text of a *different* choice ("answer": 3 with choices
    ["1", "2", "3", "4"]): then the row is ambiguous and refused, since either reading scores against a wrong gold
    for a whole data set."""
    if answer_format not in ANSWER_FORMATS:
        raise ValueError(f"answer_format must be one of {ANSWER_FORMATS}, got {answer_format!r}")
    if isinstance(answer, bool):
        raise ValueError(f"{where}: answer {answer!r} is not an option index or text")
    is_int = isinstance(answer, numbers.Integral)
    if answer_format == "index":
        if isinstance(answer, str) and answer.strip().isdigit():
            answer, is_int = int(answer.strip()), True
        if not is_int:
            raise ValueError(f"{where}: answer {answer!r} is not an option index (answer_format is 'index')")
    by_text = None if answer_format == "index" else resolve_option(str(answer), choices)
    if is_int and answer_format != "text":
        index = int(answer)
        in_range = 0 <= index < len(choices)
        if answer_format == "auto" and by_text is not None and (not in_range or by_text != index):
            if not in_range:
                return OPTION_LETTERS[by_text]  # only the value reading exists
            raise ValueError(
                f"{where}: answer {answer!r} is ambiguous with choices {list(choices)}: as a 0-based index it is "
                f"({OPTION_LETTERS[index]}) {choices[index]!r}, as a value it is ({OPTION_LETTERS[by_text]}) "
                f"{choices[by_text]!r}. Say which: --answer_format index or --answer_format text"
            )
        if not in_range:
            raise ValueError(f"{where}: answer index {index} is outside the {len(choices)} choices {list(choices)}")
        return OPTION_LETTERS[index]
    if by_text is None:
        raise ValueError(f"{where}: answer {answer!r} matches none of the choices {list(choices)}")
    return OPTION_LETTERS[by_text]


def _row_id(row: Mapping, keys: Sequence[str], default: str) -> str:
    """The first id column with a value, else ``default``. Rows loaded into one table have every column, a null
    where a row had none, so a missing id is a None value as often as a missing key."""
    for key in keys:
        if row.get(key) is not None:
            return str(row[key])
    return default


def _require(row: Mapping, keys: Iterable[str], where: str, schema: str) -> None:
    missing = [k for k in keys if k not in row]
    if missing:
        raise ValueError(f"{where}: missing column(s) {missing} of the {schema} schema; row has {sorted(row)}")


def _collect(rows: Iterable[Mapping], limit: int | None,
             build: Callable[[int, Mapping], EvalExample | None]) -> list[EvalExample]:
    """The adapters' one loop: ``build(index, row)`` maps a row to its example, or None to pass over it (not an
    image question under ``image_only``); stops at ``limit`` examples."""
    examples = []
    for index, row in enumerate(rows):
        example = build(index, row)
        if example is not None:
            examples.append(example)
            if limit is not None and len(examples) >= limit:
                break
    return examples


# ---------------------------------------------------------------------------------------------- adapters


def scienceqa_examples(
    rows: Iterable[Mapping], *, image_only: bool = False, tags: Tags = DEFAULT_TAGS,
    base_dir: Path | None = None, category_column: str = "category", limit: int | None = None,
    answer_format: str = "index",
) -> list[EvalExample]:
    """ScienceQA rows (``image``, ``question``, ``choices``, ``answer`` index, ``hint``, ``subject``,
    ``category``) with the conventional context/question/options prompt; the gold is the option letter.
    ``image_only`` keeps only questions with an image (the usual "IMG" subset). The schema's answer is an option
    index (``answer_format="index"``)."""
    def build(index: int, row: Mapping) -> EvalExample | None:
        where = f"ScienceQA example {index}"
        _require(row, ("question", "choices", "answer"), where, "ScienceQA")
        if image_only and row.get("image") is None:
            return None
        choices = split_choices(row["choices"])
        hint = (row.get("hint") or "").strip()
        return EvalExample(
            id=_row_id(row, ("id",), f"scienceqa-{index}"),
            images=_images(row.get("image"), base_dir, where),
            prompt=build_prompt(row["question"], choices, context=hint or "N/A", tags=tags),
            gold=_letter_gold(row["answer"], choices, where, answer_format),
            choices=choices,
            category=row.get(category_column) or None,
        )

    return _collect(rows, limit, build)


def iconqa_examples(
    rows: Iterable[Mapping], *, tags: Tags = DEFAULT_TAGS, base_dir: Path | None = None, limit: int | None = None,
    image_only: bool = False, answer_format: str = "text",
) -> list[EvalExample]:
    """IconQA rows in the lmms-lab schema (``query_image``, ``question``, ``choices`` comma-separated, ``answer``
    text, ``ques_type``). Multiple choice golds become the matching option letter; fill-in-the-blank golds stay
    text. For ``choose_img`` questions the ``choice_image_<i>`` columns, when present, follow the query image."""
    def build(index: int, row: Mapping) -> EvalExample | None:
        where = f"IconQA example {index}"
        _require(row, ("query_image", "question", "answer"), where, "IconQA")
        if image_only and row.get("query_image") is None:
            return None
        choices = split_choices(row.get("choices"))
        images = _images(row.get("query_image"), base_dir, where)
        question = row["question"]
        choice_images = [row.get(f"choice_image_{i}") for i in range(len(choices))]
        if choices and all(img is not None for img in choice_images) and row.get("ques_type") == "choose_img":
            images += [to_pil(img, base_dir, where) for img in choice_images]
            question += " The options are shown as images after the question image, in order."
        return EvalExample(
            id=_row_id(row, ("question_id", "id"), f"iconqa-{index}"),
            images=images,
            prompt=build_prompt(question, choices, tags=tags),
            gold=_letter_gold(row["answer"], choices, where, answer_format) if choices else str(row["answer"]).strip(),
            choices=choices,
            category=row.get("ques_type") or None,
        )

    return _collect(rows, limit, build)


def builtin_examples(
    rows: Iterable[Mapping], *, base_dir: Path | None = None, limit: int | None = None, image_only: bool = False,
    tags: Tags = DEFAULT_TAGS,
) -> list[EvalExample]:
    """The built-in benchmark (``id``, ``image``, ``prompt`` with options and instruction, ``answer``,
    ``choices``, ``category``): a direct mapping, the prompt is used as written."""
    def build(index: int, row: Mapping) -> EvalExample | None:
        where = f"built-in benchmark example {index}"
        _require(row, ("image", "prompt", "answer"), where, "built-in benchmark")
        if image_only and row.get("image") is None:
            return None
        gold = str(row["answer"]).strip()
        if not gold:
            raise ValueError(f"{where}: empty answer")
        return EvalExample(
            id=_row_id(row, ("id",), f"builtin-{index}"),
            images=_images(row.get("image"), base_dir, where),
            prompt=row["prompt"],
            gold=gold,
            choices=split_choices(row.get("choices")),
            category=row.get("category") or None,
        )

    return _collect(rows, limit, build)


def column_examples(
    rows: Iterable[Mapping], columns: ColumnMapping = ColumnMapping(), *, tags: Tags = DEFAULT_TAGS,
    base_dir: Path | None = None, limit: int | None = None, image_only: bool = False,
) -> list[EvalExample]:
    """Any dataset through :class:`ColumnMapping`. With a choices column the answer is an option index or names
    one of the choices (``columns.answer_format``; an integer that could be either is refused under ``auto``);
    the gold becomes its letter. Without a choices column a gold that is an option letter is refused: the prompt
    would show no options for it to name."""
    def build(index: int, row: Mapping) -> EvalExample | None:
        nonlocal columns  # the choices column found in the first row holds for every row
        if index == 0 and columns.choices_column is None:
            found = CHOICES_COLUMN if CHOICES_COLUMN in row else ""
            if found:
                logger.info("using the %r column as the options of each question (--choices_column '' for none)", found)
            columns = replace(columns, choices_column=found)
        where = f"example {index}"
        needed = [columns.question_column, columns.answer_column]
        needed += [c for c in (columns.image_column, columns.choices_column, columns.category_column, columns.id_column) if c]
        _require(row, needed, where, "column-mapped")
        image = row.get(columns.image_column) if columns.image_column else None
        if image_only and not image:
            return None
        choices = split_choices(row[columns.choices_column]) if columns.choices_column else []
        answer = row[columns.answer_column]
        if choices:
            gold = _letter_gold(answer, choices, where, columns.answer_format)
        else:
            gold = str(answer).strip()
            if not gold:
                raise ValueError(f"{where}: empty answer in column {columns.answer_column!r}")
            if OPTION_LETTER_GOLD.fullmatch(gold):
                raise ValueError(f"{where}: the answer {gold!r} is an option letter but the example has no choices, "
                                 "so its prompt would show no options to pick from; name the column that holds them "
                                 "with --choices_column NAME")
        return EvalExample(
            id=str(row[columns.id_column]) if columns.id_column else str(index),
            images=_images(image, base_dir, where),
            prompt=build_prompt(str(row[columns.question_column]), choices, tags=tags),
            gold=gold,
            choices=choices,
            category=str(row[columns.category_column]) if columns.category_column and row[columns.category_column] is not None else None,
        )

    return _collect(rows, limit, build)


def user_text(example) -> str:
    """The text of a training example's user turns, as the model reads it (images aside): the prompt ``sft`` trains
    on, and so the one ``eval --adapter sft`` and GRPO use."""
    return "\n".join(
        part["text"] for m in example.prompt_messages if m["role"] == "user"
        for part in m["content"] if part.get("type") == "text" and part.get("text")
    ).strip()


def training_prompts(rows, image_root: str | None = None, limit: int = 64, tags: Tags = DEFAULT_TAGS) -> list[str]:
    """The user text of the first ``limit`` good training rows (rows a skip policy would drop are passed over)."""
    from ..data.formats import ExampleError, normalize_example
    from ..data.prepare import RAW_JSON_COLUMN

    prompts = []
    for index in range(len(rows)):
        row = rows[index]
        if set(row) == {RAW_JSON_COLUMN}:  # rows too unlike for one table, kept as JSON text by the loader
            row = json.loads(row[RAW_JSON_COLUMN])
        try:
            prompts.append(user_text(normalize_example(row, index, image_root, tags)))
        except ExampleError:
            continue
        if len(prompts) >= limit:
            break
    return prompts


def sft_examples(
    rows: Iterable[Mapping], *, tags: Tags = DEFAULT_TAGS, base_dir: Path | None = None, limit: int | None = None,
    image_only: bool = False,
) -> list[EvalExample]:
    """SFT training rows (TRL ``messages``, ShareGPT ``conversations``, ``prompt``/``completion``) as evaluation or
    GRPO examples: the user turns' text as written, the images, and the gold answer taken from the answer block of
    the response. So the SFT data file serves GRPO and evaluation as it is."""
    from ..data.formats import ExampleError, normalize_example
    from ..parsing import parse_output

    def build(index: int, row: Mapping) -> EvalExample | None:
        where = f"example {index}"
        try:
            # the tags training renders with: a reasoning field is wrapped in them, and a row training refuses
            # (a reasoning field and think tags in its text) is refused here too
            example = normalize_example(row, index, str(base_dir) if base_dir is not None else None, tags)
        except ExampleError as err:
            raise ValueError(str(err)) from err
        if image_only and not example.images:
            return None
        answer = parse_output(example.response, tags).answer
        if answer is None or not answer.strip():
            raise ValueError(f"{where}: the response has no {tags.answer_open}...{tags.answer_close} block to take "
                             "the gold answer from")
        prompt = user_text(example)
        return EvalExample(
            id=_row_id(row, ("id",), str(index)),
            images=example.images,
            prompt=prompt,
            gold=answer.strip(),
            choices=split_choices(row.get("choices")),
            category=row.get("category") or None,
        )

    return _collect(rows, limit, build)


# ------------------------------------------------------------------------------------------------ loading


def detect_adapter(column_names: Iterable[str]) -> str:
    """Guess the schema from the column names."""
    names = set(column_names)
    if {"query_image", "question", "answer"} <= names:
        return "iconqa"
    if {"image", "question", "choices", "answer", "hint"} <= names:
        return "scienceqa"
    if "messages" in names or "conversations" in names or {"prompt", "completion"} <= names:
        return "sft"
    if {"image", "prompt", "answer"} <= names:
        return "builtin"
    return "columns"


def load_rows(name_or_path: str, split: str = "test") -> tuple[Sequence[Mapping] | Any, Path | None]:
    """Rows of a local file/folder or hub dataset, and the folder relative image paths resolve against: the same
    loader as training (:func:`scale_vlm.data.prepare.load_rows`), so eval reads whatever sft reads."""
    from ..data.prepare import RAW_JSON_COLUMN
    from ..data.prepare import load_rows as load_dataset_rows

    rows, root = load_dataset_rows(name_or_path, split)
    if rows.column_names == [RAW_JSON_COLUMN]:
        # JSON rows too unlike for one Arrow table are kept as text by the loader; the adapters want them decoded.
        rows = [json.loads(text) for text in rows[RAW_JSON_COLUMN]]
    return rows, Path(root) if root is not None else None


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
    answer_format: str = "auto",
) -> list[EvalExample]:
    """Load ``name_or_path`` (local path, known name or hub dataset) and adapt it to :class:`EvalExample` s.

    ``adapter``: ``auto`` (known name, else guessed from the columns), ``scienceqa``, ``iconqa``, ``builtin`` or
    ``columns`` (uses ``columns``). ``limit`` keeps the first N examples (after the ``image_only`` filter).
    ``builtin`` generates ``builtin_size`` examples (or ``limit`` when smaller) of the built-in benchmark's
    ``split`` stream with ``seed``. ``answer_format`` (``auto``, ``index``, ``text``): how answers relate to the
    choices; ``auto`` keeps each schema's own rule (ScienceQA: index, IconQA: text, others: refused when ambiguous)."""
    if adapter not in ADAPTERS:
        raise ValueError(f"unknown adapter {adapter!r}; expected one of {ADAPTERS}")
    if answer_format not in ANSWER_FORMATS:
        raise ValueError(f"--answer_format must be one of {ANSWER_FORMATS}, got {answer_format!r}")
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
    explicit = {} if answer_format == "auto" else {"answer_format": answer_format}
    if chosen == "scienceqa":
        return scienceqa_examples(rows, **common, **explicit)
    if chosen == "iconqa":
        return iconqa_examples(rows, **common, **explicit)
    if chosen == "builtin":
        return builtin_examples(rows, **common)
    if chosen == "sft":
        return sft_examples(rows, **common)
    return column_examples(rows, replace(columns or ColumnMapping(), **explicit), **common)

