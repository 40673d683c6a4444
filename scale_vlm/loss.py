"""The SCALe segment loss as pure functions.

Notation: B rows, T next-token positions. ``nll[b, t]`` is the negative log-likelihood of the label at position
``t`` (0 where the label is ignored) and ``segment_ids[b, t]`` the segment of that label (``SEGMENT_*``). A row is
one example unless ``example_ids[b, t]`` (the index of the label's example, -1 on padding) says otherwise: a packed
row (``scale_vlm.packing``) holds several examples, and every per-example quantity follows ``example_ids``.

SCALe:   L = w_think * L_think + w_answer * L_answer, each segment term a mean over its own tokens, so the length
         of the think span no longer decides how much the answer is trained.
Vanilla: L = sum(nll) / N, the ordinary token mean over every supervised token.

Both are linear in the per-token NLL once the step's normalisers are known: ``segment_token_weights`` is the one
definition of their per-token coefficients, used by the plain path (``segment_loss``) and by the fused head
(``scale_vlm.fused_loss``) alike.

Gradient accumulation and data parallelism are exact because every normaliser is a *global* count for the
optimizer step (over all micro-batches and all ranks), passed in as ``SegmentCounts``; each micro-batch contributes
its partial sums divided by those counts, and the partial losses add up to the loss of the whole batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .segments import SEGMENT_ANSWER, SEGMENT_THINK

NORMALIZATIONS = ("sample", "batch")


@dataclass
class SegmentCounts:
    """Normalisers of one optimizer step (global over micro-batches and ranks).

    ``think_tokens``/``answer_tokens``: supervised tokens per segment (``batch`` normalisation).
    ``think_examples``/``answer_examples``: examples with at least one token of that segment (``sample``).
    ``tokens``: all supervised tokens (vanilla).
    """

    think_tokens: float
    answer_tokens: float
    think_examples: float
    answer_examples: float
    tokens: float

    @classmethod
    def from_batch(cls, segment_ids: torch.Tensor, example_ids: torch.Tensor | None = None) -> "SegmentCounts":
        # segment_ids, example_ids: [B, T] aligned with the next-token labels
        t = torch.as_tensor(count_vector(segment_ids, example_ids))
        return cls.from_vector(t)

    @classmethod
    def from_vector(cls, v: torch.Tensor) -> "SegmentCounts":
        v = v.tolist()
        return cls(think_tokens=v[0], answer_tokens=v[1], think_examples=v[2], answer_examples=v[3], tokens=v[4])


def per_example_sum(values: torch.Tensor, example_ids: torch.Tensor | None) -> torch.Tensor:
    """Sum of ``values`` [B, T] per example: [B] (one example per row) when ``example_ids`` is None, else [E] with
    E = ``example_ids.max() + 1`` (positions with ``example_ids`` -1, padding, are left out). Differentiable."""
    if example_ids is None:
        return values.sum(-1)
    keep = example_ids >= 0  # [B, T]
    num = int(example_ids.max()) + 1 if keep.any() else 0
    return values.new_zeros(num).index_add(0, example_ids[keep], values[keep])


def count_vector(segment_ids: torch.Tensor, example_ids: torch.Tensor | None = None) -> torch.Tensor:
    """``[think_tokens, answer_tokens, think_examples, answer_examples, tokens]`` of a ``[B, T]`` batch (float64).

    ``example_ids`` [B, T]: the example of each position (packed rows); None: each row is one example.
    Returned as a tensor so it can be summed over micro-batches and all-reduced over ranks in one call.
    """
    think = segment_ids == SEGMENT_THINK
    answer = segment_ids == SEGMENT_ANSWER
    think_per_example = per_example_sum(think.to(torch.float64), example_ids)  # [E]
    answer_per_example = per_example_sum(answer.to(torch.float64), example_ids)  # [E]
    return torch.stack(
        [
            think.sum(),
            answer.sum(),
            (think_per_example > 0).sum(),
            (answer_per_example > 0).sum(),
            (think | answer).sum(),
        ]
    ).to(torch.float64)


def per_token_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Next-token NLL from full logits: the plain path, kept as the reference for the fused path.

    logits: [B, T+1, V], labels: [B, T+1] (-100 = ignored)  ->  nll: [B, T], 0 at ignored positions.
    """
    shift_logits = logits[:, :-1, :].float()  # [B, T, V]
    shift_labels = labels[:, 1:]  # [B, T]
    nll = F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.size(-1)), shift_labels.reshape(-1), ignore_index=-100, reduction="none"
    )
    return nll.view(shift_labels.shape)


@dataclass
class SegmentLossOutput:
    loss: torch.Tensor  # scalar, carries the gradient
    think_sum: torch.Tensor  # scalar, detached: sum of think NLL in this micro-batch
    answer_sum: torch.Tensor  # scalar, detached
    think_tokens: torch.Tensor  # scalar, detached: think tokens in this micro-batch
    answer_tokens: torch.Tensor  # scalar, detached


METHODS = ("scale", "vanilla")


