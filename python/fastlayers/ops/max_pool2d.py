"""max_pool2d: fake impls, gradients and the functional entry for the fastlayers ops.

Ops (schemas in csrc/ops/registration.cpp):
- ``fastlayers::max_pool2d_forward(self, kernel_size, stride, padding, dilation, ceil_mode)
  -> (values, indices)``: as ``aten::max_pool2d_with_indices``.
- ``fastlayers::max_pool2d(...) -> values``: the inference path; it writes no indices and
  recomputes them if it is ever differentiated.
- ``fastlayers::max_pool2d_backward(grad_output, self, indices, ...) -> grad_input``.

Under ``torch.autocast`` max-pooling keeps its input's dtype, as torch's does (max_pool2d is
on none of autocast's cast lists), so the ops have no autocast kernel: the Autocast keys
fall through to the backend kernel with the dtype unchanged.
"""

from collections.abc import Sequence

import torch
from torch._prims_common import suggest_memory_format

from fastlayers._config import fallback
from fastlayers.ops._common import dtype_unsupported_reason

_IntOrPair = int | Sequence[int]

CPU_DTYPES = (torch.float32, torch.float64, torch.bfloat16)
CUDA_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# The ops of this module (their backend kernels register in csrc/ops).
OPS = ("max_pool2d_forward", "max_pool2d", "max_pool2d_backward")

_forward = torch.ops.fastlayers.max_pool2d_forward.default
_values = torch.ops.fastlayers.max_pool2d.default
_backward = torch.ops.fastlayers.max_pool2d_backward.default


def _pooled_size(size, k, pad, stride, dil, ceil_mode):
    # torch's pooling_output_shape, floor or ceil; in ceil mode the last window must start
    # inside the input or its left padding.
    span = size + 2 * pad - dil * (k - 1) - 1 + (stride - 1 if ceil_mode else 0)
    out = span // stride + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out = out - 1
    return out


def output_geometry(x, kernel_size, stride, padding, dilation, ceil_mode):
    """Output size and memory format, with torch's checks and messages (the Python twin of
    max_pool2d_shape in csrc/ops/max_pool2d_common.h, for fake tensors and SymInts)."""
    ks, st, pd, dl = list(kernel_size), list(stride), list(padding), list(dilation)
    if len(ks) not in (1, 2):
        raise RuntimeError("max_pool2d: kernel_size must either be a single int, or a tuple of two ints")
    kh, kw = ks[0], ks[-1]
    if len(st) not in (0, 1, 2):
        raise RuntimeError("max_pool2d: stride must either be omitted, a single int, or a tuple of two ints")
    sh, sw = (kh, kw) if not st else (st[0], st[-1])
    if len(pd) not in (1, 2):
        raise RuntimeError("max_pool2d: padding must either be a single int, or a tuple of two ints")
    ph, pw = pd[0], pd[-1]
    if len(dl) not in (1, 2):
        raise RuntimeError("max_pool2d: dilation must be either a single int, or a tuple of two ints")
    dh, dw = dl[0], dl[-1]
    if x.dim() not in (3, 4):
        raise RuntimeError("non-empty 3D or 4D (batch mode) tensor expected for input")
    for k, s, p, d in ((kh, sh, ph, dh), (kw, sw, pw, dw)):
        if s == 0:
            raise RuntimeError("stride should not be zero")
        if p < 0:
            raise RuntimeError(f"pad must be non-negative, but got pad: {p}")
        if p > ((k - 1) * d + 1) // 2:
            raise RuntimeError(
                f"pad should be at most half of effective kernel size, but got pad={p}, "
                f"kernel_size={k} and dilation={d}"
            )
    if kh <= 0 or kw <= 0:
        raise RuntimeError(f"kernel size should be greater than zero, but got kH: {kh} kW: {kw}")
    if sh <= 0 or sw <= 0:
        raise RuntimeError(f"stride should be greater than zero, but got dH: {sh} dW: {sw}")
    if dh <= 0 or dw <= 0:
        raise RuntimeError(f"dilation should be greater than zero, but got dilationH: {dh} dilationW: {dw}")
    c, h, w = x.shape[-3:]
    if c == 0 or h == 0 or w == 0:
        raise RuntimeError(
            f"Expected 3D or 4D (batch mode) tensor with optional 0 dim batch size for input, but got:{list(x.shape)}"
        )
    if kw // 2 < pw or kh // 2 < ph:
        raise RuntimeError(
            "pad should be smaller than or equal to half of kernel size, but got "
            f"padW = {pw}, padH = {ph}, kW = {kw}, kH = {kh}"
        )
    oh = _pooled_size(h, kh, ph, sh, dh, ceil_mode)
    ow = _pooled_size(w, kw, pw, sw, dw, ceil_mode)
    if oh < 1 or ow < 1:
        raise RuntimeError(
            f"Given input size: ({c}x{h}x{w}). Calculated output size: ({c}x{oh}x{ow}). Output size is too small"
        )
    fmt = suggest_memory_format(x) if x.dim() == 4 else torch.contiguous_format
    return [*x.shape[:-2], oh, ow], fmt


