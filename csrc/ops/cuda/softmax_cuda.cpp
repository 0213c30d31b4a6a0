// Softmax CUDA glue: a device guard, the shared checks and allocation (softmax_common.h),
// then the launch on the current stream, checked.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "fastlayers/softmax.h"
#include "ops/common.h"
#include "ops/softmax_common.h"

namespace fl {
namespace ops {
namespace {

constexpr std::initializer_list<at::ScalarType> kCudaTypes = {at::kFloat, at::kHalf, at::kBFloat16};

at::Tensor forward_cuda(const at::Tensor& self, int64_t dim) {
  const c10::cuda::CUDAGuard guard(self.device());
  return softmax_forward_impl(self, dim, kCudaTypes, "cuda", [](const SoftmaxFwdParams& p) {
    cuda::softmax_forward(p, c10::cuda::getCurrentCUDAStream());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

at::Tensor backward_cuda(const at::Tensor& grad_output, const at::Tensor& output, int64_t dim) {
  const c10::cuda::CUDAGuard guard(output.device());
  return softmax_backward_impl(grad_output, output, dim, kCudaTypes, "cuda",
                               [](const SoftmaxBwdParams& p) {
                                 cuda::softmax_backward(p, c10::cuda::getCurrentCUDAStream());
                                 C10_CUDA_KERNEL_LAUNCH_CHECK();
                               });
}

}  // namespace

FL_CUDA_LIBRARY_IMPL(m) {
  m.impl("softmax_forward", &forward_cuda);
  m.impl("softmax_backward", &backward_cuda);
}

}  // namespace ops
}  // namespace fl
