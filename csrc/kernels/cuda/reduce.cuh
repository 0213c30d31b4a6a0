// Warp-level reductions shared by the CUDA kernels: NaN-propagating max and sums over a
// whole warp or over the `width` lanes of an aligned group (butterfly __shfl_xor_sync, so
// every lane of the group ends with the result).
#pragma once

#include <cuda_runtime.h>

namespace fl {
namespace cuda {

// NaN-propagating max (a NaN among the inputs makes the result NaN, as torch's reductions).
__device__ __forceinline__ float max_nan(float a, float b) { return (a > b || a != a) ? a : b; }

template <int width = 32>
__device__ __forceinline__ float group_max(float v) {
  for (int o = width / 2; o > 0; o >>= 1) v = max_nan(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

template <int width = 32>
__device__ __forceinline__ float group_sum(float v) {
  for (int o = width / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) { return group_max<32>(v); }
__device__ __forceinline__ float warp_sum(float v) { return group_sum<32>(v); }

}  // namespace cuda
}  // namespace fl
