"""The lean loss path: per-token NLL and the segment-weighted loss without ``[tokens, vocab]`` logits.

Full fp32 logits of a 152k-token vocabulary cost 0.6 MB per token (about 5 GB for 8k tokens), and the plain
cross-entropy keeps two more tensors of that size for backward. Here the LM head is applied to ``chunk_size``
tokens at a time; each chunk's logits tile is reduced to what the loss needs and freed before the next one.

Two autograd functions:

* ``chunked_token_nll(hidden, weight, labels)`` -> ``nll [T]``: a general per-token NLL. Any upstream gradient
  works, so the backward recomputes each tile (one extra ``[T, H] x [H, V]`` GEMM).
* ``weighted_token_nll(hidden, weight, labels, token_weights)`` -> ``(loss, nll)``: ``loss = sum_t w_t * nll_t``
  for weights known *before* the forward, and the (detached) per-token NLL for logging. Because the loss is linear
  in the NLL with known coefficients, the gradient is computed inside the forward, tile by tile, the way Liger's
  fused linear cross-entropy does; backward only scales it by the incoming scalar. Three GEMMs in all, like the
  plain path, and no recompute.

SCALe and vanilla are both linear in the per-token NLL once the step's normalisers (``SegmentCounts``) are known:
``segment_token_weights`` returns those coefficients, so ``(weights * nll).sum()`` equals ``scale_loss(...).loss``
(or ``vanilla_loss(...).loss``). ``add_lean_lm_head`` patches a model so that
``model(**inputs, lean_token_weights=w)`` runs the backbone and ``weighted_token_nll`` (the forward goes through
the model's own ``forward``, so DDP/accelerate wrappers keep working), and ``lean_segment_loss`` is the whole
loss step used by ``ScaleSFTTrainer``'s lean path.
"""

from __future__ import annotations

import functools
import types
from dataclasses import dataclass

import torch

from .loss import SegmentCounts, SegmentLossOutput, scale_loss, vanilla_loss
from .segments import SEGMENT_ANSWER, SEGMENT_THINK

IGNORE_INDEX = -100
# Tokens per tile. At vocab 152k a fp32 tile is 0.6 MB per token: 1024 tokens -> 0.6 GB, which keeps GEMMs large
# enough to run at full speed on CPU and GPU while staying far below the plain path's [T, V] tensors.
DEFAULT_CHUNK_SIZE = 1024


