"""The SCALe loss against F.cross_entropy identities, length independence and accumulation exactness."""

import pytest
import torch
import torch.nn.functional as F

from scale_vlm.loss import SegmentCounts, count_vector, per_token_nll, scale_loss, vanilla_loss
from scale_vlm.segments import SEGMENT_ANSWER as A
from scale_vlm.segments import SEGMENT_PROMPT as P
from scale_vlm.segments import SEGMENT_THINK as T

V = 11


def _batch(segments: list[list[int]], seed: int = 0):
    """Random logits/labels for the given next-token segment layout; labels -100 on prompt positions."""
    g = torch.Generator().manual_seed(seed)
    B, L = len(segments), max(len(s) for s in segments)
    seg = torch.tensor([s + [P] * (L - len(s)) for s in segments])  # [B, L] aligned with next-token labels
    logits = torch.randn(B, L + 1, V, generator=g, requires_grad=True)
    labels = torch.randint(0, V, (B, L + 1), generator=g)
    labels[:, 1:][seg == P] = -100
    labels[:, 0] = -100
    return logits, labels, seg


def _ce_mean(logits, labels, mask):
    # reference: plain F.cross_entropy mean over the selected next-token positions
    lg, lb = logits[:, :-1][mask], labels[:, 1:][mask]
    return F.cross_entropy(lg, lb)


def test_per_token_nll_matches_cross_entropy():
    logits, labels, seg = _batch([[P, T, T, A], [T, A, A]])
    nll = per_token_nll(logits, labels)
    ref = F.cross_entropy(logits[:, :-1].reshape(-1, V), labels[:, 1:].reshape(-1), ignore_index=-100, reduction="none")
    torch.testing.assert_close(nll, ref.view(nll.shape))
    assert (nll[seg == P] == 0).all()


@pytest.mark.parametrize("normalization", ["sample", "batch"])
def test_zero_think_weight_gives_plain_answer_mean(normalization):
    logits, labels, seg = _batch([[P, T, T, T, A, A]])
    nll = per_token_nll(logits, labels)
    out = scale_loss(nll, seg, w_think=0.0, w_answer=1.0, normalization=normalization)
    torch.testing.assert_close(out.loss, _ce_mean(logits, labels, seg == A))
    out = scale_loss(nll, seg, w_think=1.0, w_answer=0.0, normalization=normalization)
    torch.testing.assert_close(out.loss, _ce_mean(logits, labels, seg == T))


def test_batch_normalisation_is_segment_token_mean_over_the_batch():
    logits, labels, seg = _batch([[P, T, T, T, A], [T, A, A, P, P]])
    nll = per_token_nll(logits, labels)
    out = scale_loss(nll, seg, 0.3, 0.7, "batch")
    expected = 0.3 * _ce_mean(logits, labels, seg == T) + 0.7 * _ce_mean(logits, labels, seg == A)
    torch.testing.assert_close(out.loss, expected)


def test_sample_normalisation_averages_per_example_means():
    logits, labels, seg = _batch([[P, T, T, T, A], [T, A, A, P, P]])
    nll = per_token_nll(logits, labels)
    out = scale_loss(nll, seg, 0.3, 0.7, "sample")
    per_example = [
        0.3 * _ce_mean(logits[i : i + 1], labels[i : i + 1], seg[i : i + 1] == T)
        + 0.7 * _ce_mean(logits[i : i + 1], labels[i : i + 1], seg[i : i + 1] == A)
        for i in range(2)
    ]
    torch.testing.assert_close(out.loss, torch.stack(per_example).mean())


@pytest.mark.parametrize("normalization", ["sample", "batch"])
def test_equal_lengths_equal_weights_give_vanilla(normalization):
    logits, labels, seg = _batch([[P, T, T, T, A, A, A]])
    nll = per_token_nll(logits, labels)
    vanilla = _ce_mean(logits, labels, seg != P)
    torch.testing.assert_close(vanilla_loss(nll, seg).loss, vanilla)
    torch.testing.assert_close(scale_loss(nll, seg, 0.5, 0.5, normalization).loss, vanilla)


