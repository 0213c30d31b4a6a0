"""Scaled dot-product attention: fake impls, gradients and the functional entry.

Ops (schemas in csrc/ops/schemas.h), on 4-D [batch, heads, length, dim] tensors:
- ``fastlayers::attention_forward(query, key, value, attn_mask, dropout_p, is_causal, scale,
  seed_offset) -> (out, lse)``: lse is the log-sum-exp of each query row's scaled, masked
  scores (float32; float64 for float64 inputs), +inf for a row whose keys are all masked.
- ``fastlayers::attention_backward(grad_out, query, key, value, out, lse, ...) -> (dq, dk, dv)``.

The dropout mask is a Philox stream (csrc/include/fastlayers/philox.h) whose seed and offset
are drawn here from torch's CPU generator and passed in as a tensor, so the ops stay pure
(torch.compile, opcheck) and backward regenerates forward's mask.

Under ``torch.autocast`` attention runs in the autocast dtype, as torch's SDPA does (it is
on autocast's lower-precision list): the functional entry casts q, k, v (and a float mask).
"""

import math

import torch

from fastlayers._config import fallback
from fastlayers.ops._common import dtype_unsupported_reason

CPU_DTYPES = (torch.float32, torch.float64, torch.bfloat16)
CUDA_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
CUDA_MAX_HEAD_DIM = 256  # D and Dv; larger heads fall back to torch on CUDA

OPS = ("attention_forward", "attention_backward", "attention_probs")

_forward = torch.ops.fastlayers.attention_forward.default
_backward = torch.ops.fastlayers.attention_backward.default
_probs = torch.ops.fastlayers.attention_probs.default


def _lse_dtype(q):
    return torch.float64 if q.dtype == torch.float64 else torch.float32


@torch.library.register_fake("fastlayers::attention_forward")
def _forward_fake(query, key, value, attn_mask, dropout_p, is_causal, scale, seed_offset):
    torch._check(query.dim() == 4 and key.dim() == 4 and value.dim() == 4, lambda: "attention: 4-D inputs")
    b, h, lq, _ = query.shape
    out = query.new_empty((b, h, lq, value.shape[-1]))
    return out, query.new_empty((b, h, lq), dtype=_lse_dtype(query))


@torch.library.register_fake("fastlayers::attention_backward")
def _backward_fake(grad_out, query, key, value, out, lse, attn_mask, dropout_p, is_causal, scale, seed_offset):
    return (
        torch.empty_like(query, memory_format=torch.contiguous_format),
        torch.empty_like(key, memory_format=torch.contiguous_format),
        torch.empty_like(value, memory_format=torch.contiguous_format),
    )


def _setup_forward(ctx, inputs, output):
    query, key, value, attn_mask, dropout_p, is_causal, scale, seed_offset = inputs
    out, lse = output
    ctx.save_for_backward(query, key, value, out, lse, attn_mask, seed_offset)
    ctx.args = (dropout_p, is_causal, scale)


def _grad_forward(ctx, grad_out, _grad_lse):
    query, key, value, out, lse, attn_mask, seed_offset = ctx.saved_tensors
    dropout_p, is_causal, scale = ctx.args
    dq, dk, dv = _backward(
        grad_out.contiguous(), query, key, value, out, lse, attn_mask, dropout_p, is_causal, scale, seed_offset
    )
    return dq, dk, dv, None, None, None, None, None


torch.library.register_autograd("fastlayers::attention_forward", _grad_forward, setup_context=_setup_forward)


@torch.library.register_fake("fastlayers::attention_probs")
def _probs_fake(query, key, lse, attn_mask, dropout_p, is_causal, scale, seed_offset, rows):
    b, h, lq, _ = query.shape
    r = lq if rows is None else rows.shape[0]
    return query.new_empty((b, h, r, key.shape[2]))


def _setup_probs(ctx, inputs, output):
    query, key, lse, attn_mask, dropout_p, is_causal, scale, seed_offset, rows = inputs
    ctx.save_for_backward(query, key, lse, attn_mask, rows, output)
    ctx.args = (dropout_p, is_causal, scale)


