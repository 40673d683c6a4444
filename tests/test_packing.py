"""Padding-free (packed) VLM SFT (scale_vlm.packing): a packed batch gives the padded batch's loss and gradients on
every supported family of the conformance suite, no example attends to another, positions (Qwen-VL's multimodal
ones included) restart per example, and the families where packing is not exact are refused at start-up."""

from pathlib import Path

import families as F
import pytest
import torch

from scale_vlm.data.collator import ScaleCollator
from scale_vlm.loss import SegmentCounts, count_vector, scale_loss, segment_token_weights, vanilla_loss
from scale_vlm.packing import (
    PACKING_REFUSED,
    example_spans,
    first_fit_decreasing,
    pack_rows,
    packed_position_ids,
)
from scale_vlm.segments import SEGMENT_ANSWER, SEGMENT_PROMPT, SEGMENT_THINK

SUPPORTED = ["qwen2_vl", "qwen2_5_vl", "qwen3_vl_instruct", "qwen3_vl_thinking", "llava_1_5", "llava_next_mistral",
             "smolvlm"]
REFUSED = {"gemma3": "Gemma3ForConditionalGeneration"}
QWEN = [f for f in SUPPORTED if f.startswith("qwen")]
# Think repeats of the micro-batch's examples: lengths differ (equal lengths would hide a normaliser counted over
# the wrong examples); with a row capacity of the two longest, first-fit-decreasing packs them into two rows of two
# examples, [3, 2] and [1, 1] repeats (counting rows instead of examples would give 2, not 4).
REPEATS = (3, 1, 2, 1)
# The families with Qwen's real 152k vocabulary: the plain path's [tokens, 152k] logits cost seconds per step on CPU.
BIG_VOCAB = [f for f in SUPPORTED if f.startswith("qwen") and f != "qwen2_vl"]


def _rows(processor, repeats=REPEATS):
    rows = []
    for i, k in enumerate(repeats):
        example = F._example(i, k)
        rows.append({**F._render(processor, example).as_row(), "images": example.images})
    return rows


def _trainer(path, tmp_path, **overrides):
    from datasets import Dataset

    from scale_vlm.sft_trainer import ScaleSFTTrainer

    processor = F.family_processor(path)
    args = F._sft_args(Path(tmp_path) / "packed", padding_free=True, **overrides)
    trainer = ScaleSFTTrainer(model=F.family_model(path), args=args, processing_class=processor,
                              train_dataset=Dataset.from_list(_rows(processor, (1, 2))))
    trainer.model.train()
    return trainer, processor


def _step_loss_and_grads(trainer, batch):
    # As in training: the step's normalisers from get_batch_samples, then compute_loss + backward.
    trainer.get_batch_samples(iter([batch]), 1, torch.device("cpu"))
    return F._loss_and_grads(trainer, batch)


@pytest.mark.parametrize("family", SUPPORTED)
def test_packed_loss_and_gradients_equal_padded(family, family_dirs, tmp_path):
    torch.manual_seed(0)
    processor = F.family_processor(family_dirs(family))
    rows = _rows(processor)
    lengths = sorted(len(r["input_ids"]) for r in rows)
    trainer, processor = _trainer(family_dirs(family), tmp_path, packing_row_tokens=lengths[-1] + lengths[-2])
    padded = ScaleCollator(processor)(rows)
    packed = trainer.data_collator(rows)
    assert "attention_mask" not in packed and packed["input_ids"].shape[0] == 2  # 4 examples in 2 rows
    assert [len(s) for s in example_spans(packed["example_ids"])] == [2, 2]
    # Every method and normalisation on both loss paths for the shipped tiny Qwen2-VL (small vocabulary, cheap);
    # on the other families, which differ in their forward and not in the weighting, SCALe-sample and vanilla,
    # on the plain path too where the vocabulary is small.
    if family == "qwen2_vl":
        combos = [(m, n, impl) for m, n in (("scale", "sample"), ("scale", "batch"), ("vanilla", "sample"))
                  for impl in ("fused", "plain")]
    else:
        combos = [("scale", "sample", "fused"), ("vanilla", "sample", "fused" if family in BIG_VOCAB else "plain")]
    for method, normalization, impl in combos:
        trainer.args.method, trainer.args.normalization, trainer.args.loss_impl = method, normalization, impl
        loss_pad, grads_pad = _step_loss_and_grads(trainer, padded)
        counts_pad = trainer._step_counts
        loss_pack, grads_pack = _step_loss_and_grads(trainer, packed)
        what = f"{family} {method}/{normalization}/{impl}"
        assert trainer._step_counts == counts_pad, f"{what}: normalisers differ"
        assert counts_pad.think_examples == 4 and counts_pad.answer_examples == 4
        assert loss_pad > 0 and torch.isfinite(loss_pad)
        torch.testing.assert_close(loss_pack, loss_pad, rtol=1e-5, atol=1e-6, msg=lambda m, w=what: f"{w}: loss {m}")
        assert grads_pack.keys() == grads_pad.keys() and grads_pad
        for name in grads_pad:
            torch.testing.assert_close(grads_pack[name], grads_pad[name], rtol=1e-4, atol=1e-6,
                                       msg=lambda m, w=what, n=name: f"{w}: gradient of {n}: {m}")


