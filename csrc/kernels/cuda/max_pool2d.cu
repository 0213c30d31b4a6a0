// 2-D max-pooling on CUDA, forward and backward, NCHW and NHWC; float, half, bfloat16.
//
// Forward: one thread per V consecutive outputs along the contiguous dimension (W in NCHW,
// C in NHWC). V = 16 bytes / sizeof(T) when the contiguous extent is a multiple of V and the
// pointers are 16-byte aligned, so loads (NHWC) and stores are single 16-byte accesses;
// otherwise V = 1. The window is scanned in torch's order (rows, then columns), keeping the
// first maximum or the last NaN, so values and indices match torch bit for bit.
// Backward: a gather, one thread per grad_input element, summing (in float, in a fixed
// order) grad_output over the outputs whose window covers it and whose index points at it.
// No atomics: deterministic.
//
// All element offsets are int64: tensors may exceed 2^31 elements. Grid-stride loops.

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "fastlayers/max_pool2d.h"
#include "kernels/cuda/convert.cuh"
#include "kernels/cuda/launch.cuh"

namespace fl {
namespace cuda {
namespace {

constexpr int kThreads = 256;

// V elements moved as one access of V * sizeof(T) bytes.
template <typename T, int V>
struct alignas(sizeof(T) * V) Pack {
  T v[V];
};

// torch's rule: a NaN always wins (so it propagates); otherwise strictly greater.
__device__ __forceinline__ bool takes(float v, float m) { return v > m || v != v; }

// First valid tap of a window (skipping the padding before the input) and its end.
__device__ __forceinline__ void window(int64_t o, int64_t stride, int64_t pad, int64_t k, int64_t d,
                                       int64_t size, int64_t& start, int64_t& end) {
  start = o * stride - pad;
  end = min(start + (k - 1) * d + 1, size);
  while (start < 0) start += d;
}

// [N, C, H, W] -> [N, C, OH, OW] (+ indices), thread = V consecutive ow of one row.
template <typename T, int V, bool kIdx>
__global__ void __launch_bounds__(kThreads) max_pool2d_fwd_nchw(MaxPool2dFwdParams p) {
  const MaxPool2dShape s = p.s;
  const T* __restrict__ in = static_cast<const T*>(p.input);
  T* __restrict__ out = static_cast<T*>(p.output);
  const int64_t groups = (s.OW + V - 1) / V;
  const int64_t total = s.N * s.C * s.OH * groups;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total;
       t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t ow0 = (t % groups) * V;
    const int64_t row = t / groups;  // plane * OH + oh
    const int64_t oh = row % s.OH;
    const T* src = in + (row / s.OH) * s.H * s.W;
    int64_t h0, h1;
    window(oh, s.sh, s.ph, s.kh, s.dh, s.H, h0, h1);
    float m[V];
    int64_t mi[V], w0[V], w1[V];  // V > 1 only when V divides OW: all lanes valid
#pragma unroll
    for (int v = 0; v < V; ++v) {
      m[v] = -INFINITY;
      window(ow0 + v, s.sw, s.pw, s.kw, s.dw, s.W, w0[v], w1[v]);
      mi[v] = h0 * s.W + w0[v];
    }
    for (int64_t h = h0; h < h1; h += s.dh) {
      const T* line = src + h * s.W;
#pragma unroll
      for (int v = 0; v < V; ++v) {
        for (int64_t w = w0[v]; w < w1[v]; w += s.dw) {
          const float x = to_f(line[w]);
          if (takes(x, m[v])) {
            m[v] = x;
            if (kIdx) mi[v] = h * s.W + w;
          }
        }
      }
    }
    const int64_t o = row * s.OW + ow0;
    if (V > 1) {
      Pack<T, V> pk;
#pragma unroll
      for (int v = 0; v < V; ++v) pk.v[v] = from_f<T>(m[v]);
      *reinterpret_cast<Pack<T, V>*>(out + o) = pk;
    } else {
      out[o] = from_f<T>(m[0]);
    }
    if (kIdx) {
#pragma unroll
      for (int v = 0; v < V; ++v) p.indices[o + v] = mi[v];
    }
  }
}

// [N, H, W, C] -> [N, OH, OW, C] (+ indices), thread = V consecutive channels of a pixel.
template <typename T, int V, bool kIdx>
__global__ void __launch_bounds__(kThreads) max_pool2d_fwd_nhwc(MaxPool2dFwdParams p) {
  const MaxPool2dShape s = p.s;
  const T* __restrict__ in = static_cast<const T*>(p.input);
  T* __restrict__ out = static_cast<T*>(p.output);
  const int64_t groups = s.C / V;  // the launcher picks V dividing C
  const int64_t total = s.N * s.OH * s.OW * groups;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total;
       t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c0 = (t % groups) * V;
    const int64_t q = t / groups;  // (n * OH + oh) * OW + ow
    const int64_t ow = q % s.OW, oh = (q / s.OW) % s.OH, n = q / (s.OW * s.OH);
    int64_t h0, h1, w0, w1;
    window(oh, s.sh, s.ph, s.kh, s.dh, s.H, h0, h1);
    window(ow, s.sw, s.pw, s.kw, s.dw, s.W, w0, w1);
    const T* img = in + n * s.H * s.W * s.C + c0;
    float m[V];
    int64_t mi[V];
#pragma unroll
    for (int v = 0; v < V; ++v) {
      m[v] = -INFINITY;
      mi[v] = h0 * s.W + w0;
    }
    for (int64_t h = h0; h < h1; h += s.dh) {
      for (int64_t w = w0; w < w1; w += s.dw) {
        const Pack<T, V> x = *reinterpret_cast<const Pack<T, V>*>(img + (h * s.W + w) * s.C);
#pragma unroll
        for (int v = 0; v < V; ++v) {
          const float xv = to_f(x.v[v]);
          if (takes(xv, m[v])) {
            m[v] = xv;
            if (kIdx) mi[v] = h * s.W + w;
          }
        }
      }
    }
    Pack<T, V> pk;
#pragma unroll
    for (int v = 0; v < V; ++v) pk.v[v] = from_f<T>(m[v]);
    *reinterpret_cast<Pack<T, V>*>(out + q * s.C + c0) = pk;
    if (kIdx) {
#pragma unroll
      for (int v = 0; v < V; ++v) p.indices[q * s.C + c0 + v] = mi[v];
    }
  }
}

// Outputs whose window may cover input coordinate i (torch's bounds; the index test in
// the caller removes the ones a dilation gap skips).
__device__ __forceinline__ void covering(int64_t i, int64_t stride, int64_t pad, int64_t k,
                                         int64_t d, int64_t out_size, int64_t& o0, int64_t& o1) {
  const int64_t span = (k - 1) * d + 1;
  o0 = (i + pad < span) ? 0 : (i + pad - span) / stride + 1;
  o1 = min((i + pad) / stride + 1, out_size);
}

template <typename T>
__global__ void __launch_bounds__(kThreads) max_pool2d_bwd_nchw(MaxPool2dBwdParams p) {
  const MaxPool2dShape s = p.s;
  const T* __restrict__ go = static_cast<const T*>(p.grad_output);
  T* __restrict__ gi = static_cast<T*>(p.grad_input);
  const int64_t total = s.N * s.C * s.H * s.W;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total;
       t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t w = t % s.W, h = (t / s.W) % s.H, plane = t / (s.H * s.W);
    int64_t oh0, oh1, ow0, ow1;
    covering(h, s.sh, s.ph, s.kh, s.dh, s.OH, oh0, oh1);
    covering(w, s.sw, s.pw, s.kw, s.dw, s.OW, ow0, ow1);
    const int64_t base = plane * s.OH * s.OW;
    const int64_t self = h * s.W + w;
    float acc = 0.f;
    for (int64_t oh = oh0; oh < oh1; ++oh)
      for (int64_t ow = ow0; ow < ow1; ++ow) {
        const int64_t o = base + oh * s.OW + ow;
        if (p.indices[o] == self) acc += to_f(go[o]);
      }
    gi[t] = from_f<T>(acc);
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) max_pool2d_bwd_nhwc(MaxPool2dBwdParams p) {
  const MaxPool2dShape s = p.s;
  const T* __restrict__ go = static_cast<const T*>(p.grad_output);
  T* __restrict__ gi = static_cast<T*>(p.grad_input);
  const int64_t total = s.N * s.H * s.W * s.C;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total;
       t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = t % s.C;
    const int64_t pix = t / s.C;  // (n * H + h) * W + w
    const int64_t w = pix % s.W, h = (pix / s.W) % s.H, n = pix / (s.W * s.H);
    int64_t oh0, oh1, ow0, ow1;
    covering(h, s.sh, s.ph, s.kh, s.dh, s.OH, oh0, oh1);
    covering(w, s.sw, s.pw, s.kw, s.dw, s.OW, ow0, ow1);
    const int64_t self = h * s.W + w;
    float acc = 0.f;
    for (int64_t oh = oh0; oh < oh1; ++oh)
      for (int64_t ow = ow0; ow < ow1; ++ow) {
        const int64_t o = ((n * s.OH + oh) * s.OW + ow) * s.C + c;
        if (p.indices[o] == self) acc += to_f(go[o]);
      }
    gi[t] = from_f<T>(acc);
  }
}

