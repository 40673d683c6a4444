"""lmms-eval's own evaluator on the ``scale_vlm_*`` tasks against ``scale-vlm eval``: same prompts, outputs and scores.

Runs only where lmms-eval is installed (CI builds a separate environment for it, see .ci/run; the main one stays
without lmms-eval and torchvision). Offline, on a CPU: fixtures in the schemas of the stock tasks' datasets
(ScienceQA-IMG: ``image``, ``question``, ``choices``, ``answer`` index, ``hint``, ...; ICON-QA: ``query_image``,
``question``, ``choices`` comma-separated, ``answer`` text, ``ques_type``, ``question_id``), written in the hub's
parquet layout, and two models: the shipped tiny base as it is (its replies are untagged prose or bare letters) and
the same base after a short SCALe SFT on tagged traces of these questions (its replies carry ``<think>`` and
``<answer>`` tags), so both the untagged and the tagged paths of the scorer are compared.

Also scores the same outputs with the stock ``scienceqa_img`` task (its ``process_results``, its reasoning stripping)
and prints both accuracies: the figure in docs/evaluation.md comes from

    pytest -m slow tests/test_lmms_eval.py -s -k stock
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import yaml

from scale_vlm.cli import main
from scale_vlm.eval.adapters import iconqa_examples, scienceqa_examples
from scale_vlm.lmms_eval import TASK_NAMES, TASKS_DIR, task_utils
from scale_vlm.parsing import parse_output
from scale_vlm.tiny.shipped import SHIPPED_BASE

# The evaluator runs need lmms-eval (its own environment); the task files and functions are checked everywhere.
lmms_eval_installed = pytest.mark.skipif(
    importlib.util.find_spec("lmms_eval") is None,
    reason="lmms-eval is installed only in the lmms-eval test environment (.ci/run)")

BUDGET = 40  # new tokens: the trained model's traces (~25 tokens) fit, the base model's prose runs into it
SQA_SPLIT, ICONQA_SPLIT = "test", "val"


def _image(color, size):
    from PIL import Image

    return Image.new("RGB", size, color)


# Varied lengths on purpose: questions, hints (empty and long), 2 to 5 choices, image sizes.
SCIENCEQA_ROWS = [
    dict(image=((220, 30, 30), (48, 48)), question="Which color is the square?", choices=["red", "blue"], answer=0,
         hint="The picture shows one square.", category="Colors"),
    dict(image=((30, 200, 30), (64, 40)), question="Which word best describes the shape in the picture?",
         choices=["dark", "bright", "striped"], answer=1, hint="", category="Word meaning"),
    dict(image=((30, 30, 220), (32, 32)), question="How many squares are shown?", choices=["1", "2", "3", "4"],
         answer=2, hint="", category="Counting"),
    dict(image=((200, 200, 30), (48, 56)), question="Which is a mammal?",
         choices=["shark", "whale", "trout", "eel", "frog"], answer=1,
         hint="Mammals breathe air. Whales come up to breathe through a blowhole.", category="Classification"),
    dict(image=((120, 60, 200), (40, 48)), question="Which of these is a metal?", choices=["wood", "iron", "glass"],
         answer=1, hint="Metals conduct heat.", category="Materials"),
]
ICONQA_ROWS = [
    dict(question_id="101", query_image=((10, 10, 10), (48, 48)), question="What shape is this?",
         choices="circle,square,triangle", answer="square", ques_type="choose_txt"),
    dict(question_id="102", query_image=((200, 10, 10), (56, 40)), question="How many dots are there?", choices="",
         answer="3", ques_type="fill_in_blank"),
    dict(question_id="103", query_image=((10, 200, 10), (32, 32)), question="Is the shape big or small?",
         choices="big,small", answer="small", ques_type="choose_txt"),
    dict(question_id="104", query_image=((10, 10, 200), (48, 48)),
         question="How many sides does the shape in the middle of the picture have?", choices=None, answer="4",
         ques_type="fill_in_blank"),
    # the options are images (the hub data's choice_image_0 and _1 columns): three images in one prompt
    dict(question_id="105", query_image=((120, 120, 120), (40, 40)), question="Which picture shows a circle?",
         choices="image_0,image_1", answer="image_1", ques_type="choose_img",
         choice_image_0=((250, 0, 0), (24, 24)), choice_image_1=((0, 0, 250), (32, 24))),
]
CHOICE_IMAGES = ("choice_image_0", "choice_image_1")


def _write_scienceqa(root: Path) -> Path:
    import datasets

    rows = [{**row, "image": _image(*row["image"]), "task": "closed choice", "grade": f"grade{i + 1}",
             "subject": "natural science", "topic": "science", "skill": "identify", "lecture": "", "solution": ""}
            for i, row in enumerate(SCIENCEQA_ROWS)]
    string = datasets.Value("string")
    features = datasets.Features({
        "image": datasets.Image(), "question": string, "choices": datasets.Sequence(string),
        "answer": datasets.Value("int64"), "hint": string, "task": string, "grade": string, "subject": string,
        "topic": string, "category": string, "skill": string, "lecture": string, "solution": string,
    })
    (root / "data").mkdir(parents=True)
    datasets.Dataset.from_list(rows, features=features).to_parquet(str(root / "data" / f"{SQA_SPLIT}-00000-of-00001.parquet"))
    return root


def _write_iconqa(root: Path) -> Path:
    import datasets

    rows = [{**row, "query_image": _image(*row["query_image"]), "grade": "grade1", "label": "shapes",
             **{name: _image(*row[name]) if name in row else None for name in CHOICE_IMAGES}} for row in ICONQA_ROWS]
    string = datasets.Value("string")
    features = datasets.Features({
        "question_id": string, "query_image": datasets.Image(), "question": string, "choices": string,
        "answer": string, "ques_type": string, "grade": string, "label": string,
        **{name: datasets.Image() for name in CHOICE_IMAGES},
    })
    (root / "data").mkdir(parents=True)
    datasets.Dataset.from_list(rows, features=features).to_parquet(str(root / "data" / f"{ICONQA_SPLIT}-00000-of-00001.parquet"))
    return root


def _trace(example) -> str:
    """A short tagged trace ending in the gold answer (the trained model's target)."""
    return f"<think>I read the question and check each option.</think><answer>{example.gold}</answer>"


def _write_sft_data(path: Path, sqa_dir: Path, iconqa_dir: Path) -> Path:
    """SFT rows (TRL messages) for every fixture question: the adapter's prompt, a tagged trace as the reply."""
    from scale_vlm.eval.adapters import load_rows

    # the image-choice question is evaluated, not trained on: the short SFT stays the one the thresholds below were
    # set for (and that question tests the prompt's images, not what the model learnt)
    examples = (scienceqa_examples(load_rows(str(sqa_dir), SQA_SPLIT)[0])
                + [e for e in iconqa_examples(load_rows(str(iconqa_dir), ICONQA_SPLIT)[0]) if e.category != "choose_img"])
    images = path.parent / "sft-images"
    images.mkdir()
    with open(path, "w", encoding="utf-8") as f:
        for i, ex in enumerate(examples):
            names = []
            for j, img in enumerate(ex.images):
                names.append(f"sft-images/{i}-{j}.png")
                img.save(path.parent / names[-1])
            content = [{"type": "image"} for _ in names] + [{"type": "text", "text": ex.prompt}]
            f.write(json.dumps({"messages": [{"role": "user", "content": content},
                                             {"role": "assistant", "content": [{"type": "text", "text": _trace(ex)}]}],
                                "images": names}) + "\n")
    return path


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    root = tmp_path_factory.mktemp("lmms")
    sqa, iconqa = _write_scienceqa(root / "scienceqa"), _write_iconqa(root / "iconqa")
    return {"root": root, "scienceqa": sqa, "iconqa": iconqa}


@pytest.fixture(scope="module")
def trained_model(fixtures):
    """The shipped base after a short SCALe SFT on tagged traces of the fixture questions."""
    root = fixtures["root"]
    data = _write_sft_data(root / "sft.jsonl", fixtures["scienceqa"], fixtures["iconqa"])
    out = root / "scale-sft"
    assert main(["sft", "--model_name_or_path", str(SHIPPED_BASE), "--dataset_name", str(data), "--output_dir",
                 str(out), "--max_steps", "120", "--per_device_train_batch_size", "3", "--learning_rate", "1e-3",
                 "--save_strategy", "no", "--use_cpu", "true", "--disable_tqdm", "true", "--report_to", "none",
                 "--seed", "0"]) == 0
    return out


def _task_yaml(folder: Path, name: str, include: Path, data: Path, **overrides) -> None:
    """A task that is ``include`` with the fixture folder as its data (the stock YAMLs name a hub repository)."""
    lines = [f"task: {name}", f"include: {include}", f"dataset_path: {data}", "dataset_name: null",
             "dataset_kwargs: {}"]
    lines += [f"{key}: {value}" for key, value in overrides.items()]
    (folder / f"{name}.yaml").write_text("\n".join(lines) + "\n")


def _cli_defaults() -> argparse.Namespace:
    """The lmms-eval command's option defaults, among them --reasoning_tags (closed <think> blocks are stripped
    before process_results). Every run here gets them, as from the lmms-eval command, so what a task sets counts."""
    from lmms_eval.__main__ import parse_eval_args

    argv, sys.argv = sys.argv, ["lmms-eval"]
    try:
        return parse_eval_args()[1]
    finally:
        sys.argv = argv


def _lmms_evaluate(model_dir, tasks_dir: Path, tasks: list[str]) -> dict:
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager

    return simple_evaluate(
        model="scale_vlm",  # through the lmms_eval.models entry point of the installed scale-vlm
        model_args=f"pretrained={model_dir},device=cpu,dtype=float32,batch_size=2",
        tasks=tasks, task_manager=TaskManager(include_path=str(tasks_dir)), gen_kwargs=f"max_new_tokens={BUDGET}",
        log_samples=True, cli_args=_cli_defaults(), bootstrap_iters=0,
    )


def _scale_vlm_eval(model_dir, data: Path, split: str, out: Path) -> tuple[dict, list[dict]]:
    assert main(["eval", "--model_name_or_path", str(model_dir), "--dataset_name", str(data), "--dataset_test_split",
                 split, "--max_new_tokens", str(BUDGET), "--batch_size", "3", "--dtype", "float32", "--device", "cpu",
                 "--progress", "false", "--output_dir", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    return metrics, [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]


def _samples(results: dict, task: str) -> list[dict]:
    return sorted(results["samples"][task], key=lambda s: s["doc_id"])


def _response(sample: dict) -> str:
    """The one raw output of a sample: lmms-eval logs ``resps`` as ``[[text]]`` or ``[text]`` (one request)."""
    (response,) = sample["resps"]
    if isinstance(response, list):
        (response,) = response
    return response


def _assert_agreement(results: dict, task: str, metrics: dict, predictions: list[dict]) -> None:
    samples = _samples(results, task)
    assert len(samples) == len(predictions) == metrics["num_examples"]
    for sample, row in zip(samples, predictions):
        where = (task, sample["doc_id"], row["output"])
        assert sample["arguments"][0] == row["prompt"], where  # the same prompt ...
        assert _response(sample) == row["output"], where  # ... the same output ...
        assert sample["target"] == row["gold"], where
        assert sample["accuracy"] == float(row["correct"]), where  # ... the same scores
        assert sample["malformed_rate"] == float(row["malformed"]), where
        think = parse_output(row["output"]).think
        assert sample["think_words"] == len(think.split()) if think else sample["think_words"] == 0, where
    aggregate = results["results"][task]
    assert aggregate["accuracy,none"] == pytest.approx(metrics["accuracy"])
    assert aggregate["malformed_rate,none"] == pytest.approx(metrics["malformed_rate"])


def _our_tasks(fixtures, folder: Path) -> list[str]:
    folder.mkdir()
    _task_yaml(folder, "fx_sqa", TASKS_DIR / "scale_vlm_scienceqa_img.yaml", fixtures["scienceqa"])
    _task_yaml(folder, "fx_iconqa", TASKS_DIR / "scale_vlm_iconqa_val.yaml", fixtures["iconqa"])
    return ["fx_sqa", "fx_iconqa"]


@pytest.mark.slow
@lmms_eval_installed
@pytest.mark.parametrize("which", ["base", "trained"])
def test_lmms_eval_runs_agree_with_scale_vlm_eval_example_by_example(which, fixtures, request, tmp_path):
    model_dir = SHIPPED_BASE if which == "base" else request.getfixturevalue("trained_model")
    tasks = _our_tasks(fixtures, tmp_path / "tasks")
    results = _lmms_evaluate(model_dir, tmp_path / "tasks", tasks)
    sqa = _scale_vlm_eval(model_dir, fixtures["scienceqa"], SQA_SPLIT, tmp_path / "eval-sqa")
    iconqa = _scale_vlm_eval(model_dir, fixtures["iconqa"], ICONQA_SPLIT, tmp_path / "eval-iconqa")
    _assert_agreement(results, "fx_sqa", *sqa)
    _assert_agreement(results, "fx_iconqa", *iconqa)
    # the image-choice question reached both with its option images (the adapter says so in the prompt only then)
    (choose_img,) = [row for row in iconqa[1] if row["id"] == "105"]
    assert "The options are shown as images after the question image" in choose_img["prompt"]
    outputs = [row["output"] for row in sqa[1] + iconqa[1]]
    if which == "trained":  # the comparison covered the tagged path: traces with think text, scored from the tag
        tagged = [parse_output(o) for o in outputs]
        assert sum(p.answer_source == "tag" for p in tagged) >= 6, outputs
        assert sum(bool(p.think) for p in tagged) >= 6, outputs
    else:  # and the untagged one
        assert all(parse_output(o).answer_source != "tag" for o in outputs), outputs


@pytest.mark.slow
@lmms_eval_installed
def test_stock_scienceqa_img_on_the_same_outputs(fixtures, trained_model, tmp_path):
    """The stock task's scoring (and its reasoning stripping) on the outputs the tag-aware task scored."""
    import lmms_eval.tasks.scienceqa.utils as stock_utils

    stock_yaml = Path(stock_utils.__file__).parent / "scienceqa_img.yaml"
    ours = TASKS_DIR / "scale_vlm_scienceqa_img.yaml"
    folder = tmp_path / "tasks"
    folder.mkdir()
    _task_yaml(folder, "fx_sqa", ours, fixtures["scienceqa"])
    # The stock task with scale-vlm's prompt and budget, so the model sees what it saw under fx_sqa: only the
    # scoring (process_results, reasoning stripping) is the stock task's.
    _task_yaml(folder, "fx_stock", stock_yaml, fixtures["scienceqa"],
               doc_to_visual="!function scale_vlm.lmms_eval.task_utils.scienceqa_doc_to_visual",
               doc_to_text="!function scale_vlm.lmms_eval.task_utils.scienceqa_doc_to_text",
               generation_kwargs="{max_new_tokens: 2048, temperature: 0, do_sample: false, until: []}")
    results = _lmms_evaluate(trained_model, folder, ["fx_sqa", "fx_stock"])
    ours_samples, stock_samples = _samples(results, "fx_sqa"), _samples(results, "fx_stock")
    assert [_response(s) for s in stock_samples] == [_response(s) for s in ours_samples]  # the same outputs
    tag_aware = results["results"]["fx_sqa"]["accuracy,none"]
    stock = results["results"]["fx_stock"]["exact_match,none"]
    print(f"\nScienceQA-IMG fixtures, {len(ours_samples)} questions, trained tiny model, the same outputs: "
          f"tag-aware accuracy {tag_aware:.3f}, stock scienceqa_img exact_match {stock:.3f}, "
          f"malformed rate {results['results']['fx_sqa']['malformed_rate,none']:.3f}")
    for ours_sample, stock_sample in zip(ours_samples, stock_samples):
        output = _response(ours_sample)
        parsed = parse_output(output)
        if parsed.answer_source == "tag":  # "<answer>B</answer>" is neither a letter nor "B. ...": never a match
            assert stock_sample["exact_match"] == 0.0, output
    assert tag_aware > stock  # the tagged answers the stock task cannot read


@pytest.mark.slow
@lmms_eval_installed
def test_tasks_are_found_through_the_printed_include_path(capsys):
    """``scale-vlm lmms-eval-path`` prints the folder lmms-eval indexes: every shipped task is there."""
    from lmms_eval.tasks import TaskManager

    assert main(["lmms-eval-path"]) == 0
    printed = capsys.readouterr().out.strip()
    assert Path(printed) == TASKS_DIR
    manager = TaskManager(include_path=printed)
    assert set(TASK_NAMES) <= set(manager.all_tasks)


# ------------------------------------------------------------------ the task files and functions (no lmms-eval needed)


class _TaskLoader(yaml.SafeLoader):
    """Reads lmms-eval task YAMLs: ``!function a.b.fn`` becomes the string ``a.b.fn``."""


_TaskLoader.add_constructor("!function", lambda loader, node: f"!function {loader.construct_scalar(node)}")


def _task_config(name: str) -> dict:
    config = yaml.load((TASKS_DIR / f"{name}.yaml").read_text(), Loader=_TaskLoader)
    if "include" in config:
        base = yaml.load((TASKS_DIR / config.pop("include")).read_text(), Loader=_TaskLoader)
        config = {**base, **config}
    return config


@pytest.mark.parametrize("name", TASK_NAMES)
def test_task_files_configure_the_scale_vlm_scoring(name):
    config = _task_config(name)
    assert config["task"] == name
    # the stock tasks' data (lmms-eval 0.7.3's scienceqa_img and iconqa YAMLs)
    expected_data = ({"dataset_path": "lmms-lab-encoder/ScienceQA", "dataset_name": "ScienceQA-IMG", "test_split": "test"}
                     if "scienceqa" in name else
                     {"dataset_path": "lmms-lab-encoder/ICON-QA", "test_split": name.rsplit("_", 1)[1]})
    assert {k: config.get(k) for k in expected_data} == expected_data
    assert config["reasoning_tags"] == "none"  # the scorer needs the <think> block lmms-eval strips by default
    assert config["generation_kwargs"] == {"max_new_tokens": 2048, "temperature": 0, "do_sample": False, "until": []}
    assert [m["metric"] for m in config["metric_list"]] == ["accuracy", "malformed_rate", "think_words"]
    functions = {k: v for k, v in config.items() if isinstance(v, str) and v.startswith("!function ")}
    assert set(functions) == {"doc_to_visual", "doc_to_text", "doc_to_target", "process_results"}
    for value in functions.values():
        module, _, function = value.removeprefix("!function ").rpartition(".")
        assert module == "scale_vlm.lmms_eval.task_utils" and callable(getattr(task_utils, function))


def test_task_files_ship_with_the_package():
    text = (Path(__file__).parent.parent / "pyproject.toml").read_text()
    assert '"lmms_eval/tasks/*"' in text
    assert {p.name for p in TASKS_DIR.iterdir()} >= {f"{n}.yaml" for n in TASK_NAMES} | {"_scale_vlm_iconqa_yaml"}


SQA_DOC = {"image": None, "question": "Which is a mammal?", "choices": ["shark", "whale", "trout"], "answer": 1,
           "hint": "Mammals breathe air."}
ICONQA_DOC = {"question_id": "7", "query_image": None, "question": "How many dots are there?", "choices": "",
              "answer": "3", "ques_type": "fill_in_blank"}


@pytest.mark.parametrize("output, expected", [
    ("<think>Whales breathe air, so whale.</think><answer>B</answer>", (1.0, 0.0, 5.0)),
    ("<think>A shark is a fish</think>\n<answer>(B) whale</answer>", (1.0, 0.0, 5.0)),
    ("<think>Sharks first.</think><answer>A</answer>", (0.0, 0.0, 2.0)),
    ("B", (1.0, 1.0, 0.0)),  # bare letter: scored, and malformed
    ("<think>still weighing shark against whale", (0.0, 1.0, 5.0)),  # truncated: all of it is think, no answer
    ("<think>one two three</think> whale", (1.0, 1.0, 3.0)),  # no answer tag: the text after </think> is scored
])
def test_scienceqa_process_results_are_scale_vlm_scores(output, expected):
    assert task_utils.scienceqa_doc_to_target(SQA_DOC) == "B"
    metrics = task_utils.scienceqa_process_results(SQA_DOC, [output])
    assert (metrics["accuracy"], metrics["malformed_rate"], metrics["think_words"]) == expected


def test_task_prompts_are_the_adapters_prompts():
    assert task_utils.scienceqa_doc_to_text(SQA_DOC) == (
        "Context: Mammals breathe air.\nQuestion: Which is a mammal?\nOptions: (A) shark (B) whale (C) trout\n"
        "Think step by step inside <think></think>, then give only the final answer inside <answer></answer>.")
    assert task_utils.iconqa_doc_to_text(ICONQA_DOC) == (
        "Question: How many dots are there?\n"
        "Think step by step inside <think></think>, then give only the final answer inside <answer></answer>.")
    assert task_utils.iconqa_doc_to_target(ICONQA_DOC) == "3"
    assert task_utils.iconqa_process_results(ICONQA_DOC, ["<think>1 2 3</think><answer>three</answer>"]) == {
        "accuracy": 1.0, "malformed_rate": 0.0, "think_words": 3.0}
