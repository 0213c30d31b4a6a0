// RNN recurrence CUDA glue: a device guard, the shared checks and allocation (rnn_common.h),
// then the kernels on the current stream, checked. Made here: the device copies of
// batch_sizes and the row offsets, the float matrix the kernels read (W_hh^T forward, W_hh
// backward; per direction) and the float state workspace. FASTLAYERS_RNN_PERSISTENT=0 forces the
// per-step kernels (the tests run both drivers).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cstdlib>
#include <cstring>

#include "fastlayers/rnn.h"
#include "ops/common.h"
#include "ops/rnn_common.h"

namespace fl {
namespace ops {
namespace {

constexpr std::initializer_list<at::ScalarType> kCudaTypes = {at::kFloat, at::kHalf, at::kBFloat16};

// The pieces both directions of time need on the device.
struct Prepared {
  at::Tensor bs, off, m, state;
  cuda::RnnCudaParams params() const {
    cuda::RnnCudaParams p{};
    p.batch_sizes = bs.data_ptr<int64_t>();
    p.offsets = off.data_ptr<int64_t>();
    p.m = m.data_ptr<float>();
    p.state = state.data_ptr<float>();
    return p;
  }
};

Prepared prepare(const RnnShape& s, const int64_t* batch_sizes, const at::Tensor& m,
                 const at::Device& device) {
  at::Tensor bs = at::empty({s.T}, at::kLong), off = at::empty({s.T + 1}, at::kLong);
  int64_t* o = off.data_ptr<int64_t>();
  o[0] = 0;
  for (int64_t t = 0; t < s.T; ++t) {
    bs.data_ptr<int64_t>()[t] = batch_sizes[t];
    o[t + 1] = o[t] + batch_sizes[t];
  }
  const auto fopts = at::TensorOptions().dtype(at::kFloat).device(device);
  return {bs.to(device), off.to(device), m.to(fopts).contiguous(),
          at::empty({s.dirs, 2, s.B, s.H}, fopts)};
}

bool persistent(const RnnShape& s) {
  const char* env = std::getenv("FASTLAYERS_RNN_PERSISTENT");
  if (env != nullptr && std::strcmp(env, "0") == 0) return false;
  return cuda::rnn_persistent_fits(s);
}

std::tuple<at::Tensor, at::Tensor> forward_cuda(const at::Tensor& input_proj,
                                                const at::Tensor& batch_sizes, const at::Tensor& h0,
                                                const at::Tensor& weight_hh,
                                                const std::optional<at::Tensor>& bias, bool relu,
                                                bool reverse) {
  const c10::cuda::CUDAGuard guard(input_proj.device());
  return rnn_forward_impl(input_proj, batch_sizes, h0, weight_hh, bias, relu, reverse, kCudaTypes,
                          "cuda", [&](const RnnFwdParams& f) {
                            const Prepared prep =
                                prepare(f.s, f.batch_sizes, weight_hh.transpose(-1, -2),
                                        input_proj.device());
                            cuda::RnnCudaParams p = prep.params();
                            p.fwd = f;
                            p.persistent = persistent(f.s);
                            cuda::rnn_forward(p, c10::cuda::getCurrentCUDAStream());
                            C10_CUDA_KERNEL_LAUNCH_CHECK();
                          });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> backward_cuda(
    const std::optional<at::Tensor>& grad_output, const std::optional<at::Tensor>& grad_hn,
    const at::Tensor& output, const at::Tensor& h0, const at::Tensor& weight_hh,
    const at::Tensor& batch_sizes, bool relu, bool reverse) {
  const c10::cuda::CUDAGuard guard(output.device());
  return rnn_backward_impl(grad_output, grad_hn, output, h0, weight_hh, batch_sizes, relu, reverse,
                           kCudaTypes, "cuda", [&](const RnnBwdParams& b) {
                             const Prepared prep =
                                 prepare(b.s, b.batch_sizes, weight_hh, output.device());
                             cuda::RnnCudaParams p = prep.params();
                             p.bwd = b;
                             p.persistent = persistent(b.s);
                             cuda::rnn_backward(p, c10::cuda::getCurrentCUDAStream());
                             C10_CUDA_KERNEL_LAUNCH_CHECK();
                           });
}

}  // namespace

FL_CUDA_LIBRARY_IMPL(m) {
  m.impl("rnn_recurrence", &forward_cuda);
  m.impl("rnn_recurrence_backward", &backward_cuda);
}

}  // namespace ops
}  // namespace fl
