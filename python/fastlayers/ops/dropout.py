"""Dropout with an explicit seed: fake impl, gradient and the functional entry.

Op (schema in csrc/ops/schemas.h): ``fastlayers::dropout(input, p, seed_offset) -> Tensor``
returns ``input * mask / (1 - p)``. The mask is a Philox stream (csrc/include/fastlayers/
philox.h) keyed by ``seed_offset`` (int64 [2]: seed, offset) over the input's elements in
logical (row-major) order, so it is the same on every device and for any memory layout. The
seed is drawn here from torch's generator and passed in, so the op stays pure
(torch.compile, opcheck), and backward is the same op with the same seed_offset on the
gradient: dropout is linear in its input.

Like torch's ``input * mask``, a dropped NaN or Inf gives NaN, p == 1 gives ``input * 0``,
and the output keeps the input's memory format.
"""

import torch

from fastlayers._config import fallback
from fastlayers.ops._common import dtype_unsupported_reason

CPU_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
CUDA_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)

OPS = ("dropout",)

_op = torch.ops.fastlayers.dropout.default


@torch.library.register_fake("fastlayers::dropout")
def _fake(input, p, seed_offset):
    return torch.empty_like(input)


def _setup(ctx, inputs, output):
    _, p, seed_offset = inputs
    ctx.p = p
    ctx.save_for_backward(seed_offset)


def _grad(ctx, grad_out):
    (seed_offset,) = ctx.saved_tensors
    return _op(grad_out, ctx.p, seed_offset), None, None


torch.library.register_autograd("fastlayers::dropout", _grad, setup_context=_setup)


def draw_seed_offset(generator: torch.Generator | None = None) -> torch.Tensor:
    """A fresh (seed, offset) pair for :func:`torch.ops.fastlayers.dropout`: an int64 [2] CPU
    tensor drawn from `generator` (torch's default CPU generator when None, so
    torch.manual_seed makes it reproducible)."""
    return torch.randint(0, 2**62, (2,), dtype=torch.int64, generator=generator)


def _check_p(p: float) -> None:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")


def dropout(
    input: torch.Tensor, p: float = 0.5, training: bool = True, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``input`` with each element zeroed with probability ``p`` and the others scaled by
    ``1 / (1 - p)``, as :func:`torch.nn.functional.dropout`; ``input`` itself when not
    training or ``p == 0``. The mask's seed comes from ``generator`` (torch's default
    generator when None)."""
    _check_p(p)
    if not training or p == 0 or input.numel() == 0:
        return input
    reason = dtype_unsupported_reason(input, CPU_DTYPES, CUDA_DTYPES)
    if reason is not None:
        fallback("dropout", reason)
        return torch.nn.functional.dropout(input, p, training)
    return _op(input, float(p), draw_seed_offset(generator))
