// Dropout: the torch glue shared by every backend. Checks with messages that name the
// argument, the seed and offset read on the host, an output with the input's memory format
// (as torch's input * mask), the layout (dense, or coalesced strides), then `launch(params)`.
#pragma once

#include <ATen/ATen.h>

#include "fastlayers/dropout.h"
#include "ops/common.h"

namespace fl {
namespace ops {

// Merges dimensions that are contiguous with each other in both tensors and drops those of
// size 1, keeping the logical (row-major) element order; false if more than
// kDropoutMaxDims remain.
inline bool dropout_layout(const at::Tensor& x, const at::Tensor& out, DropoutParams& p) {
  p.ndim = 0;
  for (int64_t d = 0; d < x.dim(); ++d) {
    const int64_t size = x.size(d);
    if (size == 1) continue;
    const int64_t si = x.stride(d), so = out.stride(d);
    if (p.ndim > 0 && p.in_stride[p.ndim - 1] == si * size &&
        p.out_stride[p.ndim - 1] == so * size) {
      p.sizes[p.ndim - 1] *= size;
      p.in_stride[p.ndim - 1] = si;
      p.out_stride[p.ndim - 1] = so;
      continue;
    }
    if (p.ndim == kDropoutMaxDims) return false;
    p.sizes[p.ndim] = size;
    p.in_stride[p.ndim] = si;
    p.out_stride[p.ndim] = so;
    ++p.ndim;
  }
  return true;
}

template <typename Launch>
at::Tensor dropout_impl(const at::Tensor& input, double p, const at::Tensor& seed_offset,
                        std::initializer_list<at::ScalarType> dtypes, const char* device,
                        Launch&& launch) {
  check_dtype(input, dtypes, "dropout", "input", device);
  TORCH_CHECK(p >= 0 && p <= 1, "dropout: p must be in [0, 1], got ", p);
  TORCH_CHECK(seed_offset.scalar_type() == at::kLong && seed_offset.numel() == 2,
              "dropout: seed_offset must be an int64 tensor of 2 elements, got ",
              seed_offset.scalar_type(), " of size ", seed_offset.sizes());
  at::Tensor out = at::empty_like(input);
  if (out.numel() == 0) return out;
  const at::Tensor so = seed_offset.to(at::kCPU).contiguous();
  DropoutParams prm{};
  prm.n = input.numel();
  prm.seed = uint64_t(so.data_ptr<int64_t>()[0]);
  prm.offset = uint64_t(so.data_ptr<int64_t>()[1]);
  prm.keep_prob = float(1.0 - p);
  prm.scale = p < 1 ? 1.0 / (1.0 - p) : 0.0;
  prm.dtype = to_dtype(input.scalar_type(), "dropout");
  prm.dense = input.is_contiguous() && out.is_contiguous();
  if (!prm.dense && !dropout_layout(input, out, prm)) {
    // Too many strided dimensions: a contiguous copy in, a contiguous result copied out.
    const at::Tensor x = input.contiguous();
    at::Tensor tmp = at::empty(input.sizes(), input.options());
    prm.dense = true;
    prm.input = x.data_ptr();
    prm.output = tmp.data_ptr();
    launch(prm);
    return out.copy_(tmp);
  }
  prm.input = input.data_ptr();
  prm.output = out.data_ptr();
  launch(prm);
  return out;
}

}  // namespace ops
}  // namespace fl
