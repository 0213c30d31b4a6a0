// Reference program: shared-memory tiled SGEMM, C[M, N] = A[M, K] @ B[K, N] (row-major).
// A block computes a kTile x kTile tile of C; per step it stages a tile of A and of B in
// shared memory. Two barriers protect the tiles: the first so no thread reads a tile before
// all of it is written, the second so no thread overwrites it while others still read it.
// Built with FL_REF_DROP_BARRIER=1 or 2, one of them is missing: race mode must flag it.
// Exact answer: small integer inputs, so every order of float additions gives the same bits.
#include <cuda_runtime.h>

#include <cstdio>
#include <vector>

#include "kernels/cuda/launch.cuh"
#if defined(FL_EMU)
#include "emu/race.h"
#endif

#ifndef FL_REF_DROP_BARRIER
#define FL_REF_DROP_BARRIER 0
#endif

constexpr int kTile = 16;

__global__ void sgemm_tiled(const float* a, const float* b, float* c, int M, int N, int K) {
  __shared__ float as[kTile][kTile];
  __shared__ float bs[kTile][kTile];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int row = blockIdx.y * kTile + ty, col = blockIdx.x * kTile + tx;
  float acc = 0.f;
  for (int k0 = 0; k0 < K; k0 += kTile) {
    as[ty][tx] = (row < M && k0 + tx < K) ? a[int64_t(row) * K + k0 + tx] : 0.f;
    bs[ty][tx] = (k0 + ty < K && col < N) ? b[int64_t(k0 + ty) * N + col] : 0.f;
    if (FL_REF_DROP_BARRIER != 1) __syncthreads();
    for (int k = 0; k < kTile; ++k) acc += as[ty][k] * bs[k][tx];
    if (FL_REF_DROP_BARRIER != 2) __syncthreads();
  }
  if (row < M && col < N) c[int64_t(row) * N + col] = acc;
}

int main() {
  const int M = 37, N = 45, K = 50;  // not multiples of the tile: edge tiles are partial
  std::vector<float> a(M * K), b(K * N), c(M * N), ref(M * N, 0.f);
  unsigned s = 12345;
  auto next = [&] { return float(int((s = s * 1103515245u + 12345u) >> 16) % 7 - 3); };
  for (auto& v : a) v = next();
  for (auto& v : b) v = next();
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j)
      for (int k = 0; k < K; ++k) ref[i * N + j] += a[i * K + k] * b[k * N + j];
  float *da, *db, *dc;
  cudaMalloc(&da, a.size() * 4);
  cudaMalloc(&db, b.size() * 4);
  cudaMalloc(&dc, c.size() * 4);
  cudaMemcpy(da, a.data(), a.size() * 4, cudaMemcpyHostToDevice);
  cudaMemcpy(db, b.data(), b.size() * 4, cudaMemcpyHostToDevice);
  const dim3 grid((N + kTile - 1) / kTile, (M + kTile - 1) / kTile), block(kTile, kTile);
  auto run = [&] {
    cudaMemset(dc, 0xFF, c.size() * 4);
    FL_LAUNCH(sgemm_tiled, grid, block, 0, nullptr)(da, db, dc, M, N, K);
    cudaMemcpy(c.data(), dc, c.size() * 4, cudaMemcpyDeviceToHost);
  };
  int failures = 0;
#if defined(FL_EMU)
  const std::string race = fl::emu::race_check(run, {{c.data(), c.size() * 4}});
  if (!race.empty()) {
    std::printf("%s\n", race.c_str());
    ++failures;
  }
#endif
  run();
  if (cudaGetLastError() != cudaSuccess) ++failures;
  int wrong = 0;
  for (int i = 0; i < M * N; ++i) wrong += c[i] != ref[i];
  if (wrong)
    std::printf("sgemm_tiled: %d of %d outputs differ from the host product\n", wrong, M * N);
  failures += wrong != 0;
  std::printf("ref_sgemm_tiled (barrier dropped: %d): %s\n", FL_REF_DROP_BARRIER,
              failures ? "FAILED" : "passed");
  cudaFree(da);
  cudaFree(db);
  cudaFree(dc);
  return failures ? 1 : 0;
}