def _tile(hidden_chunk: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    # [n, H] x [H, V] -> fp32 [n, V]
    tile = hidden_chunk @ weight.t()
    if bias is not None:
        tile = tile + bias
    return tile.to(_acc_dtype(tile))


def _acc_dtype(t: torch.Tensor) -> torch.dtype:
    # fp32 for fp32/bf16/fp16 inputs, fp64 for fp64 inputs (gradcheck)
    return torch.promote_types(t.dtype, torch.float32)


def _softmax_stats(tile: torch.Tensor, targets: torch.Tensor):
    """Overwrites ``tile`` with ``exp(logit - rowmax)``; returns (log-sum-exp, target logit, rowmax, sum of exp)."""
    row_max = tile.amax(dim=-1)  # [n]
    target_logit = tile.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # [n]
    tile.sub_(row_max.unsqueeze(-1)).exp_()
    sum_exp = tile.sum(dim=-1)  # [n]
    return row_max + sum_exp.log(), target_logit, row_max, sum_exp


def _grad_gemms(grad_tile, hidden_chunk, weight, grad_hidden, grad_weight, grad_bias, start, end):
    # grad_tile: [n, V] gradient of the loss w.r.t. the chunk's logits
    g = grad_tile.to(weight.dtype)
    if grad_hidden is not None:
        grad_hidden[start:end] = (g @ weight).to(grad_hidden.dtype)
    if grad_weight is not None:
        grad_weight.addmm_(g.t().to(grad_weight.dtype), hidden_chunk.to(grad_weight.dtype))
    if grad_bias is not None:
        grad_bias += grad_tile.sum(0)


class _ChunkedTokenNLL(torch.autograd.Function):
    """Per-token NLL of ``hidden @ weight.T (+ bias)``; backward recomputes each tile."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, chunk_size):
        n_tokens = hidden.shape[0]
        valid = labels != IGNORE_INDEX
        targets = labels.clamp(min=0)
        nll = torch.zeros(n_tokens, device=hidden.device, dtype=_acc_dtype(hidden))
        lse = torch.zeros(n_tokens, device=hidden.device, dtype=_acc_dtype(hidden))
        with torch.no_grad():
            for start in range(0, n_tokens, chunk_size):
                end = min(start + chunk_size, n_tokens)
                tile = _tile(hidden[start:end], weight, bias)
                lse[start:end], target_logit, _, _ = _softmax_stats(tile, targets[start:end])
                del tile
                nll[start:end] = lse[start:end] - target_logit
        nll = nll.masked_fill(~valid, 0.0)
        ctx.save_for_backward(hidden, weight, bias, targets, valid, lse)
        ctx.chunk_size = chunk_size
        return nll

    @staticmethod
    def backward(ctx, grad_nll):
        hidden, weight, bias, targets, valid, lse = ctx.saved_tensors
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        grad_hidden = torch.zeros_like(hidden) if need_h else None
        grad_weight = torch.zeros(weight.shape, device=weight.device, dtype=_acc_dtype(weight)) if need_w else None
        grad_bias = torch.zeros(bias.shape, device=bias.device, dtype=_acc_dtype(bias)) if need_b else None
        g_all = grad_nll.to(lse.dtype) * valid
        n_tokens = hidden.shape[0]
        with torch.no_grad():
            for start in range(0, n_tokens, ctx.chunk_size):
                end = min(start + ctx.chunk_size, n_tokens)
                g = g_all[start:end]
                tile = _tile(hidden[start:end], weight, bias)
                # d nll / d logit = softmax - onehot(target), times the incoming gradient of each token
                tile.sub_(lse[start:end].unsqueeze(-1)).exp_().mul_(g.unsqueeze(-1))
                rows = torch.arange(end - start, device=tile.device)
                tile[rows, targets[start:end]] -= g
                _grad_gemms(tile, hidden[start:end], weight, grad_hidden, grad_weight, grad_bias, start, end)
                del tile
        return (
            grad_hidden,
            grad_weight.to(weight.dtype) if grad_weight is not None else None,
            grad_bias.to(bias.dtype) if grad_bias is not None else None,
            None,
            None,
        )


class _WeightedTokenNLL(torch.autograd.Function):
    """``loss = sum_t w_t * nll_t`` with the gradient computed in the forward; also returns the detached NLL."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, token_weights, chunk_size, grad_enabled):
        n_tokens = hidden.shape[0]
        valid = labels != IGNORE_INDEX
        targets = labels.clamp(min=0)
        coef = token_weights.to(_acc_dtype(hidden)) * valid
        # No gradient work under torch.no_grad() (evaluation), where needs_input_grad is still set.
        need_h, need_w, need_b = (grad_enabled and n for n in ctx.needs_input_grad[:3])
        grad_hidden = torch.empty_like(hidden) if need_h else None
        grad_weight = torch.zeros(weight.shape, device=weight.device, dtype=_acc_dtype(weight)) if need_w else None
        grad_bias = torch.zeros(bias.shape, device=bias.device, dtype=_acc_dtype(bias)) if need_b else None
        nll = torch.zeros(n_tokens, device=hidden.device, dtype=_acc_dtype(hidden))
        is_top1 = torch.zeros(n_tokens, device=hidden.device, dtype=torch.bool)
        for start in range(0, n_tokens, chunk_size):
            end = min(start + chunk_size, n_tokens)
            c = coef[start:end]
            tile = _tile(hidden[start:end], weight, bias)
            lse, target_logit, row_max, sum_exp = _softmax_stats(tile, targets[start:end])
            nll[start:end] = lse - target_logit
            is_top1[start:end] = target_logit >= row_max
            if need_h or need_w or need_b:
                # tile holds exp(z - max): scale each row to c * softmax, then subtract c at the target
                tile.mul_((c / sum_exp).unsqueeze(-1))
                rows = torch.arange(end - start, device=tile.device)
                tile[rows, targets[start:end]] -= c
                _grad_gemms(tile, hidden[start:end], weight, grad_hidden, grad_weight, grad_bias, start, end)
            del tile
        nll = nll.masked_fill(~valid, 0.0)
        loss = (coef * nll).sum()
        ctx.save_for_backward(grad_hidden, grad_weight, grad_bias)
        ctx.weight_dtype = weight.dtype
        ctx.bias_dtype = None if bias is None else bias.dtype
        ctx.mark_non_differentiable(nll, is_top1)
        return loss, nll, is_top1

    @staticmethod
    def backward(ctx, grad_loss, _grad_nll, _grad_top1):
        grad_hidden, grad_weight, grad_bias = ctx.saved_tensors
        g = grad_loss
        out_h = grad_hidden * g.to(grad_hidden.dtype) if grad_hidden is not None else None
        out_w = (grad_weight * g).to(ctx.weight_dtype) if grad_weight is not None else None
        out_b = (grad_bias * g).to(ctx.bias_dtype) if grad_bias is not None else None
        return out_h, out_w, out_b, None, None, None, None


def chunked_token_nll(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-token NLL of ``hidden @ weight.T`` without materialising the ``[T, V]`` logits.

    hidden: [T, H], weight: [V, H], labels: [T] (-100 = ignored)  ->  nll: [T] fp32, 0 where ignored.
    Equals ``F.cross_entropy(hidden @ weight.T, labels, reduction="none")``, gradients for ``hidden``, ``weight``
    (and ``bias``) included; peak extra memory is one ``[chunk_size, V]`` tile.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    return _ChunkedTokenNLL.apply(hidden, weight, bias, labels, chunk_size)


def weighted_token_nll(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    token_weights: torch.Tensor,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    bias: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(loss, nll, is_top1)`` with ``loss = sum_t token_weights[t] * nll[t]``, gradient computed in the forward.

    hidden: [T, H], weight: [V, H], labels, token_weights: [T]. ``nll`` ([T], 0 where ignored) and ``is_top1``
    ([T] bool: the label is a most likely token) carry no gradient. ``token_weights`` must not depend on the NLL.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    return _WeightedTokenNLL.apply(hidden, weight, bias, labels, token_weights.detach(), chunk_size,
                                   torch.is_grad_enabled())


def segment_token_weights(
    segment_ids: torch.Tensor,
    method: str,
    w_think: float = 1.0,
    w_answer: float = 1.0,
    normalization: str = "sample",
    counts: SegmentCounts | None = None,
) -> torch.Tensor:
    """Coefficients ``c[b, t]`` with ``(c * nll).sum()`` == ``scale_loss(...)`` / ``vanilla_loss(...)`` ``.loss``.

    segment_ids: [B, T] aligned with the next-token labels; ``counts`` as for the loss (``None``: this batch).
    """
    if counts is None:
        counts = SegmentCounts.from_batch(segment_ids)
    think = (segment_ids == SEGMENT_THINK).float()
    answer = (segment_ids == SEGMENT_ANSWER).float()
    if method == "vanilla":
        return (think + answer) / max(counts.tokens, 1.0)
    if method != "scale":
        raise ValueError(f"method must be 'scale' or 'vanilla', got {method!r}")
    if normalization == "sample":
        think_n = think.sum(-1, keepdim=True).clamp(min=1)  # [B, 1]
        answer_n = answer.sum(-1, keepdim=True).clamp(min=1)
        return (w_think * think / (think_n * max(counts.think_examples, 1.0))
                + w_answer * answer / (answer_n * max(counts.answer_examples, 1.0)))
    if normalization == "batch":
        return w_think * think / max(counts.think_tokens, 1.0) + w_answer * answer / max(counts.answer_tokens, 1.0)
    raise ValueError(f"normalization must be 'sample' or 'batch', got {normalization!r}")


@dataclass
class LeanLMOutput:
    loss: torch.Tensor  # scalar: sum of token_weights * nll, carries the gradient
    nll: torch.Tensor  # [B, T-1] detached, 0 where the label is ignored
    is_top1: torch.Tensor  # [B, T-1] bool
    label_mask: torch.Tensor  # [B, T-1] bool


def add_lean_lm_head(model, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
    """Patch ``model`` so that ``model(..., labels=labels, lean_token_weights=w)`` returns a ``LeanLMOutput``.

    ``w`` is ``[B, T-1]``, aligned with ``labels[:, 1:]``. Only positions with a label are projected. Without
    ``lean_token_weights`` the call goes to the previous ``forward`` unchanged (generation, TRL's fused head, ...).
    Idempotent. Like TRL's ``add_fused_lm_head``, add it before wrapping the model with PEFT.
    """
    if getattr(model, "_lean_lm_head", False):
        return
    previous_forward = model.forward

    @functools.wraps(type(model).forward)
    def _lean_forward(self, *args, lean_token_weights=None, **kwargs):
        if lean_token_weights is None:
            return previous_forward(*args, **kwargs)
        labels = kwargs.pop("labels")
        kwargs["use_cache"] = False
        hidden = self.base_model(*args, **kwargs).last_hidden_state[:, :-1]  # [B, T-1, H]
        lm_head = self.get_output_embeddings()
        labels = labels[:, 1:].to(lm_head.weight.device)
        mask = labels != IGNORE_INDEX
        hidden = hidden.to(lm_head.weight.device)
        loss, nll, top1 = weighted_token_nll(
            hidden[mask], lm_head.weight, labels[mask], lean_token_weights.to(labels.device)[mask],
            chunk_size=chunk_size, bias=lm_head.bias,
        )
        if not mask.any():
            loss = loss + hidden.sum() * 0.0  # keep an all-ignored micro-batch connected to the graph
        full_nll = nll.new_zeros(mask.shape).masked_scatter(mask, nll)
        full_top1 = top1.new_zeros(mask.shape).masked_scatter(mask, top1)
        return LeanLMOutput(loss=loss, nll=full_nll, is_top1=full_top1, label_mask=mask)

    model.forward = types.MethodType(_lean_forward, model)
    model._lean_lm_head = True


def lean_segment_loss(
    model,
    inputs: dict,
    segment_ids: torch.Tensor,
    method: str,
    w_think: float,
    w_answer: float,
    normalization: str = "sample",
    counts: SegmentCounts | None = None,
) -> tuple[SegmentLossOutput, LeanLMOutput]:
    """One micro-batch of the SCALe / vanilla loss through the lean head (``add_lean_lm_head`` must have run).

    ``inputs``: the collator's batch without ``segment_ids`` (``labels`` included); ``segment_ids``: [B, T-1].
    Returns the same ``SegmentLossOutput`` as ``scale_loss`` / ``vanilla_loss`` (its ``loss`` from the lean head,
    its statistics from the detached NLL) and the model output.
    """
    if counts is None:
        counts = SegmentCounts.from_batch(segment_ids)
    weights = segment_token_weights(segment_ids, method, w_think, w_answer, normalization, counts)
    outputs = model(**inputs, lean_token_weights=weights)
    if method == "scale":
        stats = scale_loss(outputs.nll, segment_ids, w_think, w_answer, normalization, counts)
    else:
        stats = vanilla_loss(outputs.nll, segment_ids, counts)
    stats.loss = outputs.loss
    return stats, outputs
