"""The fused loss path: per-token NLL and the segment-weighted loss without ``[tokens, vocab]`` logits.

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

Both take the head's post-processing of its logits (``logit_scale``, ``softcap``; see ``scale_vlm.head_transform``).

SCALe and vanilla are both linear in the per-token NLL once the step's normalisers (``SegmentCounts``) are known:
``scale_vlm.loss.segment_token_weights`` (their one definition) gives those coefficients before the forward, so the
fused loss is ``scale_vlm.loss.segment_loss`` computed without the logits. ``add_fused_lm_head`` patches a model so that
``model(**inputs, fused_token_weights=w)`` runs the backbone and ``weighted_token_nll`` (the forward goes through
the model's own ``forward``, so DDP/accelerate wrappers keep working, and the NLL runs inside a call of the
``lm_head`` module, so ZeRO-3 and FSDP gather its weight and reduce its gradient), and ``fused_segment_loss`` is the
whole loss step used by ``ScaleSFTTrainer``'s fused path. Engines verified exact: docs/scaling.md.
"""

from __future__ import annotations

import functools
import types
import warnings
from dataclasses import dataclass

import torch
from transformers.utils import ModelOutput

from .head_transform import head_transform
from .loss import SegmentCounts, SegmentLossOutput, segment_statistics, segment_token_weights

IGNORE_INDEX = -100
# Tokens per tile. At vocab 152k a fp32 tile is 0.6 MB per token: 1024 tokens -> 0.6 GB, which keeps GEMMs large
# enough to run at full speed on CPU and GPU while staying far below the plain path's [T, V] tensors.
DEFAULT_CHUNK_SIZE = 1024


def _tile(hidden_chunk, weight, bias, scale=1.0, softcap=None):
    """fp32 logits tile ``z`` [n, V] and ``dz/dr`` (None, a float, or an [n, V] tile) for ``r = h W^T (+ b)``.

    ``z = scale * r``, then ``z = softcap * tanh(z / softcap)`` when ``softcap`` is set: what Cohere
    (``logit_scale``), Granite (``1 / logits_scaling``) and Gemma-2/3 text models (``final_logit_softcapping``)
    do after their LM head. The softcap derivative needs a second [n, V] tile, only for softcapped heads.
    """
    tile = hidden_chunk @ weight.t()  # [n, H] x [H, V] -> [n, V]
    if bias is not None:
        tile = tile + bias
    tile = tile.to(_acc_dtype(tile))
    if scale != 1.0:
        tile.mul_(scale)
    if softcap is None:
        return tile, (None if scale == 1.0 else scale)
    tile.div_(softcap).tanh_()
    deriv = (1.0 - tile * tile).mul_(scale)  # d(softcap * tanh(s r / softcap)) / dr = s (1 - tanh^2)
    return tile.mul_(softcap), deriv


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


def _grad_gemms(grad_tile, deriv, hidden_chunk, weight, grad_hidden, grad_weight, grad_bias, start, end):
    # grad_tile: [n, V] gradient of the loss w.r.t. the chunk's (transformed) logits z; deriv: dz/dr (see _tile)
    if deriv is not None:
        grad_tile.mul_(deriv)
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
    def forward(ctx, hidden, weight, bias, labels, chunk_size, scale, softcap):
        n_tokens = hidden.shape[0]
        valid = labels != IGNORE_INDEX
        targets = labels.clamp(min=0)
        nll = torch.zeros(n_tokens, device=hidden.device, dtype=_acc_dtype(hidden))
        lse = torch.zeros(n_tokens, device=hidden.device, dtype=_acc_dtype(hidden))
        with torch.no_grad():
            for start in range(0, n_tokens, chunk_size):
                end = min(start + chunk_size, n_tokens)
                tile, _ = _tile(hidden[start:end], weight, bias, scale, softcap)
                lse[start:end], target_logit, _, _ = _softmax_stats(tile, targets[start:end])
                del tile
                nll[start:end] = lse[start:end] - target_logit
        nll = nll.masked_fill(~valid, 0.0)
        ctx.save_for_backward(hidden, weight, bias, targets, valid, lse)
        ctx.chunk_size, ctx.scale, ctx.softcap = chunk_size, scale, softcap
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
                tile, deriv = _tile(hidden[start:end], weight, bias, ctx.scale, ctx.softcap)
                # d nll / d logit = softmax - onehot(target), times the incoming gradient of each token
                tile.sub_(lse[start:end].unsqueeze(-1)).exp_().mul_(g.unsqueeze(-1))
                rows = torch.arange(end - start, device=tile.device)
                tile[rows, targets[start:end]] -= g
                _grad_gemms(tile, deriv, hidden[start:end], weight, grad_hidden, grad_weight, grad_bias, start, end)
                del tile, deriv
        return (
            grad_hidden,
            grad_weight.to(weight.dtype) if grad_weight is not None else None,
            grad_bias.to(bias.dtype) if grad_bias is not None else None,
            None,
            None,
            None,
            None,
        )


