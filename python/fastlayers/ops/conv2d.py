"""conv2d: fake impls, gradients (to second order) and the functional entry.

Ops (schemas in csrc/ops/schemas.h):
- ``fastlayers::conv2d(input, weight, bias, stride, padding, dilation, groups) -> output``:
  as ``aten::conv2d``; ``padding`` has 2 values (height, width) or 4 (top, bottom, left,
  right), so TensorFlow's asymmetric 'same' padding needs no copy of the input.
- ``fastlayers::conv2d_backward(grad_output, input, weight, stride, padding, dilation,
  groups, output_mask) -> (grad_input, grad_weight, grad_bias)``; masked-out gradients are
  empty tensors.

The output is channels_last when the input or the weight is (torch's rule), else
contiguous. Under ``torch.autocast`` the functional entry casts input, weight and bias to
the autocast dtype, as torch's conv2d (on autocast's lower-precision list) does.
"""

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch._prims_common import suggest_memory_format

from fastlayers._config import fallback
from fastlayers.ops._common import dtype_unsupported_reason

_IntOrPair = int | Sequence[int]

CPU_DTYPES = (torch.float32, torch.float64, torch.bfloat16)
# float16/bfloat16 on tensor cores, float32/float64 on the SIMT path (csrc/kernels/cuda/conv2d.cu).
CUDA_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)

OPS = ("conv2d", "conv2d_backward")

_conv = torch.ops.fastlayers.conv2d.default
_backward = torch.ops.fastlayers.conv2d_backward.default


def _pair(v, name):
    v = [v] if isinstance(v, (int, torch.SymInt)) else list(v)
    if len(v) == 1:
        v = v * 2
    if len(v) != 2:
        raise RuntimeError(
            f"expected {name} to be a single integer value or a list of 2 values to match the "
            f"convolution dimensions, but got {name}={v}"
        )
    return v


def _pads4(padding):
    """[top, bottom, left, right] from the op's 1, 2 or 4 padding values."""
    p = list(padding)
    if len(p) == 1:
        return [p[0]] * 4
    if len(p) == 2:
        return [p[0], p[0], p[1], p[1]]
    return p


def output_geometry(input, weight, stride, padding, dilation):
    """Output size and memory format (the Python twin of conv2d_shape in
    csrc/ops/conv2d_common.h, for fake tensors)."""
    torch._check(input.dim() in (3, 4), lambda: "Expected 3D (unbatched) or 4D (batched) input to conv2d")
    torch._check(weight.dim() == 4, lambda: "conv2d: expected weight to be 4-D")
    sh, sw = _pair(stride, "stride")
    dh, dw = _pair(dilation, "dilation")
    pt, pb, pl, pr = _pads4(padding)
    k, _, r, s = weight.shape
    h, w = input.shape[-2:]
    oh = (h + pt + pb - dh * (r - 1) - 1) // sh + 1
    ow = (w + pl + pr - dw * (s - 1) - 1) // sw + 1
    if input.shape[-3] == 0:  # as torch: no input channels, no output channels
        k = 0
    if input.dim() == 3:
        return [k, oh, ow], torch.contiguous_format
    cl = torch.channels_last
    fmt = cl if cl in (suggest_memory_format(input), suggest_memory_format(weight)) else torch.contiguous_format
    return [input.shape[0], k, oh, ow], fmt


@torch.library.register_fake("fastlayers::conv2d")
def _conv_fake(input, weight, bias, stride, padding, dilation, groups):
    shape, fmt = output_geometry(input, weight, stride, padding, dilation)
    return torch.empty(shape, dtype=input.dtype, device=input.device, memory_format=fmt)


@torch.library.register_fake("fastlayers::conv2d_backward")
def _backward_fake(grad_output, input, weight, stride, padding, dilation, groups, output_mask):
    _, fmt = output_geometry(input, weight, stride, padding, dilation)

    def make(flag, shape, memory_format=torch.contiguous_format):
        if not flag:
            return input.new_empty((0,))
        return torch.empty(shape, dtype=input.dtype, device=input.device, memory_format=memory_format)

    return (
        make(output_mask[0], input.shape, fmt),
        make(output_mask[1], weight.shape),
        make(output_mask[2], (weight.shape[0],)),
    )


def _setup(ctx, inputs, output):
    input, weight, bias, *args = inputs
    ctx.save_for_backward(input, weight)
    ctx.args = args
    ctx.has_bias = bias is not None


def _grad(ctx, grad_out):
    input, weight = ctx.saved_tensors
    need = ctx.needs_input_grad
    mask = [need[0], need[1], ctx.has_bias and need[2]]
    if not any(mask):
        return (None,) * 7
    gx, gw, gb = _backward(grad_out, input, weight, *ctx.args, mask)
    return (gx if mask[0] else None, gw if mask[1] else None, gb if mask[2] else None, None, None, None, None)