def _grad_probs(ctx, grad_w):
    """Gradients of W = P * Z (P = softmax of the scores, lse being their log-sum-exp) with
    respect to query and key: dS = P (dP - rowsum(P dP)), dP = dW Z. The dependence through
    lse is included, so lse itself gets no gradient."""
    query, key, lse, attn_mask, rows, w = ctx.saved_tensors
    dropout_p, is_causal, scale = ctx.args
    p = _probs(query, key, lse, attn_mask, 0.0, is_causal, scale, None, rows)
    # Each row again divided by its sum: recomputed from a float32 lse, a row carries a common
    # factor 1 + e (e ~ ulp(lse), 4e-6 at scores near 80), which the cancellation in
    # dP - rowsum(P dP) would magnify 10-100x. (Rows whose keys are all masked stay zero.)
    total = p.sum(-1, keepdim=True)
    p = p / torch.where(total > 0, total, torch.ones_like(total))
    dp = grad_w if dropout_p == 0 else grad_w * (w != 0) / (1.0 - dropout_p)
    ds = p * (dp - (dp * p).sum(-1, keepdim=True))
    group = query.shape[1] // key.shape[1]
    k_rep = key.repeat_interleave(group, dim=1) if group > 1 else key
    q_rows = query if rows is None else query[:, :, rows]
    dq_rows = (ds @ k_rep.to(ds.dtype)) * scale
    if rows is None:
        dq = dq_rows
    else:
        dq = torch.zeros_like(query, dtype=dq_rows.dtype).index_add_(2, rows.to(query.device), dq_rows)
    dk = (ds.transpose(-1, -2) @ q_rows.to(ds.dtype)) * scale
    if group > 1:
        dk = dk.view(key.shape[0], key.shape[1], group, *dk.shape[2:]).sum(2)
    return dq.to(query.dtype), dk.to(key.dtype), None, None, None, None, None, None, None


torch.library.register_autograd("fastlayers::attention_probs", _grad_probs, setup_context=_setup_probs)


def unsupported_reason(q, k, v, attn_mask) -> str | None:
    """Why no fastlayers kernel covers these inputs, or None when one does."""
    reason = dtype_unsupported_reason(q, CPU_DTYPES, CUDA_DTYPES)
    if reason is not None:
        return reason
    if attn_mask is not None and attn_mask.dtype != torch.bool and attn_mask.requires_grad:
        return "an additive attn_mask that requires grad"
    if q.device.type == "cuda" and max(q.shape[-1], v.shape[-1]) > CUDA_MAX_HEAD_DIM:
        return f"head dim {max(q.shape[-1], v.shape[-1])} on cuda (the kernels take up to {CUDA_MAX_HEAD_DIM})"
    return None


def _to_4d(t):
    """[..., L, E] as [B, H, L, E]: H is dim -3 (1 for 2-D input), B the rest flattened."""
    if t.dim() == 2:
        return t[None, None]
    if t.dim() == 3:
        return t[None]
    return t if t.dim() == 4 else t.flatten(0, -4)


def _prepare(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa):
    """Checks like torch's, then the 4-D views the ops take: (q4, k4, v4, mask4, scale,
    seed_offset, batch shape, Lq, Ev); None when no fastlayers kernel covers the inputs."""
    if torch.is_autocast_enabled(query.device.type):
        dt = torch.get_autocast_dtype(query.device.type)
        query, key, value = query.to(dt), key.to(dt), value.to(dt)
    if attn_mask is not None and attn_mask.dtype != torch.bool and attn_mask.dtype != query.dtype:
        attn_mask = attn_mask.to(query.dtype)
    reason = unsupported_reason(query, key, value, attn_mask)
    if reason is not None:
        fallback("scaled_dot_product_attention", reason)
        return None
    if query.dim() < 2 or key.dim() < 2 or value.dim() < 2:
        raise RuntimeError("scaled_dot_product_attention: query, key and value must have at least 2 dimensions")
    if is_causal and attn_mask is not None:
        raise RuntimeError("_scaled_dot_product_attention: Explicit attn_mask should not be set when is_causal=True")
    lq, e = query.shape[-2:]
    ev = value.shape[-1]
    if key.shape[-1] != e:
        raise RuntimeError(
            f"scaled_dot_product_attention: query and key must have the same embedding size, "
            f"got {e} and {key.shape[-1]}"
        )
    if key.shape[-2] != value.shape[-2]:
        raise RuntimeError("scaled_dot_product_attention: key and value must have the same length")
    hq = query.shape[-3] if query.dim() >= 3 else 1
    gqa = enable_gqa and query.dim() >= 3 and key.dim() >= 3
    if gqa:
        hk = key.shape[-3]
        if hk == 0 or hq % hk != 0 or value.dim() < 3 or value.shape[-3] != hk:
            raise RuntimeError(
                f"scaled_dot_product_attention: number of query heads ({hq}) must be a multiple of "
                f"the number of key/value heads ({hk}) with enable_gqa"
            )

    def kv_heads_as_query(shape):  # a key/value batch shape as it broadcasts against query's
        return (*shape[:-1], hq) if gqa else shape

    # The batch dimensions of query, key and value broadcast together, as in torch; attn_mask
    # must broadcast to the result.
    shapes = [query.shape[:-2], kv_heads_as_query(key.shape[:-2]), kv_heads_as_query(value.shape[:-2])]
    try:
        batch = torch.broadcast_shapes(*shapes)
    except RuntimeError as err:
        raise RuntimeError(
            f"scaled_dot_product_attention: the batch dimensions of query {tuple(query.shape)}, "
            f"key {tuple(key.shape)} and value {tuple(value.shape)} do not broadcast"
        ) from err
    kv_batch = (*batch[:-1], hk) if gqa else batch
    query = query.expand(*batch, lq, e)
    key = key.expand(*kv_batch, *key.shape[-2:])
    value = value.expand(*kv_batch, *value.shape[-2:])
    q4, k4, v4 = _to_4d(query), _to_4d(key), _to_4d(value)
    mask4 = None
    if attn_mask is not None:
        try:
            m = attn_mask.expand(*batch, lq, key.shape[-2])
        except RuntimeError as err:
            raise RuntimeError(
                f"scaled_dot_product_attention: attn_mask of size {tuple(attn_mask.shape)} does not broadcast "
                f"to {(*batch, lq, key.shape[-2])}"
            ) from err
        mask4 = _to_4d(m)
    seed_offset = None
    if dropout_p > 0:
        seed_offset = torch.randint(0, 2**62, (2,), dtype=torch.int64)
    if scale is None:
        scale = 1.0 / math.sqrt(e) if e > 0 else 1.0
    return q4, k4, v4, mask4, float(scale), seed_offset, batch, lq, ev