inline bool aligned16(const void* ptr) { return (reinterpret_cast<uintptr_t>(ptr) & 15) == 0; }

template <typename T, int V, bool kIdx>
void launch_fwd(const MaxPool2dFwdParams& p, cudaStream_t stream) {
  const MaxPool2dShape& s = p.s;
  if (s.channels_last) {
    const int64_t work = s.N * s.OH * s.OW * (s.C / V);
    FL_LAUNCH((max_pool2d_fwd_nhwc<T, V, kIdx>), grid_for(work, kThreads), kThreads, 0, stream)(p);
  } else {
    const int64_t work = s.N * s.C * s.OH * ((s.OW + V - 1) / V);
    FL_LAUNCH((max_pool2d_fwd_nchw<T, V, kIdx>), grid_for(work, kThreads), kThreads, 0, stream)(p);
  }
}

template <typename T>
void forward_t(const MaxPool2dFwdParams& p, cudaStream_t stream) {
  constexpr int V = 16 / sizeof(T);
  const MaxPool2dShape& s = p.s;
  const int64_t inner = s.channels_last ? s.C : s.OW;
  const bool vec =
      inner % V == 0 && aligned16(p.output) && (!s.channels_last || aligned16(p.input));
  if (p.indices) {
    if (vec)
      launch_fwd<T, V, true>(p, stream);
    else
      launch_fwd<T, 1, true>(p, stream);
  } else {
    if (vec)
      launch_fwd<T, V, false>(p, stream);
    else
      launch_fwd<T, 1, false>(p, stream);
  }
}

