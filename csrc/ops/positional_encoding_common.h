// Sinusoidal positional encoding: the torch glue shared by every backend. Checks with
// messages that name the argument, the [outer, L, inner, E] view of a contiguous copy,
// allocation, then `launch(params)`.
#pragma once

#include <ATen/ATen.h>
#include <ATen/WrapDimUtils.h>

#include "fastlayers/positional_encoding.h"
#include "ops/common.h"

namespace fl {
namespace ops {

template <typename Launch>
at::Tensor positional_encoding_impl(const at::Tensor& self, int64_t seq_dim,
                                    std::initializer_list<at::ScalarType> dtypes,
                                    const char* device, Launch&& launch) {
  check_dtype(self, dtypes, "positional_encoding", "input", device);
  TORCH_CHECK(self.dim() >= 2,
              "positional_encoding: input must have at least 2 dimensions "
              "(positions and features), got ",
              self.dim());
  const int64_t sd = at::maybe_wrap_dim(seq_dim, self.dim());
  TORCH_CHECK(sd < self.dim() - 1,
              "positional_encoding: seq_dim must not be the last (feature) dimension");
  PositionalEncodingParams p{
      1,       self.size(sd), 1, self.size(-1), to_dtype(self.scalar_type(), "positional_encoding"),
      nullptr, nullptr};
  for (int64_t i = 0; i < sd; ++i) p.outer *= self.size(i);
  for (int64_t i = sd + 1; i < self.dim() - 1; ++i) p.inner *= self.size(i);
  const at::Tensor x = self.contiguous();
  at::Tensor out = at::empty(self.sizes(), self.options());
  if (out.numel() == 0) return out;
  p.input = x.data_ptr();
  p.output = out.data_ptr();
  launch(p);
  return out;
}

}  // namespace ops
}  // namespace fl