@torch.library.register_fake("fastlayers::max_pool2d_forward")
def _forward_fake(self, kernel_size, stride, padding, dilation, ceil_mode):
    shape, fmt = output_geometry(self, kernel_size, stride, padding, dilation, ceil_mode)
    out = torch.empty(shape, dtype=self.dtype, device=self.device, memory_format=fmt)
    return out, torch.empty(shape, dtype=torch.int64, device=self.device, memory_format=fmt)


@torch.library.register_fake("fastlayers::max_pool2d")
def _values_fake(self, kernel_size, stride, padding, dilation, ceil_mode):
    shape, fmt = output_geometry(self, kernel_size, stride, padding, dilation, ceil_mode)
    return torch.empty(shape, dtype=self.dtype, device=self.device, memory_format=fmt)


@torch.library.register_fake("fastlayers::max_pool2d_backward")
def _backward_fake(grad_output, self, indices, kernel_size, stride, padding, dilation, ceil_mode):
    shape, fmt = output_geometry(self, kernel_size, stride, padding, dilation, ceil_mode)
    torch._check(list(grad_output.shape) == shape, lambda: "max_pool2d_backward: grad_output has the wrong size")
    torch._check(list(indices.shape) == shape, lambda: "max_pool2d_backward: indices has the wrong size")
    return torch.empty(self.shape, dtype=self.dtype, device=self.device, memory_format=fmt)


# Gradients. The forward saves its input (for the backward's geometry and memory format) and
# the indices; the values-only op recomputes the indices when differentiated.
def _setup_forward(ctx, inputs, output):
    self, *args = inputs
    ctx.save_for_backward(self, output[1])
    ctx.args = args


def _grad_forward(ctx, grad_out, _grad_indices):
    self, indices = ctx.saved_tensors
    return _backward(grad_out, self, indices, *ctx.args), None, None, None, None, None


def _setup_values(ctx, inputs, output):
    self, *args = inputs
    ctx.save_for_backward(self)
    ctx.args = args


def _grad_values(ctx, grad_out):
    (self,) = ctx.saved_tensors
    _, indices = _forward(self, *ctx.args)
    return _backward(grad_out, self, indices, *ctx.args), None, None, None, None, None


def _setup_backward(ctx, inputs, output):
    ctx.save_for_backward(inputs[2])


def _grad_backward(ctx, grad_grad_input):
    # d(grad_input)/d(grad_output) is a gather of grad_grad_input at the indices.
    (indices,) = ctx.saved_tensors
    grad_grad_output = grad_grad_input.flatten(-2).gather(-1, indices.flatten(-2)).view(indices.shape)
    return grad_grad_output, None, None, None, None, None, None, None


torch.library.register_autograd("fastlayers::max_pool2d_forward", _grad_forward, setup_context=_setup_forward)
torch.library.register_autograd("fastlayers::max_pool2d", _grad_values, setup_context=_setup_values)
torch.library.register_autograd("fastlayers::max_pool2d_backward", _grad_backward, setup_context=_setup_backward)


def _as_list(v: _IntOrPair | None) -> list[int]:
    if v is None:
        return []
    if isinstance(v, (int, torch.SymInt)):
        return [v]
    return list(v)


def unsupported_reason(x: torch.Tensor) -> str | None:
    """Why no fastlayers kernel covers `x`, or None when one does."""
    return dtype_unsupported_reason(x, CPU_DTYPES, CUDA_DTYPES)


def max_pool2d(
    input: torch.Tensor,
    kernel_size: _IntOrPair,
    stride: _IntOrPair | None = None,
    padding: _IntOrPair = 0,
    dilation: _IntOrPair = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
):
    """Drop-in for :func:`torch.nn.functional.max_pool2d` (same arguments and results).

    Input (N, C, H, W) or (C, H, W), contiguous or channels_last; the output keeps the
    input's memory format. With ``return_indices`` also returns the int64 flat indices into
    each H*W plane, as torch does.
    """
    reason = unsupported_reason(input)
    if reason is not None:
        fallback("max_pool2d", reason)
        return torch.nn.functional.max_pool2d(
            input, kernel_size, stride, padding, dilation, ceil_mode=ceil_mode, return_indices=return_indices
        )
    args = (_as_list(kernel_size), _as_list(stride), _as_list(padding), _as_list(dilation), bool(ceil_mode))
    if return_indices or (torch.is_grad_enabled() and input.requires_grad):
        out, indices = _forward(input, *args)
        return (out, indices) if return_indices else out
    return _values(input, *args)
