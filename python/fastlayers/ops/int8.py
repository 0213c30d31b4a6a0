"""Int8 GEMM and quantisation: fake impls and the functional entries (fastlayers.quant).

Ops (schemas in csrc/ops/schemas.h):
- ``fastlayers::int8_mm(a, b) -> int32``: a [M, K] int8 times b [N, K] int8 transposed
  (b in nn.Linear's weight layout, unlike ``torch._int_mm``'s [K, N]), exact int32.
- ``fastlayers::int8_linear(a, a_scale, b, b_scale, bias, out_dtype)``: the same GEMM with
  ``c * a_scale[:, None] * b_scale[None, :] + bias`` cast to out_dtype fused in its epilogue.
- ``fastlayers::quantize_per_row(x) -> (int8, float32 scale)``: symmetric absmax per row.
No op here has a gradient: int8 values are not differentiable (Int8Linear provides the
gradient with respect to its float input).
"""

import torch

# dtypes of the float input of quantize_per_row, and of int8_linear's output, per device.
CPU_DTYPES = (torch.float32, torch.float64, torch.bfloat16)
CUDA_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
CPU_OUT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
CUDA_OUT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MAX_K = 131072  # 127 * 128 * K < 2^31: int32 accumulation stays exact

OPS = ("int8_mm", "int8_linear", "quantize_per_row")

_int8_mm = torch.ops.fastlayers.int8_mm.default
_int8_linear = torch.ops.fastlayers.int8_linear.default
_quantize_per_row = torch.ops.fastlayers.quantize_per_row.default


@torch.library.register_fake("fastlayers::int8_mm")
def _int8_mm_fake(a, b):
    torch._check(a.dim() == 2 and b.dim() == 2, lambda: "int8_mm: 2-D a and b")
    return a.new_empty((a.shape[0], b.shape[0]), dtype=torch.int32)


@torch.library.register_fake("fastlayers::int8_linear")
def _int8_linear_fake(a, a_scale, b, b_scale, bias, out_dtype):
    torch._check(a.dim() == 2 and b.dim() == 2, lambda: "int8_linear: 2-D a and b")
    return a.new_empty((a.shape[0], b.shape[0]), dtype=out_dtype)


@torch.library.register_fake("fastlayers::quantize_per_row")
def _quantize_per_row_fake(x):
    return torch.empty_like(x, dtype=torch.int8, memory_format=torch.contiguous_format), x.new_empty(
        x.shape[:-1], dtype=torch.float32
    )


def out_dtypes(device: torch.device):
    """int8_linear's output dtypes on `device`."""
    return CUDA_OUT_DTYPES if device.type == "cuda" else CPU_OUT_DTYPES


def input_dtypes(device: torch.device):
    """quantize_per_row's input dtypes on `device`."""
    return CUDA_DTYPES if device.type == "cuda" else CPU_DTYPES
