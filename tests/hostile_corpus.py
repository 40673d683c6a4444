"""Builder of the hostile-input corpus: bad training rows, bad image files and bad evaluation rows.

Nothing is committed: ``build_training_cases(root)`` writes the image files it needs under ``root`` and returns
the cases. Every case names the skip reason (``ExampleError.reason``) that preparation must produce, or ``None``
when the example is awkward but valid and must be kept (CMYK / RGBA / 16-bit images, unicode, U+FFFD...).
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from reliability_support import colour_image, good_response

THINK = "I count the shapes: two red circles and one square."


@dataclass
class Case:
    name: str
    row: dict
    reason: str | None  # expected ExampleError.reason; None = the example is valid and kept
    message: str = ""  # a fragment the error message must contain


def _row(response, images=("images/good.png",), prompt="How many shapes?"):
    parts = [{"type": "image"} for _ in images] + [{"type": "text", "text": prompt}]
    return {
        "messages": [
            {"role": "user", "content": parts},
            {"role": "assistant", "content": [{"type": "text", "text": response}]},
        ],
        "images": list(images),
    }


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` pixels (a decompression-bomb shape) with no real data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00")) + chunk(b"IEND", b"")


def write_images(root: Path) -> dict[str, Path]:
    """Good and bad image files under ``root/images``; returns name -> path."""
    d = Path(root) / "images"
    d.mkdir(parents=True, exist_ok=True)
    paths = {}

    def save(name, img, **kw):
        paths[name] = d / name
        img.save(paths[name], **kw)

    save("good.png", colour_image(0))
    save("cmyk.jpg", Image.new("CMYK", (48, 48), (0, 255, 255, 0)))
    save("rgba.png", Image.new("RGBA", (48, 48), (255, 0, 0, 128)))
    save("palette_transparent.png", Image.new("P", (48, 48), 3), transparency=3)
    img16 = Image.new("I;16", (48, 48))
    img16.putdata([i * 20 for i in range(48 * 48)])
    save("grey16.png", img16)
    save("tiny_1x1.png", colour_image(1, size=1))
    buf = io.BytesIO()
    colour_image(2, size=256).save(buf, format="PNG")
    paths["truncated.png"] = d / "truncated.png"
    paths["truncated.png"].write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    paths["zero_bytes.png"] = d / "zero_bytes.png"
    paths["zero_bytes.png"].write_bytes(b"")
    paths["not_an_image.png"] = d / "not_an_image.png"
    paths["not_an_image.png"].write_text("this is text, not a PNG\n")
    paths["huge.png"] = d / "huge.png"  # 9000 x 9000 = 81 Mpx: over our limit, under PIL's bomb error
    paths["huge.png"].write_bytes(_png_header_only(9000, 9000))
    paths["bomb.png"] = d / "bomb.png"  # 30000 x 30000: PIL itself refuses it as a decompression bomb
    paths["bomb.png"].write_bytes(_png_header_only(30000, 30000))
    paths["zero_width.png"] = d / "zero_width.png"
    paths["zero_width.png"].write_bytes(_png_header_only(0, 48))
    return paths


def build_training_cases(root: Path) -> list[Case]:
    """Every hostile training case (images written under ``root``). Image paths are relative to ``root``."""
    write_images(root)
    ok_think = THINK
    long_think = ("step " * 20_000)[:100_000]
    cases = [
        # --- tag structure
        Case("missing_think_open", _row(f"{ok_think}</think><answer>3</answer>"), "missing_tag", "'<think>'"),
        Case("missing_think_close", _row(f"<think>{ok_think}<answer>3</answer>"), "missing_tag", "'</think>'"),
        Case("missing_answer_open", _row(f"<think>{ok_think}</think>3</answer>"), "missing_tag", "'<answer>'"),
        Case("missing_answer_close", _row(f"<think>{ok_think}</think><answer>3"), "missing_tag", "'</answer>'"),
        Case("no_tags", _row("The answer is 3."), "missing_tag"),
        Case("answer_only", _row("<answer>3</answer>"), "missing_tag", "'<think>'"),
        Case("duplicated_think", _row("<think>a</think><think>b</think><answer>3</answer>"), "duplicate_tag", "2 times"),
        Case("duplicated_answer", _row(f"<think>{ok_think}</think><answer>3</answer><answer>4</answer>"),
             "duplicate_tag", "2 times"),
        Case("nested_answer_in_think", _row("<think>maybe <answer>2</answer> no</think>"), "nested_tags"),
        Case("nested_blocks", _row("<think>x <answer>3</think></answer>"), "nested_tags", "nested"),
        Case("answer_before_think", _row(f"<answer>3</answer><think>{ok_think}</think>"), "misordered_tags",
             "before the think"),
        Case("closing_before_opening", _row(f"</think>{ok_think}<think><answer>3</answer>"), "misordered_tags",
             "comes before"),
        Case("wrong_case_tags", _row(f"<THINK>{ok_think}</THINK><Answer>3</Answer>"), "missing_tag"),
        Case("spaced_tags", _row(f"< think >{ok_think}</ think ><answer>3</answer>"), "missing_tag"),
        Case("text_before_think", _row(f"Sure! <think>{ok_think}</think><answer>3</answer>"), "text_outside_tags",
             "before"),
        Case("text_between_blocks", _row(f"<think>{ok_think}</think> so <answer>3</answer>"), "text_outside_tags",
             "between"),
        Case("text_after_answer", _row(f"<think>{ok_think}</think><answer>3</answer> hope this helps"),
             "text_outside_tags", "after"),
        Case("tags_inside_code_block",
             _row("<think>Print it: ```python\nprint('<answer>')\n```</think><answer>3</answer>"), "duplicate_tag"),
        Case("tag_fragments_in_text", _row("<think>a < b and c > d, </thin k> <answ er></think><answer>3</answer>"),
             None),
        # --- empty / whitespace segments
        Case("empty_response", _row(""), "empty_response"),
        Case("whitespace_response", _row(" \n\t "), "empty_response"),
        Case("empty_think", _row("<think></think><answer>3</answer>"), "empty_think"),
        Case("whitespace_think", _row("<think> \n\t </think><answer>3</answer>"), "empty_think"),
        Case("empty_answer", _row(f"<think>{ok_think}</think><answer></answer>"), "empty_answer"),
        Case("whitespace_answer", _row(f"<think>{ok_think}</think><answer>\u3000 \n</answer>"), "empty_answer"),
        # --- long traces: 100k characters of think (rejected by max_length, never silently truncated)
        Case("think_100k_chars", _row(f"<think>{long_think}</think><answer>3</answer>"), "truncated_answer",
             "max_length"),
        Case("answer_100k_chars", _row(f"<think>{ok_think}</think><answer>{long_think}</answer>"),
             "truncated_answer", "max_length"),
        # --- unicode and replacement characters are ordinary text
        Case("unicode", _row("<think>数一数：三个 \U0001f600 café</think><answer>３</answer>"), None),
        Case("replacement_char", _row("<think>bad byte \ufffd here</think><answer>3</answer>"), None),
        # --- images
        Case("image_missing", _row(good_response(1), images=("images/nope.png",)), "image_missing", "not found"),
        Case("image_truncated", _row(good_response(1), images=("images/truncated.png",)), "image_unreadable"),
        Case("image_zero_bytes", _row(good_response(1), images=("images/zero_bytes.png",)), "image_unreadable"),
        Case("image_not_an_image", _row(good_response(1), images=("images/not_an_image.png",)), "image_unreadable"),
        # a zero-width PNG header: PIL refuses it when opening (an in-memory 0x0 image is "image_empty")
        Case("image_zero_width", _row(good_response(1), images=("images/zero_width.png",)), "image_unreadable"),
        Case("image_huge", _row(good_response(1), images=("images/huge.png",)), "image_huge", "9000x9000"),
        Case("image_bomb", _row(good_response(1), images=("images/bomb.png",)), "image_huge"),
        Case("image_is_a_folder", _row(good_response(1), images=("images",)), "image_missing"),
        Case("image_cmyk", _row(good_response(1), images=("images/cmyk.jpg",)), None),
        Case("image_rgba", _row(good_response(1), images=("images/rgba.png",)), None),
        Case("image_palette_transparent", _row(good_response(1), images=("images/palette_transparent.png",)), None),
        Case("image_16bit", _row(good_response(1), images=("images/grey16.png",)), None),
        Case("image_1x1", _row(good_response(1), images=("images/tiny_1x1.png",)), None),
        Case("image_count_mismatch", {**_row(good_response(1)), "images": ["images/good.png", "images/good.png"]},
             "image_count", "placeholder"),
        # --- columns / structure
        Case("wrong_columns", {"question": "How many?", "response": good_response(1), "img": "images/good.png"},
             "unknown_format", "no supported columns"),
        Case("no_assistant_turn", {"messages": [{"role": "user", "content": "hi"}]}, "no_response"),
        Case("no_prompt_turn", {"messages": [{"role": "assistant", "content": good_response(1)}]}, "no_prompt"),
        Case("message_without_role", {"messages": [{"content": "hi"}, {"role": "assistant", "content": "x"}]},
             "bad_messages"),
        Case("sharegpt_unknown_speaker", {"conversations": [{"from": "alien", "value": "hi"},
                                                            {"from": "gpt", "value": good_response(1)}]},
             "bad_messages", "alien"),
    ]
    return cases


def build_eval_rows(root: Path) -> list[dict]:
    """Built-in-benchmark-shaped evaluation rows whose images are bad (paths relative to ``root``)."""
    write_images(root)
    base = {"prompt": "How many shapes? Options: (A) 1 (B) 2. Answer with the letter.", "answer": "A",
            "choices": ["1", "2"], "category": "count"}
    return [
        {**base, "id": "missing", "image": "images/nope.png"},
        {**base, "id": "truncated", "image": "images/truncated.png"},
        {**base, "id": "zero_bytes", "image": "images/zero_bytes.png"},
        {**base, "id": "not_an_image", "image": "images/not_an_image.png"},
        {**base, "id": "bomb", "image": "images/bomb.png"},
    ]


GARBAGE_OUTPUTS = [
    "", " ", "\x00", "<", ">", "</", "<think", "<think>", "</think>", "<answer>", "</answer>", "<><><>",
    "<think><think><think>", "</answer></answer><answer>", "<answer><think></answer></think>",
    "<THINK>x</answer><ANSWER>", "\ufffd\ufffd<answer>\ud7ff</answer>", "<think>" * 1000 + "</answer>" * 1000,
    "a" * 100_000, "<answer>" + "b" * 100_000, "```<answer>x</answer>```", "<\nthink\n>x<\n/\nthink\n>",
    "\u202e<answer>A</answer>\u202c", "<think>x</think><answer>A</answer>" * 50,
]


# ------------------------------------------------------------------------------------------- file-level cases


@dataclass
class FileCase:
    name: str
    path: Path
    split: str
    rows: int | None  # rows loaded, or None when loading must fail
    message: str = ""  # a fragment of the error (rows is None) or of the warning logged while loading


def build_file_cases(root: Path) -> list[FileCase]:
    """Whole data files of awkward shapes (written under ``root``, images under ``root/images``)."""
    import json

    write_images(root)
    root = Path(root)
    row = _row(good_response(1))
    cases = []

    def write(name: str, text: str | bytes) -> Path:
        path = root / name
        path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
        return path

    one = write("single_object.json", json.dumps(row))
    cases.append(FileCase("one example written as a single object", one, "train", 1))
    splits = write("splits.json", json.dumps({"train": [row, row], "test": [row]}))
    cases.append(FileCase("split mapping, train", splits, "train", 2))
    cases.append(FileCase("split mapping, test", splits, "test", 1))
    cases.append(FileCase("split mapping without the split", splits, "validation", None,
                          "holds the splits ['train', 'test'] but not 'validation'"))
    cases.append(FileCase("one non-split list", write("data_key.json", json.dumps({"data": [row] * 3})), "train", 3))
    latin1 = json.dumps(row).replace("How many", "Caf\u00e9 how many").encode("latin-1") + b"\n"
    cases.append(FileCase("latin-1 bytes", write("latin1.jsonl", latin1), "train", 1, "1 invalid UTF-8 byte(s)"))
    cases.append(FileCase("misspelt local path", root / "trian.jsonl", "train", None, "not found"))
    cases.append(FileCase("misspelt relative path", Path("data/trian.jsonl"), "train", None, "not found"))
    return cases


# Evaluation rows whose integer answer could be an index or a value ("answer": 3, choices ["1".."4"]): the gold
# under each --answer_format ("error" = refused as ambiguous).
AMBIGUOUS_EVAL_CASES = [
    ({"question": "How many?", "answer": 3, "choices": ["1", "2", "3", "4"]}, {"auto": "error", "index": "D", "text": "C"}),
    ({"question": "How many?", "answer": 1, "choices": ["0", "1", "2"]}, {"auto": "B", "index": "B", "text": "B"}),
    ({"question": "How many?", "answer": 4, "choices": ["1", "2", "3", "4"]}, {"auto": "D", "index": "error", "text": "D"}),
    ({"question": "Colour?", "answer": 1, "choices": ["red", "blue"]}, {"auto": "B", "index": "B", "text": "error"}),
    ({"question": "How many?", "answer": "3", "choices": ["1", "2", "3", "4"]}, {"auto": "C", "index": "D", "text": "C"}),
]
