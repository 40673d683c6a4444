"""Dataset adapters on tiny fixtures in the ScienceQA (Hugging Face) and IconQA (lmms-lab) schemas."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import datasets
import pytest
from PIL import Image

from scale_vlm.eval import adapters
from scale_vlm.eval.adapters import ColumnMapping, detect_adapter, load_eval_dataset, split_choices
from scale_vlm.prompts import reasoning_instruction
from scale_vlm.segments import Tags

FIXTURES = Path(__file__).parent / "fixtures"
SCIENCEQA = FIXTURES / "scienceqa"
ICONQA = FIXTURES / "iconqa"


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_scienceqa_jsonl_fixture():
    examples = load_eval_dataset(str(SCIENCEQA / "test.jsonl"))
    assert [e.gold for e in examples] == ["A", "B", "B", "A"]
    assert [len(e.images) for e in examples] == [1, 1, 0, 1]
    assert [e.category for e in examples] == ["Colors", "Word meaning", "Classification", "Colors"]
    assert examples[0].id == "scienceqa-0"
    assert examples[0].choices == ["red", "blue"]
    assert examples[0].prompt == (
        "Context: The picture shows one square.\nQuestion: Which color is the square?\n"
        "Options: (A) red (B) blue\n" + reasoning_instruction()
    )
    assert examples[1].prompt.startswith("Context: N/A\n")  # empty hint
    assert examples[0].images[0].mode == "RGB" and examples[0].images[0].getpixel((0, 0)) == (220, 30, 30)


def test_scienceqa_folder_image_only_and_limit():
    assert [e.id for e in load_eval_dataset(str(SCIENCEQA), image_only=True)] == ["scienceqa-0", "scienceqa-1", "scienceqa-3"]
    assert [e.id for e in load_eval_dataset(str(SCIENCEQA), image_only=True, limit=2)] == ["scienceqa-0", "scienceqa-1"]


def test_scienceqa_hf_schema_save_to_disk(tmp_path):
    """The real Hugging Face layout: an Image feature holding PIL images or None, integer answers."""
    rows = _rows(SCIENCEQA / "test.jsonl")
    for row in rows:
        row["image"] = None if row["image"] is None else Image.open(SCIENCEQA / row["image"]).convert("RGB")
    features = datasets.Features({
        "image": datasets.Image(), "question": datasets.Value("string"),
        "choices": datasets.Sequence(datasets.Value("string")), "answer": datasets.Value("int8"),
        "hint": datasets.Value("string"), "task": datasets.Value("string"), "grade": datasets.Value("string"),
        "subject": datasets.Value("string"), "topic": datasets.Value("string"), "category": datasets.Value("string"),
        "skill": datasets.Value("string"), "lecture": datasets.Value("string"), "solution": datasets.Value("string"),
    })
    ds = datasets.Dataset.from_dict({k: [r[k] for r in rows] for k in features}, features=features)
    datasets.DatasetDict({"test": ds, "validation": ds.select([0])}).save_to_disk(tmp_path / "sqa")
    examples = load_eval_dataset(str(tmp_path / "sqa"), split="test")
    assert [e.gold for e in examples] == ["A", "B", "B", "A"]
    assert [len(e.images) for e in examples] == [1, 1, 0, 1]
    assert len(load_eval_dataset(str(tmp_path / "sqa"), split="validation")) == 1
    with pytest.raises(ValueError, match=r"no split 'train'; available: \['test', 'validation'\]"):
        load_eval_dataset(str(tmp_path / "sqa"), split="train")


def test_iconqa_fixture():
    examples = load_eval_dataset(str(ICONQA))
    assert [e.id for e in examples] == ["iconqa-1", "iconqa-2", "iconqa-3", "iconqa-4"]
    assert [e.gold for e in examples] == ["B", "3", "B", "4"]
    assert [e.choices for e in examples] == [["circle", "square", "triangle"], [], ["big", "small"], []]
    assert [e.category for e in examples] == ["choose_txt", "fill_in_blank", "choose_txt", "fill_in_blank"]
    assert all(len(e.images) == 1 for e in examples)
    assert examples[0].prompt == (
        "Question: What shape is this?\nOptions: (A) circle (B) square (C) triangle\n" + reasoning_instruction()
    )
    assert examples[1].prompt == "Question: How many dots are there?\n" + reasoning_instruction()


def test_iconqa_choose_img_appends_choice_images():
    image = Image.new("RGB", (8, 8), (1, 2, 3))
    row = dict(question_id="q", query_image=image, question="Which one?", choices="image_0,image_1",
               answer="image_1", ques_type="choose_img", choice_image_0=image, choice_image_1=image)
    (example,) = adapters.iconqa_examples([row])
    assert (len(example.images), example.gold) == (3, "B")


def test_custom_tags_reach_the_prompt():
    tags = Tags("<r>", "</r>", "<f>", "</f>")
    (example, *_) = load_eval_dataset(str(ICONQA), tags=tags)
    assert example.prompt.endswith(reasoning_instruction(tags)) and "<f></f>" in example.prompt


def test_sft_rows_are_read_with_the_tags_training_renders_with():
    """GRPO and eval take golds from SFT rows as training reads them: a reasoning field wrapped in the custom think
    tags, and a row training refuses (a reasoning field and those tags in its text) refused here too."""
    tags = Tags("<r>", "</r>", "<f>", "</f>")
    good = {"messages": [{"role": "user", "content": "Q?"},
                         {"role": "assistant", "content": "<f>7</f>", "reasoning_content": "three and four"}]}
    both = {"messages": [{"role": "user", "content": "Q?"},
                         {"role": "assistant", "content": "<r>again</r><f>7</f>", "reasoning_content": "three"}]}
    (example,) = adapters.sft_examples([good], tags=tags)
    assert (example.prompt, example.gold) == ("Q?", "7")
    with pytest.raises(ValueError, match="example 0: .*both a reasoning field and '<r>' tags"):
        adapters.sft_examples([both], tags=tags)
    adapters.sft_examples([both])  # with the default tags the text holds no think tags: nothing to refuse
    assert adapters.training_prompts([good, both], tags=tags) == ["Q?"]  # the refused row is passed over
    assert adapters.training_prompts([good, both]) == ["Q?", "Q?"]


def test_builtin_benchmark():
    from scale_vlm.bench import BenchConfig, make_benchmark

    examples = load_eval_dataset("builtin", limit=4, seed=3)
    reference = make_benchmark(BenchConfig(seed=3, num_examples=4, split="test"))
    assert [e.id for e in examples] == reference["id"]
    assert [e.prompt for e in examples] == reference["prompt"]
    assert [e.gold for e in examples] == reference["answer"]
    assert [e.choices for e in examples] == reference["choices"]
    assert [e.category for e in examples] == reference["category"]
    assert all(len(e.images) == 1 and e.images[0].size == (48, 48) for e in examples)


def test_builtin_schema_from_parquet(tmp_path):
    image = Image.new("RGB", (48, 48), (9, 9, 9))
    ds = datasets.Dataset.from_dict(
        {"id": ["x1", "x2"], "image": [image, image], "prompt": ["How many? Think.", "Which? (A) a (B) b"],
         "response": ["", ""], "answer": ["3", "B"], "choices": [[], ["a", "b"]], "category": ["count", "attribute"]},
        features=datasets.Features({
            "id": datasets.Value("string"), "image": datasets.Image(), "prompt": datasets.Value("string"),
            "response": datasets.Value("string"), "answer": datasets.Value("string"),
            "choices": datasets.Sequence(datasets.Value("string")), "category": datasets.Value("string"),
        }),
    )
    ds.to_parquet(tmp_path / "bench.parquet")
    examples = load_eval_dataset(str(tmp_path / "bench.parquet"))
    assert [(e.id, e.prompt, e.gold, e.choices, e.category) for e in examples] == [
        ("x1", "How many? Think.", "3", [], "count"), ("x2", "Which? (A) a (B) b", "B", ["a", "b"], "attribute")
    ]
    assert examples[0].images[0].getpixel((0, 0)) == (9, 9, 9)


def test_generic_column_mapping(tmp_path):
    Image.new("RGB", (8, 8), (5, 6, 7)).save(tmp_path / "a.png")
    rows = [
        {"qid": 7, "img": "a.png", "q": "Pick the fruit.", "opts": ["car", "pear"], "a": "pear", "kind": "food"},
        {"qid": 8, "img": "a.png", "q": "Pick the vehicle.", "opts": ["car", "pear"], "a": 0, "kind": "vehicles"},
    ]
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    mapping = ColumnMapping(image_column="img", question_column="q", answer_column="a", choices_column="opts",
                            category_column="kind", id_column="qid")
    examples = load_eval_dataset(str(tmp_path), columns=mapping)
    assert [(e.id, e.gold, e.category, len(e.images)) for e in examples] == [("7", "B", "food", 1), ("8", "A", "vehicles", 1)]
    assert examples[0].prompt == "Question: Pick the fruit.\nOptions: (A) car (B) pear\n" + reasoning_instruction()


@pytest.mark.parametrize(
    "columns, expected",
    [
        (["query_image", "question", "choices", "answer", "ques_type"], "iconqa"),
        (["image", "question", "choices", "answer", "hint", "subject"], "scienceqa"),
        (["id", "image", "prompt", "response", "answer", "choices", "category"], "builtin"),
        (["img", "q", "a"], "columns"),
    ],
)
def test_detect_adapter(columns, expected):
    assert detect_adapter(columns) == expected


def test_split_choices():
    assert split_choices("circle, square ,triangle") == ["circle", "square", "triangle"]
    assert split_choices("") == [] and split_choices(None) == []
    assert split_choices([1, 2]) == ["1", "2"]


def test_known_names_route_to_hub_and_adapter(monkeypatch):
    calls = []

    def fake_load_rows(source, split):
        calls.append((source, split))
        folder = SCIENCEQA if "Science" in source else ICONQA
        return _rows(folder / "test.jsonl"), folder

    monkeypatch.setattr(adapters, "load_rows", fake_load_rows)
    assert [e.gold for e in load_eval_dataset("ScienceQA", split="validation")] == ["A", "B", "B", "A"]
    assert [e.gold for e in load_eval_dataset("lmms-lab/IconQA")] == ["B", "3", "B", "4"]
    assert calls == [("derek-thomas/ScienceQA", "validation"), ("lmms-lab/ICON-QA", "test")]


def _write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_errors_name_the_example(tmp_path):
    # The fixture images are copied so that relative image paths resolve next to the edited files.
    shutil.copytree(SCIENCEQA / "images", tmp_path / "images")
    shutil.copytree(ICONQA / "images", tmp_path / "images", dirs_exist_ok=True)
    rows = _rows(SCIENCEQA / "test.jsonl")
    rows[1]["image"] = "images/missing.png"
    with pytest.raises(ValueError, match=r"ScienceQA example 1: cannot load image 'images/missing.png'"):
        load_eval_dataset(_write_jsonl(tmp_path / "bad_image.jsonl", rows), adapter="scienceqa")

    rows = _rows(SCIENCEQA / "test.jsonl")
    rows[2]["answer"] = 5
    with pytest.raises(ValueError, match=r"ScienceQA example 2: answer index 5 is outside the 2 choices"):
        load_eval_dataset(_write_jsonl(tmp_path / "bad_answer.jsonl", rows))

    rows = _rows(ICONQA / "test.jsonl")
    rows[0]["answer"] = "hexagon"
    with pytest.raises(ValueError, match=r"IconQA example 0: answer 'hexagon' matches none of the choices"):
        load_eval_dataset(_write_jsonl(tmp_path / "iconqa.jsonl", rows), image_only=False)

    with pytest.raises(ValueError, match=r"example 0: missing column\(s\) \['q'\]"):
        load_eval_dataset(_write_jsonl(tmp_path / "generic.jsonl", [{"image": None, "a": "1"}]),
                          columns=ColumnMapping(question_column="q", answer_column="a"))

    (tmp_path / "broken.jsonl").write_text('{"question": 1}\n{oops\n')
    with pytest.raises(ValueError, match="broken.jsonl: line 2 is not valid JSON"):
        load_eval_dataset(str(tmp_path / "broken.jsonl"))

    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match="x.csv: no rows could be read from it as csv"):
        load_eval_dataset(str(tmp_path / "x.csv"))
    (tmp_path / "x.xlsx").write_text("a,b\n")
    with pytest.raises(ValueError, match=r"unsupported data file .*x.xlsx.*: use .json, .jsonl, .parquet, .arrow or .csv"):
        load_eval_dataset(str(tmp_path / "x.xlsx"))

    with pytest.raises(ValueError, match="unknown adapter 'vqa'"):
        load_eval_dataset(str(ICONQA), adapter="vqa")


def test_rows_of_different_shapes_are_decoded_one_by_one(tmp_path):
    # "answer" is an index in one row and the choice's text in the other: no single Arrow column holds both, so the
    # shared loader keeps such rows as JSON text; evaluation must still see each row as written.
    path = _write_jsonl(tmp_path / "mixed.jsonl", [
        {"question": "Which colour?", "choices": ["red", "blue"], "answer": 1},
        {"question": "Which colour?", "choices": ["red", "blue"], "answer": "blue"},
    ])
    examples = load_eval_dataset(path, columns=ColumnMapping(image_column=None, choices_column="choices"))
    assert [e.gold for e in examples] == ["B", "B"]


def test_rows_without_an_id_keep_their_index_as_id(tmp_path):
    rows = [{**row, "image": None} for row in _rows(SCIENCEQA / "test.jsonl")[:2]]
    rows[0]["id"] = "q-first"
    rows[1].pop("id", None)  # loaded into one table with the first row, its id is a null, not a missing key
    examples = load_eval_dataset(_write_jsonl(tmp_path / "ids.jsonl", rows), adapter="scienceqa")
    assert [e.id for e in examples] == ["q-first", "scienceqa-1"]
