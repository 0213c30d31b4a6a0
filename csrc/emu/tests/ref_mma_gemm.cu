// Reference program: C[64, 64] = A[64, 32] @ B[32, 64] on tensor cores through the fl::ptx
// wrappers; A and B bf16, C fp32, all row-major. One block of 4 warps. A and B are staged in
// shared memory by cp.async in two k-halves, one commit group each, so the second half is in
// flight while the first is multiplied (wait_group 1, then 0). Fragments come from ldmatrix:
// .x4 for A (16x16 row-major), .x4.trans for B (two 16x8 column-major tiles read from the
// row-major k x n tile). Each warp owns a 32x32 quarter of C: 2 x 4 tiles of
// mma.m16n8k16.bf16, stored from the accumulator layout. Rows of the shared tiles are padded
// so the eight rows each ldmatrix phase reads fall in distinct banks.
// Checked against a double-precision host product within a bound on fp32 accumulation error,
// so it passes on a GPU (whose accumulation order is unspecified) as well as emulated.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/ptx.cuh"
#if defined(FL_EMU)
#include "emu/race.h"
#endif

constexpr int kM = 64, kN = 64, kK = 32;
constexpr int kLdA = kK + 8, kLdB = kN + 8;  // padded rows: 80 and 144 bytes

__global__ void mma_gemm(const uint16_t* a, const uint16_t* b, float* c) {
  __shared__ __align__(16) uint16_t as[kM][kLdA];
  __shared__ __align__(16) uint16_t bs[kK][kLdB];
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;

  // Stage s holds k in [16s, 16s + 16): for A two 16-byte chunks of each of 64 rows, for B
  // eight chunks of each of 16 rows; 128 chunks each, one per thread.
  for (int s = 0; s < 2; ++s) {
    const int ar = tid / 2, ac = 16 * s + 8 * (tid % 2);
    fl::ptx::cp_async_16(&as[ar][ac], a + ar * kK + ac);
    const int br = 16 * s + tid / 8, bc = 8 * (tid % 8);
    fl::ptx::cp_async_16(&bs[br][bc], b + br * kN + bc);
    fl::ptx::cp_async_commit();
  }

  const int m0 = 32 * (warp / 2), n0 = 32 * (warp % 2);
  float acc[2][4][4] = {};
  // ldmatrix row addresses: lanes 8j..8j+7 give the rows of matrix j. For A, matrices 0-3 are
  // (rows 0-7, k 0-7), (rows 8-15, k 0-7), (rows 0-7, k 8-15), (rows 8-15, k 8-15): registers
  // a0..a3 of the mma. For B (.trans), (k 0-7, n 0-7), (k 8-15, n 0-7), then the same for
  // n 8-15: b0, b1 of one n-tile, then of the next.
  const int row_in_pair = lane % 8 + 8 * ((lane / 8) % 2), col_half = 8 * (lane / 16);
  for (int s = 0; s < 2; ++s) {
    if (s == 0) {
      fl::ptx::cp_async_wait<1>();
    } else {
      fl::ptx::cp_async_wait<0>();
    }
    __syncthreads();  // every thread's chunks of this stage have landed
    const int k0 = 16 * s;
    uint32_t af[2][4], bf[4][2];
    for (int mt = 0; mt < 2; ++mt)
      fl::ptx::ldmatrix_x4(af[mt], &as[m0 + 16 * mt + row_in_pair][k0 + col_half]);
    for (int np = 0; np < 2; ++np) {
      uint32_t r[4];
      fl::ptx::ldmatrix_x4_trans(r, &bs[k0 + row_in_pair][n0 + 16 * np + col_half]);
      bf[2 * np][0] = r[0];
      bf[2 * np][1] = r[1];
      bf[2 * np + 1][0] = r[2];
      bf[2 * np + 1][1] = r[3];
    }
    for (int mt = 0; mt < 2; ++mt)
      for (int nt = 0; nt < 4; ++nt)
        fl::ptx::mma_m16n8k16_bf16_f32(acc[mt][nt], af[mt], bf[nt], acc[mt][nt]);
  }

  // Accumulator layout: c0, c1 at (groupID, 2 * threadID_in_group + {0, 1}), c2, c3 eight rows
  // below.
  for (int mt = 0; mt < 2; ++mt)
    for (int nt = 0; nt < 4; ++nt)
      for (int i = 0; i < 4; ++i) {
        const int row = m0 + 16 * mt + lane / 4 + 8 * (i / 2);
        const int col = n0 + 8 * nt + 2 * (lane % 4) + i % 2;
        c[row * kN + col] = acc[mt][nt][i];
      }
}

// Round to nearest even; inputs here are finite.
static uint16_t to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

static double from_bf16(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

int main() {
  std::vector<uint16_t> a(kM * kK), b(kK * kN);
  std::vector<float> c(kM * kN);
  unsigned s = 2024;
  auto next = [&] {
    return float(int((s = s * 1103515245u + 12345u) >> 8) % 2001 - 1000) / 1000.f;
  };
  for (auto& v : a) v = to_bf16(next());
  for (auto& v : b) v = to_bf16(next());
  uint16_t *da, *db;
  float* dc;
  cudaMalloc(&da, a.size() * 2);
  cudaMalloc(&db, b.size() * 2);
  cudaMalloc(&dc, c.size() * 4);
  cudaMemcpy(da, a.data(), a.size() * 2, cudaMemcpyHostToDevice);
  cudaMemcpy(db, b.data(), b.size() * 2, cudaMemcpyHostToDevice);
  auto run = [&] {
    cudaMemset(dc, 0xFF, c.size() * 4);
    FL_LAUNCH(mma_gemm, 1, 128, 0, nullptr)(da, db, dc);
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
  const cudaError_t err = cudaDeviceSynchronize();
  if (err != cudaSuccess) {
    std::printf("mma_gemm: %s\n", cudaGetErrorString(err));
    ++failures;
  }
  // bf16 products are exact in fp32; what remains is the accumulation of 32 of them (plus
  // zero), which rounds at most once per addition: |error| <= 32 * 2^-23 * sum |a * b|.
  int wrong = 0;
  double worst = 0;
  for (int i = 0; i < kM; ++i)
    for (int j = 0; j < kN; ++j) {
      double ref = 0, mag = 0;
      for (int k = 0; k < kK; ++k) {
        const double p = from_bf16(a[i * kK + k]) * from_bf16(b[k * kN + j]);
        ref += p;
        mag += std::fabs(p);
      }
      const double e = std::fabs(double(c[i * kN + j]) - ref), tol = kK * std::ldexp(mag, -23);
      if (!(e <= tol) && ++wrong <= 5)
        std::printf("mma_gemm: C[%d][%d] = %.9g, host %.9g\n", i, j, c[i * kN + j], ref);
      if (mag > 0) worst = std::fmax(worst, e / mag);
    }
  failures += wrong != 0;
  std::printf("ref_mma_gemm: %s (%d of %d outside the bound, worst error %.3g x sum|a*b|)\n",
              failures ? "FAILED" : "passed", wrong, kM * kN, worst);
  cudaFree(da);
  cudaFree(db);
  cudaFree(dc);
  return failures ? 1 : 0;
}