def _setup_backward(ctx, inputs, output):
    grad_output, input, weight, *args = inputs
    ctx.save_for_backward(grad_output, input, weight)
    ctx.args = args[:-1]
    ctx.mask = args[-1]


def _used(g, mask_bit):
    return g is not None and mask_bit


def _grad_backward(ctx, ggx, ggw, ggb):
    # The three gradients are linear in grad_output, and grad_input (grad_weight) also in
    # the weight (input): differentiate each through convolutions, as torch's
    # _convolution_double_backward does.
    grad_output, input, weight = ctx.saved_tensors
    args, mask = ctx.args, ctx.mask
    need = ctx.needs_input_grad
    g_go = g_in = g_w = None
    if need[0]:
        terms = []
        if _used(ggx, mask[0]):
            terms.append(_conv(ggx, weight, None, *args))
        if _used(ggw, mask[1]):
            terms.append(_conv(input, ggw, None, *args))
        if _used(ggb, mask[2]):
            shape = [-1, 1, 1]
            terms.append(ggb.view(shape).expand_as(grad_output))
        if terms:
            g_go = sum(terms[1:], terms[0])
    if need[1] and _used(ggw, mask[1]):
        g_in = _backward(grad_output, input, ggw, *args, [True, False, False])[0]
    if need[2] and _used(ggx, mask[0]):
        g_w = _backward(grad_output, ggx, weight, *args, [False, True, False])[1]
    return (g_go, g_in, g_w) + (None,) * 5


torch.library.register_autograd("fastlayers::conv2d", _grad, setup_context=_setup)
torch.library.register_autograd("fastlayers::conv2d_backward", _grad_backward, setup_context=_setup_backward)


def unsupported_reason(input: torch.Tensor, weight: torch.Tensor) -> str | None:
    """Why no fastlayers kernel covers these inputs, or None when one does."""
    if input.dtype != weight.dtype:
        return None  # the op raises torch's error
    return dtype_unsupported_reason(input, CPU_DTYPES, CUDA_DTYPES)


def same_padding(size: Sequence[int], kernel_size: Sequence[int], stride: Sequence[int], dilation: Sequence[int]):
    """TensorFlow's 'same' padding as [top, bottom, left, right]: the output is
    ceil(size / stride) and the extra row or column of padding goes at the bottom or right.
    At stride 1 this is torch's 'same'."""
    pads = []
    for n, k, s, d in zip(size, kernel_size, stride, dilation, strict=True):
        total = max((math.ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0)
        pads += [total // 2, total - total // 2]
    return pads


def resolve_padding(padding, input, weight, stride, dilation):
    """The op's padding list for torch's padding argument: an int or pair, 'valid' or 'same'
    (asymmetric where the total is odd, and at any stride: see same_padding)."""
    if isinstance(padding, str):
        if padding == "valid":
            return [0, 0]
        if padding == "same":
            return same_padding(input.shape[-2:], weight.shape[-2:], stride, dilation)
        raise RuntimeError(f"Invalid padding string: '{padding}'")
    return _pair(padding, "padding")


def conv2d(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: _IntOrPair = 1,
    padding: _IntOrPair | str = 0,
    dilation: _IntOrPair = 1,
    groups: int = 1,
) -> torch.Tensor:
    """Drop-in for :func:`torch.nn.functional.conv2d` (same arguments and results).

    Input (N, C, H, W) or unbatched (C, H, W); the output is channels_last when the input or
    the weight is. Beyond torch: ``padding='same'`` also at stride > 1, padding as
    TensorFlow does (output size ceil(H / stride), the odd row or column of padding at the
    bottom or right); torch refuses that case.
    """
    if torch.is_autocast_enabled(input.device.type):
        dt = torch.get_autocast_dtype(input.device.type)
        input, weight = input.to(dt), weight.to(dt)
        bias = bias.to(dt) if bias is not None else None
    stride, dilation = _pair(stride, "stride"), _pair(dilation, "dilation")
    if input.dim() not in (3, 4):
        raise RuntimeError(
            f"Expected 3D (unbatched) or 4D (batched) input to conv2d, but got input of size: {list(input.shape)}"
        )
    pads = resolve_padding(padding, input, weight, stride, dilation)
    reason = unsupported_reason(input, weight)
    if reason is not None:
        fallback("conv2d", reason)
        if len(pads) == 4:  # asymmetric: pad first (F.pad takes left, right, top, bottom)
            input = F.pad(input, (pads[2], pads[3], pads[0], pads[1]))
            pads = [0, 0]
        return F.conv2d(input, weight, bias, stride, pads, dilation, groups)
    return _conv(input, weight, bias, stride, pads, dilation, groups)
