"""Softmax along one dimension: fake impls, gradients and the functional entry.

Ops (schemas in csrc/ops/schemas.h):
- ``fastlayers::softmax_forward(self, dim) -> Tensor``
- ``fastlayers::softmax_backward(grad_output, output, dim) -> Tensor``: y * (g - sum(g * y)).
"""

import torch

from fastlayers._config import fallback
from fastlayers.ops._common import dtype_unsupported_reason

CPU_DTYPES = (torch.float32, torch.float64, torch.bfloat16)
CUDA_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

OPS = ("softmax_forward", "softmax_backward")

_forward = torch.ops.fastlayers.softmax_forward.default
_backward = torch.ops.fastlayers.softmax_backward.default


@torch.library.register_fake("fastlayers::softmax_forward")
def _forward_fake(self, dim):
    return torch.empty_like(self, memory_format=torch.contiguous_format)


@torch.library.register_fake("fastlayers::softmax_backward")
def _backward_fake(grad_output, output, dim):
    return torch.empty_like(output, memory_format=torch.contiguous_format)


def _setup(ctx, inputs, output):
    ctx.save_for_backward(output)
    ctx.dim = inputs[1]


def _grad(ctx, grad_out):
    (output,) = ctx.saved_tensors
    return _backward(grad_out.contiguous(), output, ctx.dim), None


torch.library.register_autograd("fastlayers::softmax_forward", _grad, setup_context=_setup)


def unsupported_reason(x: torch.Tensor) -> str | None:
    return dtype_unsupported_reason(x, CPU_DTYPES, CUDA_DTYPES)


def softmax(input: torch.Tensor, dim: int | None = None, _stacklevel: int = 3, dtype: torch.dtype | None = None):
    """Drop-in for :func:`torch.nn.functional.softmax` (same arguments, including the
    deprecated implicit ``dim``, and ``dtype`` to cast the input first)."""
    if dim is None:
        dim = torch.nn.functional._get_softmax_dim("softmax", input.dim(), _stacklevel)
    if dtype is not None:
        input = input.to(dtype)
    reason = unsupported_reason(input)
    if reason is not None:
        fallback("softmax", reason)
        return torch.nn.functional.softmax(input, dim)
    return _forward(input, dim)