def _logits(model, batch):
    # The backbone's last hidden state: what the logits are a per-token function of, without Qwen's 152k-wide head.
    inputs = {k: v for k, v in batch.items() if k not in ("labels", "segment_ids", "example_ids")}
    if "example_ids" in batch:
        inputs["position_ids"] = packed_position_ids(model, inputs, batch["example_ids"])
    with torch.no_grad():
        return model.model(**inputs, use_cache=False).last_hidden_state


@pytest.mark.parametrize("family", SUPPORTED)
def test_packed_row_never_attends_across_examples(family, family_dirs):
    """Every example's logits in one packed row equal its logits alone (no attention to the other examples,
    positions restarting), and changing the first example leaves the second one's logits unchanged."""
    path = family_dirs(family)
    processor = F.family_processor(path)
    model = F.family_model(path)
    model.train()
    rows = _rows(processor, (1, 3, 2))
    pack = ScaleCollator(processor, padding_free=True, packing_row_tokens=10_000)
    packed = pack(rows)
    assert packed["input_ids"].shape[0] == 1
    got = _logits(model, packed)
    (spans,) = example_spans(packed["example_ids"])
    assert len(spans) == 3
    alone = _logits(model, ScaleCollator(processor)(rows))  # padded: each example in its own row
    for b, ((start, end), row) in enumerate(zip(spans, rows)):
        assert end - start == len(row["input_ids"])
        torch.testing.assert_close(got[0, start:end], alone[b, :end - start], rtol=1e-4, atol=1e-5,
                                   msg=lambda m, s=start: f"{family}: the example at {s} differs from alone: {m}")
    # A different first example (other image, other response): the second one's logits do not move.
    other = _rows(processor, (4, 3, 2))[:1]
    other[0]["images"] = [F.make_image(3)]
    other = ScaleCollator(processor, padding_free=True, packing_row_tokens=10_000)(other + rows[1:])
    (other_spans,) = example_spans(other["example_ids"])
    changed = _logits(model, other)
    (s0, e0), (s1, e1) = spans[1], other_spans[1]
    assert e0 - s0 == e1 - s1 and s0 != s1
    torch.testing.assert_close(changed[0, s1:e1], got[0, s0:e0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("family", QWEN)
def test_qwen_mrope_positions_restart_per_example(family, family_dirs):
    """The packed [4, R, L] positions: row 0 is 0..n-1 per example, rows 1-3 are exactly the model's own
    get_rope_index of each example alone (3-D positions on the image tokens)."""
    path = family_dirs(family)
    processor = F.family_processor(path)
    model = F.family_model(path)
    rows = _rows(processor, (1, 3, 2))
    packed = ScaleCollator(processor, padding_free=True, packing_row_tokens=10_000)(rows)
    inputs = {k: v for k, v in packed.items() if k not in ("labels", "segment_ids", "example_ids")}
    pos = packed_position_ids(model, inputs, packed["example_ids"])
    assert pos.shape == (4, 1, packed["input_ids"].shape[1])
    (spans,) = example_spans(packed["example_ids"])
    for (start, end), row in zip(spans, rows):
        alone = ScaleCollator(processor)([row])
        want, _ = model.model.get_rope_index(alone["input_ids"], mm_token_type_ids=alone["mm_token_type_ids"],
                                             image_grid_thw=alone["image_grid_thw"])  # [3, 1, n]
        assert torch.equal(pos[0, 0, start:end], torch.arange(end - start))
        assert torch.equal(pos[1:, 0, start:end], want[:, 0])
        image = alone["mm_token_type_ids"][0] == 1
        assert image.any() and not torch.equal(want[1, 0, image], want[2, 0, image])  # really 3-D on the image
    # the row's padding-free tail: nothing after the last example here
    assert spans[-1][1] == packed["input_ids"].shape[1]


@pytest.mark.parametrize("family", list(REFUSED))
def test_unsupported_family_is_refused_at_start_up(family, family_dirs, tmp_path):
    with pytest.raises(ValueError, match=f"padding_free=True is not supported for {REFUSED[family]}"):
        _trainer(family_dirs(family), tmp_path)
    assert REFUSED[family] in PACKING_REFUSED


def test_gemma3_packed_forward_is_not_exact(family_dirs):
    """Why Gemma-3 is refused (transformers 5.24, 5.25): a later example's logits in a packed row differ from its logits
    alone. If this starts to pass, transformers fixed the sliding-window image mask and Gemma-3 can be enabled."""
    path = family_dirs("gemma3")
    processor = F.family_processor(path)
    model = F.family_model(path)
    rows = _rows(processor, (1, 3))
    packed = ScaleCollator(processor, padding_free=True, packing_row_tokens=10_000)(rows)
    (spans,) = example_spans(packed["example_ids"])
    got = _logits(model, packed)
    start, end = spans[1]
    alone = _logits(model, ScaleCollator(processor)([rows[1]]))
    assert (got[0, start:end] - alone[0]).abs().max() > 1e-2


def test_training_packed_equals_padded(family_dirs, tmp_path):
    """Two optimizer steps of 2 x 2 examples (gradient accumulation) through Trainer.train, default row capacity:
    the same losses and weights padded and packed (Adam makes tiny gradients full steps, hence atol 1e-4)."""
    from datasets import Dataset

    from scale_vlm.sft_trainer import ScaleSFTTrainer

    path = family_dirs("qwen2_vl")
    processor = F.family_processor(path)
    data = Dataset.from_list(_rows(processor, (7, 1, 1, 8, 2, 1, 1, 2)))
    runs = {}
    for padding_free in (False, True):
        torch.manual_seed(0)
        args = F._sft_args(tmp_path / str(padding_free), padding_free=padding_free, max_steps=2,
                           per_device_train_batch_size=2, gradient_accumulation_steps=2, learning_rate=1e-2)
        trainer = ScaleSFTTrainer(model=F.family_model(path), args=args, processing_class=processor,
                                  train_dataset=data)
        trainer.train()
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        runs[padding_free] = losses, {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    assert len(runs[False][0]) == 2
    assert runs[True][0] == pytest.approx(runs[False][0], rel=1e-5)
    for name, weight in runs[False][1].items():
        torch.testing.assert_close(runs[True][1][name], weight, rtol=1e-3, atol=1e-4)


# -- the pieces ---------------------------------------------------------------------------------------------------

def test_first_fit_decreasing():
    assert first_fit_decreasing([5, 2, 9, 3, 4], 9) == [[2], [0, 4], [1, 3]]
    assert first_fit_decreasing([5, 2, 9, 3, 4], 100) == [[0, 1, 2, 3, 4]]
    assert first_fit_decreasing([12, 3], 10) == [[0], [1]]  # longer than the capacity: a row of its own


def _row(n_prompt, n_think, n_answer):
    segs = [SEGMENT_PROMPT] * n_prompt + [SEGMENT_THINK] * n_think + [SEGMENT_ANSWER] * n_answer
    ids = list(range(10, 10 + len(segs)))
    return {"input_ids": ids, "labels": [t if s else -100 for t, s in zip(ids, segs)], "segment_ids": segs}


def test_pack_rows_positions_example_ids_and_boundaries():
    rows = [_row(2, 3, 1), _row(1, 1, 1), _row(2, 5, 2)]
    keys = ["input_ids", "labels", "segment_ids"]
    batch, order = pack_rows(rows, keys, {"input_ids": 0, "labels": -100, "segment_ids": 0})
    assert order == [2, 0, 1]  # rows: [9 tokens], [6 + 3 tokens]
    assert batch["position_ids"].tolist() == [list(range(9)), list(range(6)) + list(range(3))]
    assert batch["example_ids"].tolist() == [[0] * 9, [1] * 6 + [2] * 3]
    # the label a boundary token "predicts" is the next example's first token: a prompt token, never supervised
    labels = batch["labels"][:, 1:]
    assert labels[1, 5] == -100 and batch["segment_ids"][1, 6] == SEGMENT_PROMPT
    batch, order = pack_rows(rows[:2], keys, {"input_ids": 0, "labels": -100, "segment_ids": 0}, capacity=20)
    # one row of 9 tokens, no padding
    assert order == [0, 1] and batch["input_ids"].shape == (1, 9)
    assert batch["position_ids"].tolist() == [list(range(6)) + list(range(3))]
    assert batch["example_ids"].tolist() == [[0] * 6 + [1] * 3]
    # with padding to 12 the tail restarts at 0 and belongs to no example
    batch, _ = pack_rows(rows[:2], keys, {"input_ids": 0, "labels": -100, "segment_ids": 0}, capacity=20,
                         pad_to_multiple_of=12)
    assert batch["position_ids"].tolist() == [list(range(6)) + list(range(3)) + list(range(3))]
    assert batch["example_ids"][0, -3:].tolist() == [-1, -1, -1]
    assert batch["labels"][0, -3:].tolist() == [-100] * 3
    bad = _row(0, 2, 1)
    with pytest.raises(ValueError, match="starts with a supervised token"):
        pack_rows([rows[0], bad], keys, {"input_ids": 0, "labels": -100, "segment_ids": 0}, capacity=20)


def test_loss_functions_per_example_in_packed_rows():
    """The pure loss functions on a packed layout equal them on the padded one (random NLL)."""
    rows = [_row(2, 3, 1), _row(1, 1, 1), _row(2, 5, 2), _row(1, 0, 2)]
    keys = ["input_ids", "labels", "segment_ids"]
    pads = {"input_ids": 0, "labels": -100, "segment_ids": 0}
    packed, order = pack_rows(rows, keys, pads)
    length = max(len(r["input_ids"]) for r in rows)
    padded_seg = torch.tensor([r["segment_ids"] + [0] * (length - len(r["segment_ids"])) for r in rows])
    g = torch.Generator().manual_seed(0)
    padded_nll = torch.rand(padded_seg.shape, generator=g, dtype=torch.float64) * (padded_seg > 0)
    packed_nll = torch.zeros(packed["segment_ids"].shape, dtype=torch.float64)
    for r, spans in enumerate(example_spans(packed["example_ids"])):
        for start, end in spans:
            b = order[int(packed["example_ids"][r, start])]
            packed_nll[r, start:end] = padded_nll[b, :end - start]
    seg, ex = packed["segment_ids"], packed["example_ids"]
    assert count_vector(seg, ex).tolist() == count_vector(padded_seg).tolist() == [9, 6, 3, 4, 15]
    # counting rows instead of examples would give 2 examples with think tokens
    assert count_vector(seg).tolist()[2] == 2
    for normalization in ("sample", "batch"):
        want = scale_loss(padded_nll, padded_seg, 0.7, 1.3, normalization).loss
        got = scale_loss(packed_nll, seg, 0.7, 1.3, normalization, example_ids=ex).loss
        torch.testing.assert_close(got, want)
        weights = segment_token_weights(seg, "scale", 0.7, 1.3, normalization, example_ids=ex)
        torch.testing.assert_close((weights * packed_nll).sum(), want.float().double(), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(vanilla_loss(packed_nll, seg, example_ids=ex).loss, vanilla_loss(padded_nll, padded_seg).loss)
    counts = SegmentCounts.from_batch(seg, ex)
    assert (counts.think_examples, counts.answer_examples) == (3, 4)
