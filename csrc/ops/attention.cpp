// Scaled dot-product attention CPU glue: the shared checks and allocation, then the CPU
// kernels through torch's parallel_for.
#include "fastlayers/attention.h"

#include <ATen/ATen.h>
#include <torch/library.h>

#include "ops/attention_common.h"
#include "ops/common.h"

namespace fl {
namespace ops {
namespace {

constexpr std::initializer_list<at::ScalarType> kCpuTypes = {at::kFloat, at::kDouble,
                                                             at::kBFloat16};

std::tuple<at::Tensor, at::Tensor> forward_cpu(const at::Tensor& query, const at::Tensor& key,
                                               const at::Tensor& value,
                                               const std::optional<at::Tensor>& attn_mask,
                                               double dropout_p, bool is_causal, double scale,
                                               const std::optional<at::Tensor>& seed_offset) {
  return attention_forward_impl(
      query, key, value, attn_mask, dropout_p, is_causal, scale, seed_offset, kCpuTypes, "cpu",
      [](const AttentionFwdParams& p) { cpu::attention_forward(p, torch_parallel_for()); });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& query, const at::Tensor& key,
    const at::Tensor& value, const at::Tensor& out, const at::Tensor& lse,
    const std::optional<at::Tensor>& attn_mask, double dropout_p, bool is_causal, double scale,
    const std::optional<at::Tensor>& seed_offset) {
  return attention_backward_impl(
      grad_out, query, key, value, out, lse, attn_mask, dropout_p, is_causal, scale, seed_offset,
      kCpuTypes, "cpu",
      [](const AttentionBwdParams& p) { cpu::attention_backward(p, torch_parallel_for()); });
}

at::Tensor probs_cpu(const at::Tensor& query, const at::Tensor& key, const at::Tensor& lse,
                     const std::optional<at::Tensor>& attn_mask, double dropout_p, bool is_causal,
                     double scale, const std::optional<at::Tensor>& seed_offset,
                     const std::optional<at::Tensor>& rows) {
  return attention_probs_impl(
      query, key, lse, attn_mask, dropout_p, is_causal, scale, seed_offset, rows, kCpuTypes, "cpu",
      [](const AttentionProbsParams& p) { cpu::attention_probs(p, torch_parallel_for()); });
}

}  // namespace

TORCH_LIBRARY_IMPL(fastlayers, CPU, m) {
  m.impl("attention_forward", &forward_cpu);
  m.impl("attention_backward", &backward_cpu);
  m.impl("attention_probs", &probs_cpu);
}

}  // namespace ops
}  // namespace fl
