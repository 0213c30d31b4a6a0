// Softmax CPU glue: the shared checks and allocation (softmax_common.h), then the CPU kernels
// through torch's parallel_for.
#include "fastlayers/softmax.h"

#include <ATen/ATen.h>
#include <torch/library.h>

#include "ops/common.h"
#include "ops/softmax_common.h"

namespace fl {
namespace ops {
namespace {

constexpr std::initializer_list<at::ScalarType> kCpuTypes = {at::kFloat, at::kDouble,
                                                             at::kBFloat16};

at::Tensor forward_cpu(const at::Tensor& self, int64_t dim) {
  return softmax_forward_impl(self, dim, kCpuTypes, "cpu", [](const SoftmaxFwdParams& p) {
    cpu::softmax_forward(p, torch_parallel_for());
  });
}

at::Tensor backward_cpu(const at::Tensor& grad_output, const at::Tensor& output, int64_t dim) {
  return softmax_backward_impl(
      grad_output, output, dim, kCpuTypes, "cpu",
      [](const SoftmaxBwdParams& p) { cpu::softmax_backward(p, torch_parallel_for()); });
}

}  // namespace

TORCH_LIBRARY_IMPL(fastlayers, CPU, m) {
  m.impl("softmax_forward", &forward_cpu);
  m.impl("softmax_backward", &backward_cpu);
}

}  // namespace ops
}  // namespace fl
