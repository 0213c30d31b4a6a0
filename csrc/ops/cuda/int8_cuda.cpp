// Int8 GEMM and quantisation CUDA glue: a device guard, the shared checks and allocation
// (int8_common.h), then the launches on the current stream, checked.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "ops/common.h"
#include "ops/int8_common.h"

namespace fl {
namespace ops {
namespace {

void launch_gemm(const Int8GemmParams& p) {
  cuda::int8_gemm(p, c10::cuda::getCurrentCUDAStream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

at::Tensor int8_mm_cuda(const at::Tensor& a, const at::Tensor& b) {
  const c10::cuda::CUDAGuard guard(a.device());
  return int8_mm_impl(a, b, launch_gemm);
}

at::Tensor int8_linear_cuda(const at::Tensor& a, const at::Tensor& a_scale, const at::Tensor& b,
                            const at::Tensor& b_scale, const std::optional<at::Tensor>& bias,
                            at::ScalarType out_dtype) {
  const c10::cuda::CUDAGuard guard(a.device());
  return int8_linear_impl(a, a_scale, b, b_scale, bias, out_dtype,
                          {at::kFloat, at::kHalf, at::kBFloat16}, "cuda", launch_gemm);
}

std::tuple<at::Tensor, at::Tensor> quantize_per_row_cuda(const at::Tensor& self) {
  const c10::cuda::CUDAGuard guard(self.device());
  return quantize_per_row_impl(self, {at::kFloat, at::kHalf, at::kBFloat16}, "cuda",
                               [](const QuantizeRowsParams& p) {
                                 cuda::quantize_rows(p, c10::cuda::getCurrentCUDAStream());
                                 C10_CUDA_KERNEL_LAUNCH_CHECK();
                               });
}

}  // namespace

FL_CUDA_LIBRARY_IMPL(m) {
  m.impl("int8_mm", &int8_mm_cuda);
  m.impl("int8_linear", &int8_linear_cuda);
  m.impl("quantize_per_row", &quantize_per_row_cuda);
}

}  // namespace ops
}  // namespace fl