class _WeightedTokenNLL(torch.autograd.Function):
    """``loss = sum_t w_t * nll_t`` with the gradient computed in the forward; also returns the detached NLL."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, token_weights, chunk_size, grad_enabled, scale, softcap):
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
            tile, deriv = _tile(hidden[start:end], weight, bias, scale, softcap)
            lse, target_logit, row_max, sum_exp = _softmax_stats(tile, targets[start:end])
            nll[start:end] = lse - target_logit
            is_top1[start:end] = target_logit >= row_max
            if need_h or need_w or need_b:
                # tile holds exp(z - max): scale each row to c * softmax, then subtract c at the target
                tile.mul_((c / sum_exp).unsqueeze(-1))
                rows = torch.arange(end - start, device=tile.device)
                tile[rows, targets[start:end]] -= c
                _grad_gemms(tile, deriv, hidden[start:end], weight, grad_hidden, grad_weight, grad_bias, start, end)
            del tile, deriv
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
        return out_h, out_w, out_b, None, None, None, None, None, None


def chunked_token_nll(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    bias: torch.Tensor | None = None,
    logit_scale: float = 1.0,
    softcap: float | None = None,
) -> torch.Tensor:
    """Per-token NLL of ``hidden @ weight.T`` without materialising the ``[T, V]`` logits.

    hidden: [T, H], weight: [V, H], labels: [T] (-100 = ignored)  ->  nll: [T] fp32, 0 where ignored.
    Equals ``F.cross_entropy(z, labels, reduction="none")`` with ``z = hidden @ weight.T (+ bias)`` times
    ``logit_scale``, then ``softcap * tanh(z / softcap)`` if ``softcap`` is set; gradients for ``hidden``,
    ``weight`` (and ``bias``) included. Peak extra memory is one ``[chunk_size, V]`` tile (two with ``softcap``).
    """
    _check_head_args(chunk_size, logit_scale, softcap)
    return _ChunkedTokenNLL.apply(hidden, weight, bias, labels, chunk_size, float(logit_scale),
                                  None if softcap is None else float(softcap))


def weighted_token_nll(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    token_weights: torch.Tensor,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    bias: torch.Tensor | None = None,
    logit_scale: float = 1.0,
    softcap: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(loss, nll, is_top1)`` with ``loss = sum_t token_weights[t] * nll[t]``, gradient computed in the forward.

    hidden: [T, H], weight: [V, H], labels, token_weights: [T]. ``nll`` ([T], 0 where ignored) and ``is_top1``
    ([T] bool: the label is a most likely token) carry no gradient. ``token_weights`` must not depend on the NLL.
    ``logit_scale`` / ``softcap``: the head's transform of its logits, as for ``chunked_token_nll``.
    """
    _check_head_args(chunk_size, logit_scale, softcap)
    return _WeightedTokenNLL.apply(hidden, weight, bias, labels, token_weights.detach(), chunk_size,
                                   torch.is_grad_enabled(), float(logit_scale),
                                   None if softcap is None else float(softcap))


