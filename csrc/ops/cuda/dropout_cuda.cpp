// Dropout CUDA glue: a device guard, the shared checks and allocation (dropout_common.h),
// then the launch on the current stream, checked.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "ops/common.h"
#include "ops/dropout_common.h"

namespace fl {
namespace ops {
namespace {

constexpr std::initializer_list<at::ScalarType> kCudaTypes = {at::kFloat, at::kDouble, at::kHalf,
                                                              at::kBFloat16};

at::Tensor dropout_cuda(const at::Tensor& input, double p, const at::Tensor& seed_offset) {
  const c10::cuda::CUDAGuard guard(input.device());
  return dropout_impl(input, p, seed_offset, kCudaTypes, "cuda", [](const DropoutParams& prm) {
    cuda::dropout(prm, c10::cuda::getCurrentCUDAStream());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace

FL_CUDA_LIBRARY_IMPL(m) { m.impl("dropout", &dropout_cuda); }

}  // namespace ops
}  // namespace fl