def scaled_dot_product_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> torch.Tensor:
    """Drop-in for :func:`torch.nn.functional.scaled_dot_product_attention`.

    query (..., L, E), key (..., S, E), value (..., S, Ev) -> (..., L, Ev). attn_mask: bool
    (True = take part in attention) or a float added to the scores, broadcastable to
    (..., L, S). is_causal masks with torch's top-left aligned lower triangle. With
    enable_gqa the query heads (dim -3) may be a multiple of the key/value heads.

    Differs from torch where torch gives NaN: a query row whose keys are all masked gets an
    output of 0 and zero gradients.
    """
    prepared = _prepare(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa)
    if prepared is None:  # no kernel: torch's result
        return torch.nn.functional.scaled_dot_product_attention(
            query, key, value, attn_mask, dropout_p, is_causal, scale=scale, enable_gqa=enable_gqa
        )
    q4, k4, v4, mask4, scale, seed_offset, batch, lq, ev = prepared
    out, _ = _forward(q4, k4, v4, mask4, float(dropout_p), bool(is_causal), float(scale), seed_offset)
    return out.view(*batch, lq, ev)


def attention_with_lse(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
):
    """The lower-level entry of :func:`scaled_dot_product_attention` (same arguments):
    returns ``(out, lse, seed_offset)``, lse being the log-sum-exp of each query row's scaled,
    masked scores (..., L), float32 (float64 for float64 inputs), +inf for rows whose keys
    are all masked. Pass lse and seed_offset to :func:`attention_probs` to recompute the
    attention weights the output used, for any rows, without storing the score matrix.
    Needs a fastlayers kernel for the inputs (no fallback)."""
    prepared = _prepare(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa)
    if prepared is None:
        raise RuntimeError("attention_with_lse: no fastlayers kernel for these inputs")
    q4, k4, v4, mask4, scale, seed_offset, batch, lq, ev = prepared
    out, lse = _forward(q4, k4, v4, mask4, float(dropout_p), bool(is_causal), scale, seed_offset)
    return out.view(*batch, lq, ev), lse.view(*batch, lq), seed_offset


def attention_probs(
    query: torch.Tensor,
    key: torch.Tensor,
    lse: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    seed_offset: torch.Tensor | None = None,
    rows: torch.Tensor | None = None,
    enable_gqa: bool = False,
) -> torch.Tensor:
    """The attention weights (after dropout) of the query rows `rows` (all rows when None):
    (..., len(rows), S), recomputed from the lse of :func:`attention_with_lse` called with
    the same arguments (and its seed_offset when dropout_p > 0). Differentiable with respect
    to query and key."""
    prepared = _prepare(query, key, key, attn_mask, dropout_p, is_causal, scale, enable_gqa)
    if prepared is None:
        raise RuntimeError("attention_probs: no fastlayers kernel for these inputs")
    q4, k4, _, mask4, scale, _, batch, lq, _ = prepared
    lse4 = lse.reshape(q4.shape[:3])
    probs = _probs(q4, k4, lse4, mask4, float(dropout_p), bool(is_causal), scale, seed_offset, rows)
    return probs.view(*batch, probs.shape[-2], key.shape[-2])