def _check_head_args(chunk_size, logit_scale, softcap) -> None:
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    if softcap is not None and not softcap > 0:
        raise ValueError(f"softcap must be positive, got {softcap}")
    if not logit_scale > 0:
        raise ValueError(f"logit_scale must be positive, got {logit_scale}")


@dataclass
class FusedLMOutput(ModelOutput):
    """What the fused forward returns. A ``ModelOutput`` (not a plain dataclass), so engines that walk a module's
    outputs to attach backward hooks (DeepSpeed ZeRO-3, FSDP) find the loss tensor."""

    loss: torch.Tensor | None = None  # scalar: sum of token_weights * nll, carries the gradient
    nll: torch.Tensor | None = None  # [B, T-1] detached, 0 where the label is ignored
    is_top1: torch.Tensor | None = None  # [B, T-1] bool
    label_mask: torch.Tensor | None = None  # [B, T-1] bool


def _plain_linear(head):
    """The ``nn.Linear`` that holds the head's weight, through an FSDP1 wrapper (FSDP2's ``FSDPLinear`` and
    DeepSpeed's hooked modules are still ``nn.Linear``); ``None`` for anything whose forward is not a plain linear
    map: a PEFT LoRA layer on the head, a ``modules_to_save`` copy, a quantised linear."""
    inner = getattr(head, "_fsdp_wrapped_module", head)
    if isinstance(inner, torch.nn.Linear) and type(inner).forward is torch.nn.Linear.forward:
        return inner
    return None


def _warn_once(model, message: str) -> None:
    if not getattr(model, "_fused_fallback_warned", False):
        warnings.warn(f"fused loss head: {message}; using the model's own logits (the plain path) instead",
                      stacklevel=3)
        model._fused_fallback_warned = True


