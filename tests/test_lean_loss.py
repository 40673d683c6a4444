"""The lean loss path equals the plain path: loss and gradients, standalone and through the trainer."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from scale_vlm.lean_loss import (
    add_lean_lm_head,
    chunked_token_nll,
    lean_segment_loss,
    segment_token_weights,
    weighted_token_nll,
)
from scale_vlm.loss import SegmentCounts, per_token_nll, scale_loss, vanilla_loss
from scale_vlm.sft_config import ScaleSFTConfig
from scale_vlm.sft_trainer import ScaleSFTTrainer


def _inputs(T=37, H=16, V=50, dtype=torch.float64, seed=0, bias=False):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(T, H, generator=g, dtype=dtype).requires_grad_()
    weight = torch.randn(V, H, generator=g, dtype=dtype).requires_grad_()
    b = torch.randn(V, generator=g, dtype=dtype).requires_grad_() if bias else None
    labels = torch.randint(0, V, (T,), generator=g)
    labels[::5] = -100  # ignored positions, incl. the first one
    upstream = torch.randn(T, generator=g, dtype=dtype)
    return hidden, weight, b, labels, upstream


def _reference(hidden, weight, bias, labels):
    logits = hidden @ weight.t() + (0 if bias is None else bias)
    return F.cross_entropy(logits, labels, ignore_index=-100, reduction="none")


@pytest.mark.parametrize("chunk_size", [1, 8, 37, 1000])  # 8 does not divide T = 37
@pytest.mark.parametrize("bias", [False, True])
def test_chunked_token_nll_matches_cross_entropy(chunk_size, bias):
    hidden, weight, b, labels, upstream = _inputs(bias=bias)
    params = [hidden, weight] + ([b] if bias else [])
    ref = _reference(hidden, weight, b, labels)
    ref_grads = torch.autograd.grad((ref * upstream).sum(), params)
    nll = chunked_token_nll(hidden, weight, labels, chunk_size=chunk_size, bias=b)
    grads = torch.autograd.grad((nll * upstream).sum(), params)
    assert nll.shape == (37,) and torch.all(nll[labels == -100] == 0)
    torch.testing.assert_close(nll, ref, rtol=1e-12, atol=1e-12)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_chunked_token_nll_gradcheck():
    hidden, weight, _, labels, _ = _inputs(T=11, H=4, V=9)
    assert torch.autograd.gradcheck(lambda h, w: chunked_token_nll(h, w, labels, chunk_size=4), (hidden, weight))


def test_chunked_token_nll_fp32_and_all_ignored():
    hidden, weight, _, labels, upstream = _inputs(T=64, H=32, V=300, dtype=torch.float32)
    ref = _reference(hidden, weight, None, labels)
    nll = chunked_token_nll(hidden, weight, labels, chunk_size=10)
    torch.testing.assert_close(nll, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.autograd.grad((nll * upstream).sum(), weight)[0],
                               torch.autograd.grad((ref * upstream).sum(), weight)[0], rtol=1e-4, atol=1e-5)
    none = torch.full_like(labels, -100)
    out = chunked_token_nll(hidden, weight, none, chunk_size=10)
    gh, gw = torch.autograd.grad(out.sum(), (hidden, weight))
    assert torch.all(out == 0) and torch.all(gh == 0) and torch.all(gw == 0)


@pytest.mark.parametrize("chunk_size", [3, 1024])
@pytest.mark.parametrize("bias", [False, True])
def test_weighted_token_nll_matches_cross_entropy(chunk_size, bias):
    hidden, weight, b, labels, coef = _inputs(bias=bias)
    params = [hidden, weight] + ([b] if bias else [])
    ref = _reference(hidden, weight, b, labels)
    ref_loss = (ref * coef).sum()
    ref_grads = torch.autograd.grad(3.0 * ref_loss, params)  # an upstream scalar other than 1
    loss, nll, is_top1 = weighted_token_nll(hidden, weight, labels, coef, chunk_size=chunk_size, bias=b)
    grads = torch.autograd.grad(3.0 * loss, params)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(nll, ref.detach(), rtol=1e-12, atol=1e-12)
    assert not nll.requires_grad
    logits = (hidden @ weight.t() + (0 if b is None else b)).detach()
    valid = labels != -100
    assert torch.equal(is_top1[valid], logits.argmax(-1)[valid] == labels[valid])
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def _segments(seed=0, B=4, T=30):
    g = torch.Generator().manual_seed(seed)
    seg = torch.randint(0, 3, (B, T), generator=g)
    seg[1, :] = torch.where(seg[1] == 2, 1, seg[1])  # an example without answer tokens
    nll = torch.rand(B, T, generator=g, dtype=torch.float64) * (seg > 0)
    return seg, nll


@pytest.mark.parametrize("method,normalization", [("scale", "sample"), ("scale", "batch"), ("vanilla", "sample")])
@pytest.mark.parametrize("global_counts", [False, True])
def test_segment_token_weights_reproduce_the_segment_loss(method, normalization, global_counts):
    seg, nll = _segments()
    counts = SegmentCounts(think_tokens=200, answer_tokens=90, think_examples=9, answer_examples=7, tokens=290) \
        if global_counts else None
    coef = segment_token_weights(seg, method, 0.7, 0.3, normalization, counts)
    if method == "scale":
        want = scale_loss(nll, seg, 0.7, 0.3, normalization, counts).loss
    else:
        want = vanilla_loss(nll, seg, counts).loss
    torch.testing.assert_close((coef.double() * nll).sum(), want, rtol=1e-6, atol=1e-9)


# -- through the trainer ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trainer_and_batch(tiny_qwen_dir, messages_dataset, tmp_path_factory):
    from scale_vlm.tiny.model import load_tiny

    torch.manual_seed(0)
    model, processor = load_tiny(tiny_qwen_dir)
    args = ScaleSFTConfig(output_dir=str(tmp_path_factory.mktemp("lean") / "out"), max_steps=1,
                          per_device_train_batch_size=4, save_strategy="no", use_cpu=True, seed=0,
                          max_length=256, dataloader_num_workers=0)
    trainer = ScaleSFTTrainer(model=model, args=args, train_dataset=messages_dataset, processing_class=processor)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in (0, 1)])
    trainer.model.train()
    return trainer, batch


def _loss_and_grads(trainer, batch, fn):
    model = trainer.model
    model.zero_grad(set_to_none=True)
    loss = fn(model, dict(batch))
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return loss.detach(), grads


_PLAIN: dict[tuple[str, str], tuple] = {}


def _plain(trainer, batch, method, normalization):
    # The trainer's plain path (full logits), computed once per (method, normalization) for both tests below.
    if (method, normalization) not in _PLAIN:
        trainer.args.method, trainer.args.normalization, trainer.args.loss_impl = method, normalization, "plain"
        _PLAIN[method, normalization] = _loss_and_grads(trainer, batch, lambda m, b: trainer.compute_loss(m, b))
        trainer.args.loss_impl = "fused"
    return _PLAIN[method, normalization]


def _assert_same(a, b):
    (loss_a, grads_a), (loss_b, grads_b) = a, b
    torch.testing.assert_close(loss_a, loss_b, rtol=1e-5, atol=1e-5)
    assert grads_a.keys() == grads_b.keys() and grads_a
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("method,normalization", [("scale", "sample"), ("scale", "batch"),
                                                  ("vanilla", "sample"), ("vanilla", "batch")])
def test_trainer_fused_and_plain_give_the_same_loss_and_gradients(trainer_and_batch, method, normalization):
    trainer, batch = trainer_and_batch
    plain = _plain(trainer, batch, method, normalization)
    trainer.args.method, trainer.args.normalization, trainer.args.loss_impl = method, normalization, "fused"
    fused = _loss_and_grads(trainer, batch, lambda m, b: trainer.compute_loss(m, b))
    assert plain[0] > 0
    _assert_same(fused, plain)


@pytest.mark.parametrize("method,normalization", [("scale", "sample"), ("scale", "batch"),
                                                  ("vanilla", "sample"), ("vanilla", "batch")])
def test_lean_segment_loss_matches_the_trainer_plain_path(trainer_and_batch, method, normalization):
    trainer, batch = trainer_and_batch
    plain = _plain(trainer, batch, method, normalization)
    add_lean_lm_head(trainer.model)
    w_think, w_answer = trainer.args.weight_schedule(0.0)

    def lean(model, b):
        seg = b.pop("segment_ids")[:, 1:]
        out, outputs = lean_segment_loss(model, b, seg, method, w_think, w_answer, normalization)
        # the detached NLL is the plain path's NLL too
        with torch.no_grad():
            ref = per_token_nll(model(**{k: v for k, v in b.items() if k != "labels"}, use_cache=False).logits,
                                b["labels"])
        torch.testing.assert_close(outputs.nll, ref.detach(), rtol=1e-5, atol=1e-5)
        assert outputs.label_mask.sum() == (b["labels"][:, 1:] != -100).sum()
        return out.loss

    _assert_same(_loss_and_grads(trainer, batch, lean), plain)


def test_weighted_token_nll_under_no_grad_skips_the_gradient():
    hidden, weight, _, labels, coef = _inputs()
    with torch.no_grad():
        loss, nll, _ = weighted_token_nll(hidden, weight, labels, coef, chunk_size=8)
    assert not loss.requires_grad
    torch.testing.assert_close(nll, _reference(hidden, weight, None, labels).detach())
