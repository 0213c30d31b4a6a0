// The emulator's fl::ptx wrappers (emu/ptx.h) run in emulated warps, each against a host
// model of the instruction:
//   mma (bf16, f16, s8): random A/B/C placed in fragments by fl::emu::layout (which
//     test_emu_ptx pins to the PTX ISA and to CuTe), D compared with a host product;
//   ldmatrix x1/x2/x4, plain and .trans: rows at scattered, permuted addresses of a shared
//     tile of distinct values; the lanes whose addresses the instruction ignores pass
//     misaligned ones;
//   cp.async: the destination keeps its old bytes until the wait that covers its group,
//     wait_group N lands exactly the older groups, zfill with src-size 0, 5 and 16;
//   bar.sync: two producer/consumer warp pairs on separate named barriers;
//   misuse is reported: mma in a partial warp, a misaligned ldmatrix row, a zero bar.sync
//     count.
// Every kernel runs under each race schedule (forward, reverse, shuffled): results must not
// depend on the order the threads run in. Emulator only.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "emu/race.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/ptx.cuh"

#if !defined(FL_EMU)
#error "test_emu_ptx_warp tests the emulator's PTX wrappers: build it with -DFL_EMU"
#endif

namespace {

namespace L = fl::emu::layout;

int g_failures = 0, g_checks = 0;

void check(bool ok, const std::string& what) {
  ++g_checks;
  if (!ok && ++g_failures <= 20) std::fprintf(stderr, "FAIL: %s\n", what.c_str());
}

// Kernels report failed expectations here: a count and the first failing source line.
struct Status {
  int fails, first_line;
};

__device__ void expect(Status* st, bool ok, int line) {
  if (ok) return;
  atomicAdd(&st->fails, 1);
  atomicCAS(&st->first_line, 0, line);
}
#define EXPECT(st, cond) expect(st, (cond), __LINE__)

// Runs `launch` once per race schedule and checks the outputs agree between schedules.
void under_every_schedule(const char* name, const std::function<void()>& launch,
                          const std::vector<fl::emu::Output>& outputs) {
  const std::string race = fl::emu::race_check(launch, outputs);
  check(race.empty(), std::string(name) + ": " + race);
  std::string message;
  check(fl::emu::take_error(&message) == 0, std::string(name) + ": " + message);
}

uint64_t g_rng = 0x9e3779b97f4a7c15ull;
uint32_t rnd() {
  g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
  return uint32_t(g_rng >> 33);
}

// ------------------------------------------------------------------------------------------
// mma. Each warp of the grid multiplies its own tile: A row-major, B stored as B[k][n], C and
// D row-major m x n.

enum class Kind { kBf16, kF16 };

template <Kind kKind>
__global__ void mma_m16n8k16_kernel(const uint16_t* A, const uint16_t* B, const float* C,
                                    float* D) {
  const int warp = (blockIdx.x * blockDim.x + threadIdx.x) / 32, lane = threadIdx.x % 32;
  A += warp * 16 * 16;
  B += warp * 16 * 8;
  C += warp * 16 * 8;
  D += warp * 16 * 8;
  uint32_t a[4] = {}, b[2] = {};
  float c[4], d[4];
  for (int i = 0; i < 8; ++i) {
    const auto p = L::mma_m16n8k16_a(lane, i);
    a[i / 2] |= uint32_t(A[p.row * 16 + p.col]) << (16 * (i % 2));
  }
  for (int i = 0; i < 4; ++i) {
    const auto p = L::mma_m16n8k16_b(lane, i), q = L::mma_m16n8_c(lane, i);
    b[i / 2] |= uint32_t(B[p.row * 8 + p.col]) << (16 * (i % 2));
    c[i] = C[q.row * 8 + q.col];
  }
  if constexpr (kKind == Kind::kBf16) {
    fl::ptx::mma_m16n8k16_bf16_f32(d, a, b, c);
  } else {
    fl::ptx::mma_m16n8k16_f16_f32(d, a, b, c);
  }
  for (int i = 0; i < 4; ++i) {
    const auto q = L::mma_m16n8_c(lane, i);
    D[q.row * 8 + q.col] = d[i];
  }
}

__global__ void mma_m16n8k32_s8_kernel(const int8_t* A, const int8_t* B, const int32_t* C,
                                       int32_t* D) {
  const int warp = (blockIdx.x * blockDim.x + threadIdx.x) / 32, lane = threadIdx.x % 32;
  A += warp * 16 * 32;
  B += warp * 32 * 8;
  C += warp * 16 * 8;
  D += warp * 16 * 8;
  uint32_t a[4] = {}, b[2] = {};
  int32_t c[4], d[4];
  for (int i = 0; i < 16; ++i) {
    const auto p = L::mma_m16n8k32_a(lane, i);
    a[i / 4] |= uint32_t(uint8_t(A[p.row * 32 + p.col])) << (8 * (i % 4));
  }
  for (int i = 0; i < 8; ++i) {
    const auto p = L::mma_m16n8k32_b(lane, i);
    b[i / 4] |= uint32_t(uint8_t(B[p.row * 8 + p.col])) << (8 * (i % 4));
  }
  for (int i = 0; i < 4; ++i) {
    const auto q = L::mma_m16n8_c(lane, i);
    c[i] = C[q.row * 8 + q.col];
  }
  fl::ptx::mma_m16n8k32_s8_s32(d, a, b, c);
  for (int i = 0; i < 4; ++i) {
    const auto q = L::mma_m16n8_c(lane, i);
    D[q.row * 8 + q.col] = d[i];
  }
}

float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// 16-bit values of either format from sign, unbiased exponent and mantissa bits. Exponents
// are kept within a few binades, so every product and every sum of 16 of them plus C is
// exact in double: the reference below is then the correctly rounded result, whatever order
// the emulator adds in.
uint16_t make_bf16(int exp) {
  return uint16_t((rnd() & 1) << 15 | (127 + exp) << 7 | (rnd() & 0x7f));
}
uint16_t make_f16(int exp) {
  return uint16_t((rnd() & 1) << 15 | (15 + exp) << 10 | (rnd() & 0x3ff));
}
double host_bf16(uint16_t h) { return bits_float(uint32_t(h) << 16); }
double host_f16(uint16_t h) {
  const int exp = (h >> 10) & 0x1f, man = h & 0x3ff;
  const double mag = exp ? std::ldexp(1024 + man, exp - 25) : std::ldexp(man, -24);
  return (h >> 15) ? -mag : mag;
}

template <Kind kKind>
void test_mma_m16n8k16(const char* name, bool subnormal_a) {
  const int warps = 6;  // 3 blocks of 2 warps
  std::vector<uint16_t> A(warps * 256), B(warps * 128);
  std::vector<float> C(warps * 128), D(warps * 128);
  for (auto& v : A) {
    const int e = int(rnd() % 13) - 6;
    v = kKind == Kind::kBf16 ? make_bf16(e) : subnormal_a ? uint16_t(rnd() & 0x83ff) : make_f16(e);
  }
  for (auto& v : B)
    v = kKind == Kind::kBf16 ? make_bf16(int(rnd() % 13) - 6) : make_f16(int(rnd() % 13) - 6);
  for (auto& v : C)
    v = subnormal_a ? 0.f
                    : bits_float((rnd() & 1) << 31 | (127 + rnd() % 7) << 23 | (rnd() & 0x7fffff));
  A[5] = 0;  // zeros and negative zeros are elements too
  B[7] = 0x8000;
  uint16_t *dA, *dB;
  float *dC, *dD;
  cudaMalloc(&dA, A.size() * 2);
  cudaMalloc(&dB, B.size() * 2);
  cudaMalloc(&dC, C.size() * 4);
  cudaMalloc(&dD, D.size() * 4);
  cudaMemcpy(dA, A.data(), A.size() * 2, cudaMemcpyHostToDevice);
  cudaMemcpy(dB, B.data(), B.size() * 2, cudaMemcpyHostToDevice);
  cudaMemcpy(dC, C.data(), C.size() * 4, cudaMemcpyHostToDevice);
  under_every_schedule(name,
                       [&] {
                         cudaMemset(dD, 0xFF, D.size() * 4);
                         FL_LAUNCH(mma_m16n8k16_kernel<kKind>, warps / 2, 64, 0, nullptr)(dA, dB,
                                                                                          dC, dD);
                         cudaMemcpy(D.data(), dD, D.size() * 4, cudaMemcpyDeviceToHost);
                       },
                       {{D.data(), D.size() * 4}});
  int wrong = 0;
  for (int w = 0; w < warps; ++w)
    for (int m = 0; m < 16; ++m)
      for (int n = 0; n < 8; ++n) {
        double acc = C[w * 128 + m * 8 + n];
        for (int k = 0; k < 16; ++k) {
          const uint16_t x = A[w * 256 + m * 16 + k], y = B[w * 128 + k * 8 + n];
          acc += kKind == Kind::kBf16 ? host_bf16(x) * host_bf16(y) : host_f16(x) * host_f16(y);
        }
        const float got = D[w * 128 + m * 8 + n], want = float(acc);
        if (std::memcmp(&got, &want, 4) != 0 && ++wrong <= 3)
          std::fprintf(stderr, "%s: warp %d D[%d][%d] = %.9g, host %.9g\n", name, w, m, n, got,
                       want);
      }
  check(wrong == 0, std::string(name) + ": " + std::to_string(wrong) + " of D differ");
  cudaFree(dA);
  cudaFree(dB);
  cudaFree(dC);
  cudaFree(dD);
}

void test_mma_s8() {
  const int warps = 4;  // 2 blocks of 2 warps
  std::vector<int8_t> A(warps * 512), B(warps * 256);
  std::vector<int32_t> C(warps * 128), D(warps * 128);
  for (auto& v : A) v = int8_t(rnd());
  for (auto& v : B) v = int8_t(rnd());
  for (auto& v : C) v = int32_t(rnd());
  // Sums past the int32 range must wrap: the extremes of A and B, C at the edges.
  for (int k = 0; k < 32; ++k) {
    A[0 * 32 + k] = -128, B[k * 8 + 0] = -128;  // 32 * 2^14 = 2^19 on top of C
    A[1 * 32 + k] = 127, B[k * 8 + 1] = -128;
  }
  C[0 * 8 + 0] = INT32_MAX - 1000;
  C[1 * 8 + 1] = INT32_MIN + 1000;
  int8_t *dA, *dB;
  int32_t *dC, *dD;
  cudaMalloc(&dA, A.size());
  cudaMalloc(&dB, B.size());
  cudaMalloc(&dC, C.size() * 4);
  cudaMalloc(&dD, D.size() * 4);
  cudaMemcpy(dA, A.data(), A.size(), cudaMemcpyHostToDevice);
  cudaMemcpy(dB, B.data(), B.size(), cudaMemcpyHostToDevice);
  cudaMemcpy(dC, C.data(), C.size() * 4, cudaMemcpyHostToDevice);
  under_every_schedule("mma m16n8k32 s8",
                       [&] {
                         cudaMemset(dD, 0xFF, D.size() * 4);
                         FL_LAUNCH(mma_m16n8k32_s8_kernel, warps / 2, 64, 0, nullptr)(dA, dB, dC,
                                                                                      dD);
                         cudaMemcpy(D.data(), dD, D.size() * 4, cudaMemcpyDeviceToHost);
                       },
                       {{D.data(), D.size() * 4}});
  int wrong = 0;
  for (int w = 0; w < warps; ++w)
    for (int m = 0; m < 16; ++m)
      for (int n = 0; n < 8; ++n) {
        int64_t acc = C[w * 128 + m * 8 + n];
        for (int k = 0; k < 32; ++k)
          acc += int64_t(A[w * 512 + m * 32 + k]) * B[w * 256 + k * 8 + n];
        wrong += D[w * 128 + m * 8 + n] != int32_t(uint32_t(acc));
      }
  check(wrong == 0, "mma m16n8k32 s8: " + std::to_string(wrong) + " of D differ");
  check(D[0] == int32_t(uint32_t(int64_t(INT32_MAX) - 1000 + (1 << 19))) && D[0] < 0,
        "mma m16n8k32 s8: no wrap-around past INT32_MAX");
  cudaFree(dA);
  cudaFree(dB);
  cudaFree(dC);
  cudaFree(dD);
}

// ------------------------------------------------------------------------------------------
// ldmatrix. The tile's rows are 24 elements apart (48 bytes) and each lane's row is a
// permutation of its lane number, so rows must be fetched from the address each lane gave.

constexpr int kTileRows = 32, kTileLd = 24;

int tile_row_of(int lane) { return (lane * 7 + 3) % kTileRows; }
uint16_t tile_value(int row, int col) { return uint16_t(0x1000 + row * kTileLd + col); }

// out[variant][lane][register]; variants x1, x2, x4, x1.trans, x2.trans, x4.trans.
__global__ void ldmatrix_kernel(uint32_t* out) {
  __shared__ __align__(16) uint16_t tile[kTileRows][kTileLd];
  const int lane = threadIdx.x;
  for (int c = 0; c < kTileLd; ++c) tile[lane][c] = tile_value(lane, c);
  __syncthreads();
  const char* mine = reinterpret_cast<const char*>(&tile[tile_row_of(lane)][8]);
  auto row = [&](int n) { return lane < 8 * n ? mine : mine + 1; };  // unused: misaligned
  uint32_t r1[1], r2[2], r4[4];
  fl::ptx::ldmatrix_x1(r1, row(1));
  out[(0 * 32 + lane) * 4] = r1[0];
  fl::ptx::ldmatrix_x2(r2, row(2));
  for (int j = 0; j < 2; ++j) out[(1 * 32 + lane) * 4 + j] = r2[j];
  fl::ptx::ldmatrix_x4(r4, row(4));
  for (int j = 0; j < 4; ++j) out[(2 * 32 + lane) * 4 + j] = r4[j];
  fl::ptx::ldmatrix_x1_trans(r1, row(1));
  out[(3 * 32 + lane) * 4] = r1[0];
  fl::ptx::ldmatrix_x2_trans(r2, row(2));
  for (int j = 0; j < 2; ++j) out[(4 * 32 + lane) * 4 + j] = r2[j];
  fl::ptx::ldmatrix_x4_trans(r4, row(4));
  for (int j = 0; j < 4; ++j) out[(5 * 32 + lane) * 4 + j] = r4[j];
}

void test_ldmatrix() {
  std::vector<uint32_t> out(6 * 32 * 4);
  uint32_t* d;
  cudaMalloc(&d, out.size() * 4);
  under_every_schedule("ldmatrix",
                       [&] {
                         cudaMemset(d, 0, out.size() * 4);
                         FL_LAUNCH(ldmatrix_kernel, 1, 32, 0, nullptr)(d);
                         cudaMemcpy(out.data(), d, out.size() * 4, cudaMemcpyDeviceToHost);
                       },
                       {{out.data(), out.size() * 4}});
  // The ISA: thread t receives, in register j, elements 2(t%4) and 2(t%4)+1 of row t/4 of
  // matrix j, whose row r was addressed by lane 8j + r; with .trans, element t/4 of rows
  // 2(t%4) and 2(t%4)+1 (a column of the block in memory).
  const int counts[3] = {1, 2, 4};
  for (int v = 0; v < 6; ++v) {
    const int n = counts[v % 3];
    const bool trans = v >= 3;
    int wrong = 0;
    for (int t = 0; t < 32; ++t)
      for (int j = 0; j < n; ++j)
        for (int e = 0; e < 2; ++e) {
          const int r = trans ? 2 * (t % 4) + e : t / 4, col = trans ? t / 4 : 2 * (t % 4) + e;
          const uint16_t want = tile_value(tile_row_of(8 * j + r), 8 + col);
          wrong += uint16_t(out[(v * 32 + t) * 4 + j] >> (16 * e)) != want;
        }
    check(wrong == 0, "ldmatrix.x" + std::to_string(n) + (trans ? ".trans" : "") + ": " +
                          std::to_string(wrong) + " elements differ");
  }
  cudaFree(d);
}

// ------------------------------------------------------------------------------------------
// cp.async. Each thread copies into its own 96 bytes of shared memory from its own 96 bytes
// of global memory, and checks what it sees before and after each wait.

constexpr int kSlot = 96;

__device__ bool bytes_are(const uint8_t* p, int n, uint8_t v) {
  for (int i = 0; i < n; ++i)
    if (p[i] != v) return false;
  return true;
}

__device__ bool bytes_equal(const uint8_t* p, const uint8_t* q, int n) {
  return std::memcmp(p, q, n) == 0;
}

__global__ void cp_async_kernel(const uint8_t* g, Status* st) {
  __shared__ __align__(16) uint8_t buf[64][kSlot];
  uint8_t* mine = buf[threadIdx.x];
  const uint8_t* src = g + threadIdx.x * kSlot;
  std::memset(mine, 0xAB, kSlot);

  // Three groups: 16 bytes at 0, 8 at 16, 4 at 24.
  fl::ptx::cp_async_16(mine, src);
  fl::ptx::cp_async_commit();
  EXPECT(st, bytes_are(mine, 16, 0xAB));  // issued, not waited for: old contents
  fl::ptx::cp_async_8(mine + 16, src + 16);
  fl::ptx::cp_async_commit();
  fl::ptx::cp_async_4(mine + 24, src + 24);
  fl::ptx::cp_async_commit();
  EXPECT(st, bytes_are(mine, 28, 0xAB));
  fl::ptx::cp_async_wait<2>();  // the oldest group only
  EXPECT(st, bytes_equal(mine, src, 16) && bytes_are(mine + 16, 12, 0xAB));
  fl::ptx::cp_async_wait<1>();
  EXPECT(st, bytes_equal(mine, src, 24) && bytes_are(mine + 24, 4, 0xAB));
  fl::ptx::cp_async_wait<0>();
  EXPECT(st, bytes_equal(mine, src, 28) && bytes_are(mine + 28, 4, 0xAB));

  // zfill, left uncommitted: wait_all commits them first.
  fl::ptx::cp_async_16_zfill(mine + 32, src + 32, 0);
  fl::ptx::cp_async_16_zfill(mine + 48, src + 48, 5);
  fl::ptx::cp_async_16_zfill(mine + 64, src + 64, 16);
  EXPECT(st, bytes_are(mine + 32, 48, 0xAB));
  fl::ptx::cp_async_wait_all();
  EXPECT(st, bytes_are(mine + 32, 16, 0));
  EXPECT(st, bytes_equal(mine + 48, src + 48, 5) && bytes_are(mine + 53, 11, 0));
  EXPECT(st, bytes_equal(mine + 64, src + 64, 16) && bytes_are(mine + 80, 16, 0xAB));
}

void test_cp_async() {
  std::vector<uint8_t> g(64 * kSlot);
  for (auto& v : g) v = uint8_t(rnd() % 0xAA + 1);  // never 0 or 0xAB
  uint8_t* dg;
  Status* dst;
  Status st;
  cudaMalloc(&dg, g.size());
  cudaMalloc(&dst, sizeof(Status));
  cudaMemcpy(dg, g.data(), g.size(), cudaMemcpyHostToDevice);
  under_every_schedule("cp.async",
                       [&] {
                         cudaMemset(dst, 0, sizeof(Status));
                         FL_LAUNCH(cp_async_kernel, 2, 64, 0, nullptr)(dg, dst);
                         cudaMemcpy(&st, dst, sizeof st, cudaMemcpyDeviceToHost);
                       },
                       {{&st, sizeof st}});
  check(st.fails == 0, "cp.async: " + std::to_string(st.fails) +
                           " failed expectations, first at line " + std::to_string(st.first_line));
  cudaFree(dg);
  cudaFree(dst);
}

// ------------------------------------------------------------------------------------------
// bar.sync. Warps 0 and 1 are a producer/consumer pair on barrier 1, warps 2 and 3 on
// barrier 2, each barrier for 64 threads. Per round the producer fills its box, both meet,
// the consumer reads another lane's entry, both meet again before the next round overwrites
// it. Without the barriers the consumer reads poison (shared memory starts as 0xFF bytes) or
// a stale round, in one of the schedules.

__global__ void named_barrier_kernel(Status* st) {
  __shared__ int box[2][32];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, pair = warp / 2;
  for (int round = 0; round < 4; ++round) {
    if (warp % 2 == 0) box[pair][lane] = 1000 * pair + 100 * round + lane;
    fl::ptx::bar_sync(1 + pair, 64);
    if (warp % 2 == 1) EXPECT(st, box[pair][lane ^ 5] == 1000 * pair + 100 * round + (lane ^ 5));
    fl::ptx::bar_sync(1 + pair, 64);
  }
}

void test_named_barrier() {
  Status* dst;
  Status st;
  cudaMalloc(&dst, sizeof(Status));
  under_every_schedule("bar.sync",
                       [&] {
                         cudaMemset(dst, 0, sizeof(Status));
                         FL_LAUNCH(named_barrier_kernel, 3, 128, 0, nullptr)(dst);
                         cudaMemcpy(&st, dst, sizeof st, cudaMemcpyDeviceToHost);
                       },
                       {{&st, sizeof st}});
  check(st.fails == 0, "bar.sync: " + std::to_string(st.fails) +
                           " failed expectations, first at line " + std::to_string(st.first_line));
  cudaFree(dst);
}

// ------------------------------------------------------------------------------------------
// Misuse the GPU leaves undefined is an error here, with a message naming the instruction.

__global__ void mma_partial_warp_kernel() {
  uint32_t a[4] = {}, b[2] = {};
  float c[4] = {}, d[4];
  fl::ptx::mma_m16n8k16_bf16_f32(d, a, b, c);
}

__global__ void ldmatrix_misaligned_kernel() {
  __shared__ __align__(16) uint16_t tile[8][8];
  uint32_t r[1];
  fl::ptx::ldmatrix_x1(
      r, reinterpret_cast<const char*>(tile[threadIdx.x % 8]) + (threadIdx.x == 3 ? 2 : 0));
}

__global__ void bar_sync_zero_kernel() { fl::ptx::bar_sync(1, 0); }

void expect_error(const char* name, const std::function<void()>& launch, const char* needle) {
  launch();
  std::string message;
  const int code = fl::emu::take_error(&message);
  check(
      code != 0 && message.find(needle) != std::string::npos,
      std::string(name) + ": expected an error mentioning '" + needle + "', got '" + message + "'");
}

void test_errors() {
  expect_error(
      "mma in a 16-thread block", [] { FL_LAUNCH(mma_partial_warp_kernel, 1, 16, 0, nullptr)(); },
      "needs all 32 lanes");
  expect_error(
      "ldmatrix misaligned row", [] { FL_LAUNCH(ldmatrix_misaligned_kernel, 1, 32, 0, nullptr)(); },
      "lane 3 is not 16-byte aligned");
  expect_error(
      "bar.sync count 0", [] { FL_LAUNCH(bar_sync_zero_kernel, 1, 64, 0, nullptr)(); },
      "thread count 0");
}

}  // namespace

int main() {
  test_mma_m16n8k16<Kind::kBf16>("mma m16n8k16 bf16", false);
  test_mma_m16n8k16<Kind::kF16>("mma m16n8k16 f16", false);
  test_mma_m16n8k16<Kind::kF16>("mma m16n8k16 f16 subnormal A", true);
  test_mma_s8();
  test_ldmatrix();
  test_cp_async();
  test_named_barrier();
  test_errors();
  std::printf("test_emu_ptx_warp: %s, %d checks, %d failures\n", g_failures ? "FAIL" : "ok",
              g_checks, g_failures);
  return g_failures ? 1 : 0;
}