def add_fused_lm_head(model, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
    """Patch ``model`` so that ``model(..., labels=labels, fused_token_weights=w)`` returns a ``FusedLMOutput``.

    ``w`` is ``[B, T-1]``, aligned with ``labels[:, 1:]``. Only positions with a label are projected. Without
    ``fused_token_weights`` the call goes to the previous ``forward`` unchanged (generation, TRL's fused head, ...).
    Idempotent; may run before or after PEFT wraps the model (pass the base model then).

    The weighted NLL runs *inside a call of the ``lm_head`` module* (its ``forward`` is swapped for the duration of
    the call): DeepSpeed ZeRO-3 gathers the head's weight and FSDP1/FSDP2 unshard it in their pre-forward hooks,
    and their backward hooks reduce its gradient, as for the model's own ``lm_head(hidden)``. Reading
    ``lm_head.weight`` outside that call would see a ZeRO-3 placeholder or an FSDP shard. Every rank calls the
    head, also with no labelled token, because the gather is a collective.

    The head's own post-processing (``head_transform``: logit scale, softcap) is reproduced exactly. A head that is
    not a plain linear map (PEFT LoRA on ``lm_head``, ``modules_to_save``, quantised), or a post-head step the fused
    head does not know, makes the call use the model's own logits and the plain NLL instead, with one warning.
    """
    if getattr(model, "_fused_lm_head", False):
        return
    previous_forward = model.forward
    # Call a previous bound method on `self`, not on the model it was bound to: a deepcopy of the patched model
    # (a reference copy, an EMA model) must run its own weights.
    if isinstance(previous_forward, types.MethodType) and previous_forward.__self__ is model:
        previous = previous_forward.__func__
    else:
        previous = lambda self, *args, **kwargs: previous_forward(*args, **kwargs)  # noqa: E731
    transform = head_transform(model)

    @functools.wraps(type(model).forward)
    def _fused_forward(self, *args, fused_token_weights=None, **kwargs):
        if fused_token_weights is None:
            return previous(self, *args, **kwargs)
        labels = kwargs.pop("labels")
        kwargs["use_cache"] = False
        head = self.get_output_embeddings()
        linear = _plain_linear(head)
        if linear is None or transform.unsupported:
            _warn_once(self, transform.unsupported or f"the LM head is a {type(head).__name__}, not a plain Linear")
            return _plain_forward(functools.partial(previous, self), args, kwargs, labels, fused_token_weights)
        hidden = self.base_model(*args, **kwargs).last_hidden_state[:, :-1]  # [B, T-1, H]
        labels = labels[:, 1:].to(hidden.device)  # [B, T-1]
        mask = labels != IGNORE_INDEX
        weights = fused_token_weights.to(hidden.device)[mask]  # [N]
        targets = labels[mask]  # [N]

        def weighted_nll_forward(x):  # x: [N, H], the labelled positions
            # Runs while the engine's pre-forward hook has the full weight in place (a gathered ZeRO-3 parameter,
            # an unsharded FSDP view); read it from the module now, not before the call.
            return weighted_token_nll(x.to(linear.weight.dtype), linear.weight, targets.to(x.device),
                                      weights.to(x.device), chunk_size=chunk_size, bias=linear.bias,
                                      logit_scale=transform.logit_scale, softcap=transform.softcap)

        linear.forward = weighted_nll_forward
        try:
            loss, nll, top1 = head(hidden[mask])
        finally:
            del linear.forward  # back to nn.Linear.forward
        if not mask.any():
            # keep an all-ignored micro-batch connected to the graph
            loss = loss + (hidden.sum() * 0.0).to(loss.device)
        # the head may sit on another device than the backbone's output (device_map); the masks stay with `mask`
        full_nll = torch.zeros(mask.shape, dtype=nll.dtype, device=mask.device)
        full_nll = full_nll.masked_scatter(mask, nll.to(mask.device))
        full_top1 = torch.zeros_like(mask).masked_scatter(mask, top1.to(mask.device))
        return FusedLMOutput(loss=loss, nll=full_nll, is_top1=full_top1, label_mask=mask)

    model.forward = types.MethodType(_fused_forward, model)
    model._fused_lm_head = True


def _plain_forward(previous_forward, args, kwargs, labels, token_weights) -> FusedLMOutput:
    # The fallback: the model's own [B, T, V] logits, whatever its head does, and the reference NLL.
    logits = previous_forward(*args, **kwargs).logits[:, :-1]  # [B, T-1, V]
    targets = labels[:, 1:].to(logits.device)  # [B, T-1]
    nll = torch.nn.functional.cross_entropy(  # fp32 at least, like per_token_nll, fp64 for fp64 models
        logits.reshape(-1, logits.shape[-1]).to(_acc_dtype(logits)), targets.reshape(-1), reduction="none",
        ignore_index=IGNORE_INDEX).view(targets.shape)  # [B, T-1], 0 where ignored
    mask = targets != IGNORE_INDEX
    loss = (token_weights.to(nll.device, nll.dtype) * nll).sum()
    top1 = (logits.argmax(-1) == targets) & mask
    return FusedLMOutput(loss=loss, nll=nll.detach(), is_top1=top1, label_mask=mask)


def fused_segment_loss(
    model,
    inputs: dict,
    segment_ids: torch.Tensor,
    method: str,
    w_think: float,
    w_answer: float,
    normalization: str = "sample",
    counts: SegmentCounts | None = None,
    example_ids: torch.Tensor | None = None,
) -> tuple[SegmentLossOutput, FusedLMOutput]:
    """One micro-batch of the SCALe / vanilla loss through the fused head (``add_fused_lm_head`` must have run).

    ``inputs``: the collator's batch without ``segment_ids`` / ``example_ids`` (``labels`` included);
    ``segment_ids``, ``example_ids`` (packed rows; None: one example per row): [B, T-1].
    Returns the same ``SegmentLossOutput`` as ``scale_vlm.loss.segment_loss`` (its ``loss`` from the fused head, its
    statistics from the detached NLL) and the model output.
    """
    if counts is None:
        counts = SegmentCounts.from_batch(segment_ids, example_ids)
    weights = segment_token_weights(segment_ids, method, w_think, w_answer, normalization, counts, example_ids)
    outputs = model(**inputs, fused_token_weights=weights)
    return SegmentLossOutput(loss=outputs.loss, **segment_statistics(outputs.nll, segment_ids)), outputs
