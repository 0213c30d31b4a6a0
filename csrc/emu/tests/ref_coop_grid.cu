// Reference program: a cooperative (persistent) kernel whose blocks keep state in shared
// memory across grid syncs. Each block fills its shared array with values of its own,
// publishes one number per round in global memory, and after each grid sync adds its
// neighbour's published number to its shared state. Blocks are all live at once, so a
// shared array that were not per block, or a grid sync that did not wait for every block,
// would give a different answer.
#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include <cstdio>
#include <vector>

#include "kernels/cuda/launch.cuh"

namespace cg = cooperative_groups;

constexpr int kRounds = 3, kThreads = 64;

__global__ void coop_rounds(long long* published, long long* out) {
  __shared__ long long state[kThreads];
  const int b = blockIdx.x, nb = gridDim.x, t = threadIdx.x;
  state[t] = 1000LL * b + t;
  for (int r = 0; r < kRounds; ++r) {
    __syncthreads();
    if (t == 0) {
      long long s = 0;
      for (int i = 0; i < kThreads; ++i) s += state[i];
      published[r * nb + b] = s;
    }
    cg::this_grid().sync();
    state[t] += published[r * nb + (b + 1) % nb];
  }
  __syncthreads();
  if (t == 0) {
    long long s = 0;
    for (int i = 0; i < kThreads; ++i) s += state[i];
    out[b] = s;
  }
}

int main() {
  const int nb = 12;
  // Host model of the same rounds.
  std::vector<std::vector<long long>> st(nb, std::vector<long long>(kThreads));
  for (int b = 0; b < nb; ++b)
    for (int t = 0; t < kThreads; ++t) st[b][t] = 1000LL * b + t;
  for (int r = 0; r < kRounds; ++r) {
    std::vector<long long> pub(nb, 0);
    for (int b = 0; b < nb; ++b)
      for (long long v : st[b]) pub[b] += v;
    for (int b = 0; b < nb; ++b)
      for (auto& v : st[b]) v += pub[(b + 1) % nb];
  }
  long long *dp, *dout;
  cudaMalloc(&dp, sizeof(long long) * kRounds * nb);
  cudaMalloc(&dout, sizeof(long long) * nb);
  FL_LAUNCH_COOPERATIVE(coop_rounds, nb, kThreads, 0, nullptr)(dp, dout);
  std::vector<long long> out(nb);
  cudaMemcpy(out.data(), dout, sizeof(long long) * nb, cudaMemcpyDeviceToHost);
  int failures = cudaGetLastError() != cudaSuccess;
  for (int b = 0; b < nb; ++b) {
    long long expect = 0;
    for (long long v : st[b]) expect += v;
    if (out[b] != expect) {
      std::printf("block %d: got %lld, expected %lld\n", b, out[b], expect);
      ++failures;
    }
  }
  std::printf("ref_coop_grid: %s\n", failures ? "FAILED" : "passed");
  cudaFree(dp);
  cudaFree(dout);
  return failures ? 1 : 0;
}
