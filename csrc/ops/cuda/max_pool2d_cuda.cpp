// max_pool2d CUDA glue: a device guard on the input's device, the shared checks and
// allocation, then the launch on the current stream, checked.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "fastlayers/max_pool2d.h"
#include "ops/common.h"
#include "ops/max_pool2d_common.h"

namespace fl {
namespace ops {
namespace {

constexpr std::initializer_list<at::ScalarType> kCudaTypes = {at::kFloat, at::kHalf, at::kBFloat16};

void launch_forward(const MaxPool2dFwdParams& p) {
  cuda::max_pool2d_forward(p, c10::cuda::getCurrentCUDAStream());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

std::tuple<at::Tensor, at::Tensor> forward_cuda(const at::Tensor& self, at::IntArrayRef kernel_size,
                                                at::IntArrayRef stride, at::IntArrayRef padding,
                                                at::IntArrayRef dilation, bool ceil_mode) {
  const c10::cuda::CUDAGuard guard(self.device());
  return max_pool2d_forward_impl(self, kernel_size, stride, padding, dilation, ceil_mode, true,
                                 kCudaTypes, "cuda", launch_forward);
}

at::Tensor values_cuda(const at::Tensor& self, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                       at::IntArrayRef padding, at::IntArrayRef dilation, bool ceil_mode) {
  const c10::cuda::CUDAGuard guard(self.device());
  return std::get<0>(max_pool2d_forward_impl(self, kernel_size, stride, padding, dilation,
                                             ceil_mode, false, kCudaTypes, "cuda", launch_forward));
}

at::Tensor backward_cuda(const at::Tensor& grad_output, const at::Tensor& self,
                         const at::Tensor& indices, at::IntArrayRef kernel_size,
                         at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                         bool ceil_mode) {
  const c10::cuda::CUDAGuard guard(self.device());
  return max_pool2d_backward_impl(grad_output, self, indices, kernel_size, stride, padding,
                                  dilation, ceil_mode, kCudaTypes, "cuda",
                                  [](const MaxPool2dBwdParams& p) {
                                    cuda::max_pool2d_backward(p, c10::cuda::getCurrentCUDAStream());
                                    C10_CUDA_KERNEL_LAUNCH_CHECK();
                                  });
}

}  // namespace

FL_CUDA_LIBRARY_IMPL(m) {
  m.impl("max_pool2d_forward", &forward_cuda);
  m.impl("max_pool2d", &values_cuda);
  m.impl("max_pool2d_backward", &backward_cuda);
}

}  // namespace ops
}  // namespace fl
