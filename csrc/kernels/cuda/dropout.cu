// Dropout on CUDA (fastlayers/dropout.h): one thread per group of 4 elements (one Philox
// call gives their 4 keep bits), grid-stride, int64 indices. Computes in float (double for
// double), as the CPU kernel, so both devices give the same values for the same seed.
// Contiguous tensors move a full group whose pointers are aligned as one vector of 4
// elements (a 16-byte access for float); any other layout seeks each group's first element
// in logical order and steps through the other three (DropoutCursor).

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "fastlayers/dropout.h"
#include "fastlayers/dropout_cursor.h"
#include "fastlayers/philox.h"
#include "kernels/cuda/convert.cuh"
#include "kernels/cuda/launch.cuh"

namespace fl {
namespace cuda {
namespace {

constexpr int kThreads = 256;

// Compute type: double for double, else float.
template <typename T>
struct Acc {
  using type = float;
  __device__ __forceinline__ static float load(T x) { return to_f(x); }
  __device__ __forceinline__ static T store(float v) { return from_f<T>(v); }
};
template <>
struct Acc<double> {
  using type = double;
  __device__ __forceinline__ static double load(double x) { return x; }
  __device__ __forceinline__ static double store(double v) { return v; }
};

// A group of 4 elements as one aligned vector access.
template <typename T>
struct alignas(4 * sizeof(T)) Pack4 {
  T v[4];
};

template <typename T>
__device__ __forceinline__ T drop(T x, unsigned bits, int i, typename Acc<T>::type scale) {
  using A = typename Acc<T>::type;
  // x * 0 for a dropped element, not 0: NaN and Inf give NaN, as torch's input * mask.
  return Acc<T>::store(Acc<T>::load(x) * ((bits >> i) & 1u ? scale : A(0)));
}

// One thread per group of 4 elements, grid-stride. kDense: contiguous input and output,
// where `aligned` (both 4 * sizeof(T)-byte aligned) lets every full group be one vector
// access; else any strided layout, walked by DropoutCursor from the group's first element.
template <typename T, bool kDense>
__global__ void __launch_bounds__(kThreads) dropout_kernel(DropoutParams p, bool aligned) {
  using A = typename Acc<T>::type;
  const T* __restrict__ in = static_cast<const T*>(p.input);
  T* __restrict__ out = static_cast<T*>(p.output);
  const DropoutStream ds{p.seed, p.offset};
  const A scale = A(p.scale);
  const int64_t groups = (p.n + 3) / 4;
  for (int64_t g = blockIdx.x * int64_t(kThreads) + threadIdx.x; g < groups;
       g += int64_t(gridDim.x) * kThreads) {
    const unsigned bits = ds.keep4(uint64_t(g), p.keep_prob);
    const int64_t e0 = 4 * g;
    if constexpr (kDense) {
      if (aligned && e0 + 4 <= p.n) {
        const Pack4<T> x = *reinterpret_cast<const Pack4<T>*>(in + e0);
        Pack4<T> y;
#pragma unroll
        for (int i = 0; i < 4; ++i) y.v[i] = drop(x.v[i], bits, i, scale);
        *reinterpret_cast<Pack4<T>*>(out + e0) = y;
      } else {
        for (int i = 0; i < 4 && e0 + i < p.n; ++i) out[e0 + i] = drop(in[e0 + i], bits, i, scale);
      }
    } else {
      DropoutCursor cur;
      cur.seek(p, e0);
      for (int i = 0; i < 4 && e0 + i < p.n; ++i) {
        out[cur.out_off] = drop(in[cur.in_off], bits, i, scale);
        cur.next(p);
      }
    }
  }
}

template <typename T>
void launch(const DropoutParams& p, cudaStream_t stream) {
  const unsigned grid = grid_for((p.n + 3) / 4, kThreads, 1 << 20);
  if (p.dense) {
    const uintptr_t a =
        reinterpret_cast<uintptr_t>(p.input) | reinterpret_cast<uintptr_t>(p.output);
    FL_LAUNCH((dropout_kernel<T, true>), grid, kThreads, 0, stream)(p, a % sizeof(Pack4<T>) == 0);
  } else {
    FL_LAUNCH((dropout_kernel<T, false>), grid, kThreads, 0, stream)(p, false);
  }
}

}  // namespace

void dropout(const DropoutParams& p, CUstream_st* stream) {
  switch (p.dtype) {
    case DType::kFloat32: return launch<float>(p, stream);
    case DType::kFloat64: return launch<double>(p, stream);
    case DType::kFloat16: return launch<__half>(p, stream);
    case DType::kBFloat16: return launch<__nv_bfloat16>(p, stream);
  }
}

}  // namespace cuda
}  // namespace fl
