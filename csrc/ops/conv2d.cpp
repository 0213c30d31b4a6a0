// conv2d CPU glue: the shared checks and allocation, then the CPU kernels with torch's
// parallel_for and ATen's matrix multiply as their GEMM stage.
#include "fastlayers/conv2d.h"

#include <ATen/ATen.h>
#include <torch/library.h>

#include "ops/common.h"
#include "ops/conv2d_common.h"

namespace fl {
namespace ops {
namespace {

constexpr std::initializer_list<at::ScalarType> kCpuTypes = {at::kFloat, at::kDouble,
                                                             at::kBFloat16};

// GemmCall on ATen: views of the kernel's buffers, mm or addmm into c.
void aten_gemm(const GemmCall& g) {
  const auto opts =
      at::TensorOptions().dtype(g.dtype == DType::kFloat64 ? at::kDouble : at::kFloat);
  auto view = [&](const void* p, int64_t rows, int64_t cols, int64_t ld, bool trans) {
    at::Tensor t = trans ? at::from_blob(const_cast<void*>(p), {cols, rows}, {ld, 1}, opts).t()
                         : at::from_blob(const_cast<void*>(p), {rows, cols}, {ld, 1}, opts);
    return t;
  };
  const at::Tensor a = view(g.a, g.M, g.K, g.lda, g.trans_a);
  const at::Tensor b = view(g.b, g.K, g.N, g.ldb, g.trans_b);
  at::Tensor c = at::from_blob(g.c, {g.M, g.N}, {g.ldc, 1}, opts);
  if (g.accumulate)
    c.addmm_(a, b);
  else
    at::mm_out(c, a, b);
}

at::Tensor forward_cpu(const at::Tensor& input, const at::Tensor& weight,
                       const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                       at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  return conv2d_forward_impl(
      input, weight, bias, stride, padding, dilation, groups, kCpuTypes, "cpu",
      [](const Conv2dFwdParams& p) { cpu::conv2d_forward(p, torch_parallel_for(), aten_gemm); });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_cpu(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
    std::array<bool, 3> output_mask) {
  return conv2d_backward_impl(
      grad_output, input, weight, stride, padding, dilation, groups, output_mask, kCpuTypes, "cpu",
      [](const Conv2dBwdParams& p) { cpu::conv2d_backward(p, torch_parallel_for(), aten_gemm); });
}

}  // namespace

TORCH_LIBRARY_IMPL(fastlayers, CPU, m) {
  m.impl("conv2d", &forward_cpu);
  m.impl("conv2d_backward", &backward_cpu);
}

}  // namespace ops
}  // namespace fl