def segment_token_weights(
    segment_ids: torch.Tensor,
    method: str,
    w_think: float = 1.0,
    w_answer: float = 1.0,
    normalization: str = "sample",
    counts: SegmentCounts | None = None,
    example_ids: torch.Tensor | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The one definition of both losses: coefficients ``c[b, t]`` so that a micro-batch's loss is
    ``(c * nll).sum()``. Both are linear in the per-token NLL once the step's normalisers are known, so the plain
    path (``segment_loss``) and the fused head (``scale_vlm.fused_loss``, which needs the coefficients before its
    forward) share this function.

    segment_ids, example_ids (packed rows; None: one example per row): [B, T] aligned with the next-token labels
    -> [B, T] in ``dtype``; ``counts``: the step's global normalisers (``None``: this batch is the whole step).

    scale, ``sample``: c = w_think / (n_think(example) * E_think) on think tokens, likewise on answer tokens
                       (the mean over examples of each example's segment mean);
    scale, ``batch``:  c = w_think / N_think on think tokens, w_answer / N_answer on answer tokens;
    vanilla:           c = 1 / N on every supervised token (the token mean).
    A segment with no tokens in the whole step gets no weight (never 0/0 = NaN).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    if counts is None:
        counts = SegmentCounts.from_batch(segment_ids, example_ids)
    think = (segment_ids == SEGMENT_THINK).to(dtype)  # [B, T]
    answer = (segment_ids == SEGMENT_ANSWER).to(dtype)  # [B, T]
    if method == "vanilla":
        return (think + answer) / max(counts.tokens, 1.0)
    if normalization == "batch":
        return w_think * think / max(counts.think_tokens, 1.0) + w_answer * answer / max(counts.answer_tokens, 1.0)
    # sample: each token divided by its example's segment size (an example without a segment adds 0 to it)
    think_n = segment_size_per_token(think, example_ids)  # [B, T] or [B, 1]
    answer_n = segment_size_per_token(answer, example_ids)
    return (w_think * think / (think_n * max(counts.think_examples, 1.0))
            + w_answer * answer / (answer_n * max(counts.answer_examples, 1.0)))


def segment_size_per_token(mask: torch.Tensor, example_ids: torch.Tensor | None) -> torch.Tensor:
    """mask, example_ids: [B, T] -> the number of ``mask`` tokens of each position's example, at least 1: [B, 1]
    when each row is one example (``example_ids`` None), else [B, T] (padding, example -1, gets 1; its weight is 0)."""
    if example_ids is None:
        return mask.sum(-1, keepdim=True).clamp(min=1)
    sizes = per_example_sum(mask, example_ids).clamp(min=1)  # [E]
    if sizes.numel() == 0:
        return torch.ones_like(mask)
    return sizes[example_ids.clamp(min=0)]


def segment_statistics(nll: torch.Tensor, segment_ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """The logged statistics of a micro-batch, detached scalars: the NLL sums and token counts of each segment.

    nll, segment_ids: [B, T]."""
    nll = nll.detach()
    think = (segment_ids == SEGMENT_THINK).to(nll.dtype)
    answer = (segment_ids == SEGMENT_ANSWER).to(nll.dtype)
    return {"think_sum": (nll * think).sum(), "answer_sum": (nll * answer).sum(),
            "think_tokens": think.sum(), "answer_tokens": answer.sum()}


def segment_loss(nll: torch.Tensor, segment_ids: torch.Tensor, method: str, w_think: float = 1.0,
                 w_answer: float = 1.0, normalization: str = "sample", counts: SegmentCounts | None = None,
                 example_ids: torch.Tensor | None = None) -> SegmentLossOutput:
    """The SCALe or vanilla loss of one micro-batch from its per-token NLL: ``(segment_token_weights * nll).sum()``.

    nll: [B, T] per-token NLL (0 where ignored); segment_ids, example_ids: [B, T] (see ``segment_token_weights``).
    """
    weights = segment_token_weights(segment_ids, method, w_think, w_answer, normalization, counts, example_ids,
                                    dtype=nll.dtype)  # [B, T]
    return SegmentLossOutput(loss=(weights * nll).sum(), **segment_statistics(nll, segment_ids))


def scale_loss(nll: torch.Tensor, segment_ids: torch.Tensor, w_think: float, w_answer: float,
               normalization: str = "sample", counts: SegmentCounts | None = None,
               example_ids: torch.Tensor | None = None) -> SegmentLossOutput:
    """SCALe loss of one micro-batch (``segment_loss`` with ``method="scale"``).

    ``sample``: L = w_think * mean_b(mean_t∈think_b nll) + w_answer * mean_b(mean_t∈answer_b nll)
    ``batch``:  L = w_think * sum_think(nll) / N_think + w_answer * sum_answer(nll) / N_answer
    """
    return segment_loss(nll, segment_ids, "scale", w_think, w_answer, normalization, counts, example_ids)


def vanilla_loss(nll: torch.Tensor, segment_ids: torch.Tensor, counts: SegmentCounts | None = None,
                 example_ids: torch.Tensor | None = None) -> SegmentLossOutput:
    """Token-mean cross-entropy over every supervised token (the SFT baseline), with the same segment statistics
    (``segment_loss`` with ``method="vanilla"``)."""
    return segment_loss(nll, segment_ids, "vanilla", counts=counts, example_ids=example_ids)
