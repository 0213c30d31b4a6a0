// Softmax: the torch glue shared by every backend: checks, the [outer, n, inner] view of a
// contiguous copy, allocation, then `launch(params)` unless the result is empty.
#pragma once

#include <ATen/ATen.h>
#include <ATen/WrapDimUtils.h>

#include "fastlayers/softmax.h"
#include "ops/common.h"

namespace fl {
namespace ops {

inline SoftmaxShape softmax_shape(const at::Tensor& t, int64_t dim) {
  SoftmaxShape s{1, 1, 1, to_dtype(t.scalar_type(), "softmax")};
  if (t.dim() == 0) return s;  // a scalar: softmax of one element
  const int64_t d = at::maybe_wrap_dim(dim, t.dim());
  for (int64_t i = 0; i < d; ++i) s.outer *= t.size(i);
  s.n = t.size(d);
  for (int64_t i = d + 1; i < t.dim(); ++i) s.inner *= t.size(i);
  return s;
}

template <typename Launch>
at::Tensor softmax_forward_impl(const at::Tensor& self, int64_t dim,
                                std::initializer_list<at::ScalarType> dtypes, const char* device,
                                Launch&& launch) {
  check_dtype(self, dtypes, "softmax", "input", device);
  const SoftmaxShape s = softmax_shape(self, dim);
  const at::Tensor x = self.contiguous();
  at::Tensor out = at::empty(self.sizes(), self.options());
  if (out.numel() == 0) return out;
  launch(SoftmaxFwdParams{s, x.data_ptr(), out.data_ptr()});
  return out;
}

template <typename Launch>
at::Tensor softmax_backward_impl(const at::Tensor& grad_output, const at::Tensor& output,
                                 int64_t dim, std::initializer_list<at::ScalarType> dtypes,
                                 const char* device, Launch&& launch) {
  check_same_device({{"grad_output", grad_output}, {"output", output}}, "softmax_backward");
  check_dtype(output, dtypes, "softmax_backward", "output", device);
  TORCH_CHECK(grad_output.scalar_type() == output.scalar_type(),
              "softmax_backward: grad_output must have the dtype of output (", output.scalar_type(),
              "), got ", grad_output.scalar_type());
  TORCH_CHECK(grad_output.sizes() == output.sizes(),
              "softmax_backward: grad_output must have the size of output ", output.sizes(),
              ", got ", grad_output.sizes());
  const SoftmaxShape s = softmax_shape(output, dim);
  const at::Tensor g = grad_output.contiguous(), y = output.contiguous();
  at::Tensor gi = at::empty(output.sizes(), output.options());
  if (gi.numel() == 0) return gi;
  launch(SoftmaxBwdParams{s, g.data_ptr(), y.data_ptr(), gi.data_ptr()});
  return gi;
}

}  // namespace ops
}  // namespace fl
