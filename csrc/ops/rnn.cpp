// RNN recurrence CPU glue: the shared checks and allocation, then the CPU kernels through
// torch's parallel_for.
#include "fastlayers/rnn.h"

#include <ATen/ATen.h>
#include <torch/library.h>

#include "ops/common.h"
#include "ops/rnn_common.h"

namespace fl {
namespace ops {
namespace {

constexpr std::initializer_list<at::ScalarType> kCpuTypes = {at::kFloat, at::kDouble,
                                                             at::kBFloat16};

std::tuple<at::Tensor, at::Tensor> forward_cpu(const at::Tensor& input_proj,
                                               const at::Tensor& batch_sizes, const at::Tensor& h0,
                                               const at::Tensor& weight_hh,
                                               const std::optional<at::Tensor>& bias, bool relu,
                                               bool reverse) {
  return rnn_forward_impl(input_proj, batch_sizes, h0, weight_hh, bias, relu, reverse, kCpuTypes,
                          "cpu",
                          [](const RnnFwdParams& p) { cpu::rnn_forward(p, torch_parallel_for()); });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> backward_cpu(
    const std::optional<at::Tensor>& grad_output, const std::optional<at::Tensor>& grad_hn,
    const at::Tensor& output, const at::Tensor& h0, const at::Tensor& weight_hh,
    const at::Tensor& batch_sizes, bool relu, bool reverse) {
  return rnn_backward_impl(
      grad_output, grad_hn, output, h0, weight_hh, batch_sizes, relu, reverse, kCpuTypes, "cpu",
      [](const RnnBwdParams& p) { cpu::rnn_backward(p, torch_parallel_for()); });
}

}  // namespace

TORCH_LIBRARY_IMPL(fastlayers, CPU, m) {
  m.impl("rnn_recurrence", &forward_cpu);
  m.impl("rnn_recurrence_backward", &backward_cpu);
}

}  // namespace ops
}  // namespace fl
