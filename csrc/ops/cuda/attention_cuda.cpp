// Scaled dot-product attention CUDA glue: a device guard, the shared checks and allocation
// (attention_common.h), the head-dim limit of the CUDA kernels, then the launches on the
// current stream, checked.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "fastlayers/attention.h"
#include "ops/attention_common.h"
#include "ops/common.h"

namespace fl {
namespace ops {
namespace {

constexpr std::initializer_list<at::ScalarType> kCudaTypes = {at::kFloat, at::kHalf, at::kBFloat16};

void check_head_dims(const AttentionShape& s, const char* op) {
  TORCH_CHECK(s.D <= cuda::kMaxHeadDim && s.Dv <= cuda::kMaxHeadDim, op,
              ": the CUDA kernels take head dims (query's and value's last dimension) up to ",
              cuda::kMaxHeadDim, ", got ", s.D, " and ", s.Dv);
}

std::tuple<at::Tensor, at::Tensor> forward_cuda(const at::Tensor& query, const at::Tensor& key,
                                                const at::Tensor& value,
                                                const std::optional<at::Tensor>& attn_mask,
                                                double dropout_p, bool is_causal, double scale,
                                                const std::optional<at::Tensor>& seed_offset) {
  const c10::cuda::CUDAGuard guard(query.device());
  return attention_forward_impl(query, key, value, attn_mask, dropout_p, is_causal, scale,
                                seed_offset, kCudaTypes, "cuda", [](const AttentionFwdParams& p) {
                                  check_head_dims(p.s, "attention_forward");
                                  cuda::attention_forward(p, c10::cuda::getCurrentCUDAStream());
                                  C10_CUDA_KERNEL_LAUNCH_CHECK();
                                });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_cuda(
    const at::Tensor& grad_out, const at::Tensor& query, const at::Tensor& key,
    const at::Tensor& value, const at::Tensor& out, const at::Tensor& lse,
    const std::optional<at::Tensor>& attn_mask, double dropout_p, bool is_causal, double scale,
    const std::optional<at::Tensor>& seed_offset) {
  const c10::cuda::CUDAGuard guard(query.device());
  return attention_backward_impl(
      grad_out, query, key, value, out, lse, attn_mask, dropout_p, is_causal, scale, seed_offset,
      kCudaTypes, "cuda", [&](const AttentionBwdParams& p) {
        check_head_dims(p.s, "attention_backward");
        at::Tensor delta = at::empty({p.s.B * p.s.Hq * p.s.Lq}, query.options().dtype(at::kFloat));
        cuda::attention_backward(p, delta.data_ptr<float>(), c10::cuda::getCurrentCUDAStream());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
}

at::Tensor probs_cuda(const at::Tensor& query, const at::Tensor& key, const at::Tensor& lse,
                      const std::optional<at::Tensor>& attn_mask, double dropout_p, bool is_causal,
                      double scale, const std::optional<at::Tensor>& seed_offset,
                      const std::optional<at::Tensor>& rows) {
  const c10::cuda::CUDAGuard guard(query.device());
  return attention_probs_impl(
      query, key, lse, attn_mask, dropout_p, is_causal, scale, seed_offset, rows, kCudaTypes,
      "cuda", [&](const AttentionProbsParams& p) {
        // The checked row indices are on the host: copy them to the device.
        const at::Tensor host = at::from_blob(const_cast<int64_t*>(p.rows), {p.R}, at::kLong);
        const at::Tensor dev = host.to(query.device());
        cuda::attention_probs(p, dev.data_ptr<int64_t>(), c10::cuda::getCurrentCUDAStream());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
}

}  // namespace

FL_CUDA_LIBRARY_IMPL(m) {
  m.impl("attention_forward", &forward_cuda);
  m.impl("attention_backward", &backward_cuda);
  m.impl("attention_probs", &probs_cuda);
}

}  // namespace ops
}  // namespace fl
