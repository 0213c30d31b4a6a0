// Softmax on CUDA, forward and backward (fastlayers/softmax.h); float, half, bfloat16, with
// float accumulation.
//
// Rows (inner == 1): one warp per row; lanes stride over the row, then butterfly reductions
// (__shfl_xor_sync) give every lane the row max and sum. Columns (inner > 1): one thread per
// (outer, inner) position loops over n; neighbouring threads read neighbouring inner
// positions, so accesses coalesce. All offsets are int64; grid-stride loops.

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "fastlayers/softmax.h"
#include "kernels/cuda/convert.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/reduce.cuh"

namespace fl {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

template <typename T>
__global__ void __launch_bounds__(kThreads) softmax_fwd_rows(SoftmaxFwdParams p) {
  const T* __restrict__ in = static_cast<const T*>(p.input);
  T* __restrict__ out = static_cast<T*>(p.output);
  const int64_t n = p.s.n;
  const int lane = threadIdx.x % 32;
  for (int64_t r = blockIdx.x * int64_t(kWarps) + threadIdx.x / 32; r < p.s.outer;
       r += int64_t(gridDim.x) * kWarps) {
    const T* x = in + r * n;
    float mx = -INFINITY;
    for (int64_t j = lane; j < n; j += 32) mx = max_nan(mx, to_f(x[j]));
    mx = warp_max(mx);
    float sum = 0.f;
    for (int64_t j = lane; j < n; j += 32) sum += expf(to_f(x[j]) - mx);
    const float inv = 1.f / warp_sum(sum);
    T* y = out + r * n;
    for (int64_t j = lane; j < n; j += 32) y[j] = from_f<T>(expf(to_f(x[j]) - mx) * inv);
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) softmax_fwd_cols(SoftmaxFwdParams p) {
  const T* __restrict__ in = static_cast<const T*>(p.input);
  T* __restrict__ out = static_cast<T*>(p.output);
  const int64_t n = p.s.n, inner = p.s.inner, total = p.s.outer * inner;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total;
       t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t base = (t / inner) * n * inner + t % inner;
    float mx = -INFINITY, sum = 0.f;
    for (int64_t j = 0; j < n; ++j) mx = max_nan(mx, to_f(in[base + j * inner]));
    for (int64_t j = 0; j < n; ++j) sum += expf(to_f(in[base + j * inner]) - mx);
    const float inv = 1.f / sum;
    for (int64_t j = 0; j < n; ++j)
      out[base + j * inner] = from_f<T>(expf(to_f(in[base + j * inner]) - mx) * inv);
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) softmax_bwd_rows(SoftmaxBwdParams p) {
  const T* __restrict__ go = static_cast<const T*>(p.grad_output);
  const T* __restrict__ yv = static_cast<const T*>(p.output);
  T* __restrict__ gi = static_cast<T*>(p.grad_input);
  const int64_t n = p.s.n;
  const int lane = threadIdx.x % 32;
  for (int64_t r = blockIdx.x * int64_t(kWarps) + threadIdx.x / 32; r < p.s.outer;
       r += int64_t(gridDim.x) * kWarps) {
    const int64_t off = r * n;
    float dot = 0.f;
    for (int64_t j = lane; j < n; j += 32) dot += to_f(go[off + j]) * to_f(yv[off + j]);
    dot = warp_sum(dot);
    for (int64_t j = lane; j < n; j += 32)
      gi[off + j] = from_f<T>(to_f(yv[off + j]) * (to_f(go[off + j]) - dot));
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) softmax_bwd_cols(SoftmaxBwdParams p) {
  const T* __restrict__ go = static_cast<const T*>(p.grad_output);
  const T* __restrict__ yv = static_cast<const T*>(p.output);
  T* __restrict__ gi = static_cast<T*>(p.grad_input);
  const int64_t n = p.s.n, inner = p.s.inner, total = p.s.outer * inner;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total;
       t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t base = (t / inner) * n * inner + t % inner;
    float dot = 0.f;
    for (int64_t j = 0; j < n; ++j) dot += to_f(go[base + j * inner]) * to_f(yv[base + j * inner]);
    for (int64_t j = 0; j < n; ++j) {
      const int64_t x = base + j * inner;
      gi[x] = from_f<T>(to_f(yv[x]) * (to_f(go[x]) - dot));
    }
  }
}

template <typename T>
void forward_t(const SoftmaxFwdParams& p, cudaStream_t stream) {
  if (p.s.inner == 1) {
    const int64_t blocks = (p.s.outer + kWarps - 1) / kWarps;
    FL_LAUNCH(softmax_fwd_rows<T>, grid_for(blocks, 1), kThreads, 0, stream)(p);
  } else {
    FL_LAUNCH(softmax_fwd_cols<T>, grid_for(p.s.outer * p.s.inner, kThreads), kThreads, 0,
              stream)(p);
  }
}

template <typename T>
void backward_t(const SoftmaxBwdParams& p, cudaStream_t stream) {
  if (p.s.inner == 1) {
    const int64_t blocks = (p.s.outer + kWarps - 1) / kWarps;
    FL_LAUNCH(softmax_bwd_rows<T>, grid_for(blocks, 1), kThreads, 0, stream)(p);
  } else {
    FL_LAUNCH(softmax_bwd_cols<T>, grid_for(p.s.outer * p.s.inner, kThreads), kThreads, 0,
              stream)(p);
  }
}

}  // namespace

void softmax_forward(const SoftmaxFwdParams& p, CUstream_st* stream) {
  switch (p.s.dtype) {
    case DType::kFloat32: return forward_t<float>(p, stream);
    case DType::kFloat16: return forward_t<__half>(p, stream);
    case DType::kBFloat16: return forward_t<__nv_bfloat16>(p, stream);
    default: return;  // the glue admits only the types above
  }
}

void softmax_backward(const SoftmaxBwdParams& p, CUstream_st* stream) {
  switch (p.s.dtype) {
    case DType::kFloat32: return backward_t<float>(p, stream);
    case DType::kFloat16: return backward_t<__half>(p, stream);
    case DType::kBFloat16: return backward_t<__nv_bfloat16>(p, stream);
    default: return;
  }
}

}  // namespace cuda
}  // namespace fl
