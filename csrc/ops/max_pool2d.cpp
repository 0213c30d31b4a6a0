// max_pool2d CPU glue: the shared checks and allocation, then the CPU kernels through
// torch's parallel_for.
#include "fastlayers/max_pool2d.h"

#include <ATen/ATen.h>
#include <torch/library.h>

#include "ops/common.h"
#include "ops/max_pool2d_common.h"

namespace fl {
namespace ops {
namespace {

constexpr std::initializer_list<at::ScalarType> kCpuTypes = {at::kFloat, at::kDouble,
                                                             at::kBFloat16};

void launch_forward(const MaxPool2dFwdParams& p) {
  cpu::max_pool2d_forward(p, torch_parallel_for());
}

std::tuple<at::Tensor, at::Tensor> forward_cpu(const at::Tensor& self, at::IntArrayRef kernel_size,
                                               at::IntArrayRef stride, at::IntArrayRef padding,
                                               at::IntArrayRef dilation, bool ceil_mode) {
  return max_pool2d_forward_impl(self, kernel_size, stride, padding, dilation, ceil_mode, true,
                                 kCpuTypes, "cpu", launch_forward);
}

at::Tensor values_cpu(const at::Tensor& self, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                      at::IntArrayRef padding, at::IntArrayRef dilation, bool ceil_mode) {
  return std::get<0>(max_pool2d_forward_impl(self, kernel_size, stride, padding, dilation,
                                             ceil_mode, false, kCpuTypes, "cpu", launch_forward));
}

at::Tensor backward_cpu(const at::Tensor& grad_output, const at::Tensor& self,
                        const at::Tensor& indices, at::IntArrayRef kernel_size,
                        at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                        bool ceil_mode) {
  return max_pool2d_backward_impl(
      grad_output, self, indices, kernel_size, stride, padding, dilation, ceil_mode, kCpuTypes,
      "cpu",
      [](const MaxPool2dBwdParams& p) { cpu::max_pool2d_backward(p, torch_parallel_for()); });
}

}  // namespace

TORCH_LIBRARY_IMPL(fastlayers, CPU, m) {
  m.impl("max_pool2d_forward", &forward_cpu);
  m.impl("max_pool2d", &values_cpu);
  m.impl("max_pool2d_backward", &backward_cpu);
}

}  // namespace ops
}  // namespace fl