def test_length_independence_repeating_the_think_keeps_l_think():
    nll_think = torch.tensor([1.0, 2.0, 4.0])
    nll_answer = torch.tensor([3.0])
    short = torch.cat([nll_think, nll_answer])[None]
    long = torch.cat([nll_think.repeat(5), nll_answer])[None]
    seg_short = torch.tensor([[T, T, T, A]])
    seg_long = torch.tensor([[T] * 15 + [A]])
    for norm in ("sample", "batch"):
        loss_short = scale_loss(short, seg_short, 1.0, 0.0, norm).loss
        loss_long = scale_loss(long, seg_long, 1.0, 0.0, norm).loss
        torch.testing.assert_close(loss_short, loss_long)
        # and the answer term is untouched by the think length
        torch.testing.assert_close(scale_loss(short, seg_short, 0.0, 1.0, norm).loss, scale_loss(long, seg_long, 0.0, 1.0, norm).loss)
    # vanilla, by contrast, dilutes the answer as the think grows: (7+3)/4 vs (35+3)/16
    assert vanilla_loss(short, seg_short).loss.item() == pytest.approx(2.5)
    assert vanilla_loss(long, seg_long).loss.item() == pytest.approx(38 / 16)


def test_missing_segment_gives_finite_zero_not_nan():
    nll = torch.tensor([[1.0, 2.0, 0.0]])
    seg = torch.tensor([[T, T, P]])  # no answer token anywhere
    for norm in ("sample", "batch"):
        out = scale_loss(nll, seg, 0.5, 0.5, norm)
        assert torch.isfinite(out.loss) and out.loss.item() == pytest.approx(0.5 * 1.5)
    empty = scale_loss(torch.zeros(1, 3), torch.full((1, 3), P), 0.5, 0.5, "sample")
    assert empty.loss.item() == 0.0


@pytest.mark.parametrize("normalization", ["sample", "batch", "vanilla"])
def test_micro_batches_with_global_counts_sum_to_the_full_batch(normalization):
    segments = [[P, T, T, T, A], [T, A, A], [P, P, T, A], [T, T, T, T, T, T, A, A]]
    logits, labels, seg = _batch(segments, seed=3)

    def loss_of(lg, lb, sg, counts=None):
        nll = per_token_nll(lg, lb)
        if normalization == "vanilla":
            return vanilla_loss(nll, sg, counts).loss
        return scale_loss(nll, sg, 0.35, 0.65, normalization, counts).loss

    full = loss_of(logits, labels, seg)
    (g_full,) = torch.autograd.grad(full, logits)
    counts = SegmentCounts.from_vector(count_vector(seg[:2]) + count_vector(seg[2:]))
    parts = [loss_of(logits[i : i + 2], labels[i : i + 2], seg[i : i + 2], counts) for i in (0, 2)]
    (g_parts,) = torch.autograd.grad(parts[0] + parts[1], logits)
    torch.testing.assert_close(parts[0] + parts[1], full)
    torch.testing.assert_close(g_parts, g_full)
    if normalization != "sample":
        # a per-micro-batch token mean (what naive accumulation does) is NOT the same loss
        naive = (loss_of(logits[:2], labels[:2], seg[:2]) + loss_of(logits[2:], labels[2:], seg[2:])) / 2
        assert abs(naive.item() - full.item()) > 1e-4


def test_bad_normalization_is_rejected():
    with pytest.raises(ValueError, match="normalization"):
        scale_loss(torch.zeros(1, 2), torch.tensor([[T, A]]), 0.5, 0.5, "token")


def test_sample_normalisation_counts_only_examples_that_have_the_segment():
    # example 1 has no answer, example 2 no think: each segment's mean is over the examples that have it
    logits, labels, seg = _batch([[P, T, T, T, A, A], [T, T, P, P, P, P], [P, A, A, A, P, P]], seed=5)
    nll = per_token_nll(logits, labels)
    out = scale_loss(nll, seg, 0.4, 0.6, "sample")
    think = (_ce_mean(logits[0:1], labels[0:1], seg[0:1] == T) + _ce_mean(logits[1:2], labels[1:2], seg[1:2] == T)) / 2
    answer = (_ce_mean(logits[0:1], labels[0:1], seg[0:1] == A) + _ce_mean(logits[2:3], labels[2:3], seg[2:3] == A)) / 2
    torch.testing.assert_close(out.loss, 0.4 * think + 0.6 * answer)
    counts = SegmentCounts.from_batch(seg)
    assert (counts.think_examples, counts.answer_examples) == (2, 2)
    assert (counts.think_tokens, counts.answer_tokens, counts.tokens) == (5, 5, 10)
