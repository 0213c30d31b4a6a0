// Reference program: sum of an int array by warp-shuffle reduction. Each thread sums a
// grid-stride slice, each warp reduces with __shfl_xor_sync (a butterfly: every lane ends
// with the total), warp totals meet in shared memory, warp 0 reduces them with
// __shfl_down_sync, and thread 0 adds the block's total to the result with one atomicAdd.
// Integer sums are exact in any order: the known answer is n(n-1)/2 mod 2^32 of 0..n-1.
#include <cuda_runtime.h>

#include <cstdio>
#include <vector>

#include "kernels/cuda/launch.cuh"
#if defined(FL_EMU)
#include "emu/race.h"
#endif

__global__ void reduce_sum(const unsigned* x, int64_t n, unsigned* total) {
  __shared__ unsigned warp_sums[32];
  unsigned v = 0;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    v += x[i];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  if (warp == 0) {
    const int warps = (blockDim.x + 31) / 32;
    v = lane < warps ? warp_sums[lane] : 0u;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    if (lane == 0) atomicAdd(total, v);
  }
}

int main() {
  const int64_t n = 100003;
  std::vector<unsigned> x(n);
  for (int64_t i = 0; i < n; ++i) x[i] = unsigned(i);
  const unsigned expect = unsigned(uint64_t(n) * uint64_t(n - 1) / 2);
  unsigned *dx, *dt;
  cudaMalloc(&dx, n * 4);
  cudaMalloc(&dt, 4);
  cudaMemcpy(dx, x.data(), n * 4, cudaMemcpyHostToDevice);
  unsigned got = 0;
  int failures = 0;
  for (int threads : {256, 96}) {  // 96: a block of three warps
    auto run = [&] {
      cudaMemset(dt, 0, 4);
      FL_LAUNCH(reduce_sum, 37, threads, 0, nullptr)(dx, n, dt);
      cudaMemcpy(&got, dt, 4, cudaMemcpyDeviceToHost);
    };
#if defined(FL_EMU)
    const std::string race = fl::emu::race_check(run, {{&got, 4}});
    if (!race.empty()) {
      std::printf("%s\n", race.c_str());
      ++failures;
    }
#endif
    run();
    if (cudaGetLastError() != cudaSuccess || got != expect) {
      std::printf("reduce_sum with %d threads: got %u, expected %u\n", threads, got, expect);
      ++failures;
    }
  }
  std::printf("ref_warp_reduce: %s\n", failures ? "FAILED" : "passed");
  cudaFree(dx);
  cudaFree(dt);
  return failures ? 1 : 0;
}
