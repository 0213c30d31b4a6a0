// Int8 GEMM and quantisation CPU glue: the shared checks and allocation (int8_common.h),
// then the CPU kernels through torch's parallel_for.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "ops/common.h"
#include "ops/int8_common.h"

namespace fl {
namespace ops {
namespace {

at::Tensor int8_mm_cpu(const at::Tensor& a, const at::Tensor& b) {
  return int8_mm_impl(a, b,
                      [](const Int8GemmParams& p) { cpu::int8_gemm(p, torch_parallel_for()); });
}

at::Tensor int8_linear_cpu(const at::Tensor& a, const at::Tensor& a_scale, const at::Tensor& b,
                           const at::Tensor& b_scale, const std::optional<at::Tensor>& bias,
                           at::ScalarType out_dtype) {
  return int8_linear_impl(a, a_scale, b, b_scale, bias, out_dtype,
                          {at::kFloat, at::kHalf, at::kBFloat16}, "cpu",
                          [](const Int8GemmParams& p) { cpu::int8_gemm(p, torch_parallel_for()); });
}

std::tuple<at::Tensor, at::Tensor> quantize_per_row_cpu(const at::Tensor& self) {
  return quantize_per_row_impl(
      self, {at::kFloat, at::kDouble, at::kBFloat16}, "cpu",
      [](const QuantizeRowsParams& p) { cpu::quantize_rows(p, torch_parallel_for()); });
}

}  // namespace

TORCH_LIBRARY_IMPL(fastlayers, CPU, m) {
  m.impl("int8_mm", &int8_mm_cpu);
  m.impl("int8_linear", &int8_linear_cpu);
  m.impl("quantize_per_row", &quantize_per_row_cpu);
}

}  // namespace ops
}  // namespace fl