template <typename T>
void backward_t(const MaxPool2dBwdParams& p, cudaStream_t stream) {
  const MaxPool2dShape& s = p.s;
  const int64_t work = s.N * s.C * s.H * s.W;
  if (s.channels_last)
    FL_LAUNCH(max_pool2d_bwd_nhwc<T>, grid_for(work, kThreads), kThreads, 0, stream)(p);
  else
    FL_LAUNCH(max_pool2d_bwd_nchw<T>, grid_for(work, kThreads), kThreads, 0, stream)(p);
}

}  // namespace

void max_pool2d_forward(const MaxPool2dFwdParams& p, CUstream_st* stream) {
  switch (p.s.dtype) {
    case DType::kFloat32: return forward_t<float>(p, stream);
    case DType::kFloat16: return forward_t<__half>(p, stream);
    case DType::kBFloat16: return forward_t<__nv_bfloat16>(p, stream);
    default: return;  // the glue admits only the types above
  }
}

void max_pool2d_backward(const MaxPool2dBwdParams& p, CUstream_st* stream) {
  switch (p.s.dtype) {
    case DType::kFloat32: return backward_t<float>(p, stream);
    case DType::kFloat16: return backward_t<__half>(p, stream);
    case DType::kBFloat16: return backward_t<__nv_bfloat16>(p, stream);
    default: return;
  }
}

}  // namespace cuda
}  // namespace fl
