"""Sinusoidal positional encoding: fake impl, gradient and the functional entry.

Op (schema in csrc/ops/schemas.h): ``fastlayers::positional_encoding(self, seq_dim) -> Tensor``
returns ``self`` plus the encoding of "Attention Is All You Need" (section 3.5) of each
position along ``seq_dim``, the features being the last dimension. The encoding is computed
in the kernel, not stored. Its gradient with respect to ``self`` is the identity.
"""

import math

import torch

from fastlayers._config import fallback
from fastlayers.ops._common import dtype_unsupported_reason

CPU_DTYPES = (torch.float32, torch.float64, torch.bfloat16)
CUDA_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

OPS = ("positional_encoding",)

_forward = torch.ops.fastlayers.positional_encoding.default


@torch.library.register_fake("fastlayers::positional_encoding")
def _fake(self, seq_dim):
    return torch.empty_like(self, memory_format=torch.contiguous_format)


def _setup(ctx, inputs, output):
    pass


def _grad(ctx, grad_out):
    return grad_out, None


torch.library.register_autograd("fastlayers::positional_encoding", _grad, setup_context=_setup)


def sinusoidal_table(length: int, d_model: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """The [length, d_model] encoding itself, computed with torch (in float64, then cast):
    the reference the kernel is tested against, and the fallback."""
    pos = torch.arange(length, dtype=torch.float64, device=device)[:, None]
    w = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float64, device=device) * (-math.log(10000.0) / d_model))
    pe = torch.zeros(length, d_model, dtype=torch.float64, device=device)
    pe[:, 0::2] = torch.sin(pos * w)
    pe[:, 1::2] = torch.cos(pos * w[: d_model // 2])
    return pe.to(dtype)


def add_positional_encoding(x: torch.Tensor, seq_dim: int) -> torch.Tensor:
    """x plus the sinusoidal encoding of each position along `seq_dim` (features: dim -1)."""
    reason = dtype_unsupported_reason(x, CPU_DTYPES, CUDA_DTYPES)
    if reason is not None:
        fallback("positional_encoding", reason)
        sd = seq_dim % x.dim()
        pe = sinusoidal_table(x.shape[sd], x.shape[-1], x.dtype, x.device)
        return x + pe.view(x.shape[sd], *([1] * (x.dim() - sd - 2)), x.shape[-1])
    return _forward(x, seq_dim)
