// Sinusoidal positional encoding on CUDA (fastlayers/positional_encoding.h): one thread per
// element of the [outer, L, inner, E] input, grid-stride, int64 offsets. The angle and its
// sine or cosine are computed in double, as on the CPU, then rounded to the accumulation
// type (float) before the add, so both devices give the same encoding. sinpi/cospi of
// angle / pi reduce the argument exactly, without sin's slow path for huge arguments (and
// its stack frame).

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "fastlayers/positional_encoding.h"
#include "kernels/cuda/convert.cuh"
#include "kernels/cuda/launch.cuh"

namespace fl {
namespace cuda {
namespace {

constexpr int kThreads = 256;

template <typename T>
__global__ void __launch_bounds__(kThreads) positional_encoding_add(PositionalEncodingParams p) {
  const T* __restrict__ in = static_cast<const T*>(p.input);
  T* __restrict__ out = static_cast<T*>(p.output);
  const int64_t n = p.outer * p.L * p.inner * p.E;
  const double k = -log(10000.0) / double(p.E);
  for (int64_t x = blockIdx.x * int64_t(kThreads) + threadIdx.x; x < n;
       x += int64_t(gridDim.x) * kThreads) {
    const int64_t d = x % p.E, pos = (x / (p.E * p.inner)) % p.L;
    // w_i = 10000^(-2i / E) for the pair i = d / 2.
    constexpr double kInvPi = 0.31830988618379067;
    const double turns = double(pos) * exp(double(d - d % 2) * k) * kInvPi;
    const float pe = float(d % 2 == 0 ? sinpi(turns) : cospi(turns));
    out[x] = from_f<T>(to_f(in[x]) + pe);
  }
}

template <typename T>
void launch(const PositionalEncodingParams& p, cudaStream_t stream) {
  const int64_t n = p.outer * p.L * p.inner * p.E;
  FL_LAUNCH(positional_encoding_add<T>, grid_for(n, kThreads, 1 << 20), kThreads, 0, stream)(p);
}

}  // namespace

void positional_encoding(const PositionalEncodingParams& p, CUstream_st* stream) {
  switch (p.dtype) {
    case DType::kFloat32: return launch<float>(p, stream);
    case DType::kFloat16: return launch<__half>(p, stream);
    case DType::kBFloat16: return launch<__nv_bfloat16>(p, stream);
    default: return;  // the glue admits only the types above
  }
}

}  // namespace cuda
}  // namespace fl
