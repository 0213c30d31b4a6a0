// Self-tests of the emulator's runtime: indices, barriers and their misuse, warp
// shuffles/votes against their definitions, atomics, shared memory (per block, poisoned),
// dynamic shared memory, block subsets, launch-configuration errors, and race mode on a
// warp-synchronous reduction that omits __syncwarp. Each check prints on failure; the
// program prints one summary line and exits non-zero if any check failed.
#include <cuda_runtime.h>

#include <cstdio>
#include <string>
#include <vector>

#include "emu/race.h"
#include "kernels/cuda/launch.cuh"

static int g_checks = 0, g_failures = 0;

#define CHECK(cond, ...)                 \
  do {                                   \
    ++g_checks;                          \
    if (!(cond)) {                       \
      ++g_failures;                      \
      std::printf("FAILED %s: ", #cond); \
      std::printf(__VA_ARGS__);          \
      std::printf("\n");                 \
    }                                    \
  } while (0)

static std::string take() {
  std::string m;
  fl::emu::take_error(&m);
  return m;
}

// ---- indices -------------------------------------------------------------------------
__global__ void write_ids(int* out) {
  const int b = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  const int t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  out[b * blockDim.x * blockDim.y * blockDim.z + t] = b * 1000 + t;
}

static void test_indices() {
  const dim3 grid(3, 2, 2), block(5, 3, 2);
  std::vector<int> out(12 * 30, -1);
  FL_LAUNCH(write_ids, grid, block, 0, nullptr)(out.data());
  bool ok = true;
  for (int b = 0; b < 12; ++b)
    for (int t = 0; t < 30; ++t) ok &= out[b * 30 + t] == b * 1000 + t;
  CHECK(ok && take().empty(), "3-D grid and block indices");
}

// ---- shuffles and votes against their definitions --------------------------------------
struct WarpOut {
  int idx, up, down, xr, seg, bal, any, all, red;
};

__global__ void warp_ops(WarpOut* out, int width) {
  const int lane = threadIdx.x % 32;
  const int v = lane * 10 + 1;
  WarpOut o;
  o.idx = __shfl_sync(0xffffffffu, v, (lane * 7 + 3) % 32);
  o.up = __shfl_up_sync(0xffffffffu, v, 3, width);
  o.down = __shfl_down_sync(0xffffffffu, v, 5, width);
  o.xr = __shfl_xor_sync(0xffffffffu, v, 6, width);
  o.seg = __shfl_sync(0xffffffffu, v, 1, width);
  o.bal = int(__ballot_sync(0xffffffffu, lane % 3 == 0));
  o.any = __any_sync(0xffffffffu, lane == 17);
  o.all = __all_sync(0xffffffffu, lane < 31);
  o.red = int(__reduce_add_sync(0xffffffffu, unsigned(lane)));
  out[threadIdx.x] = o;
}

static void test_warp_ops() {
  for (int width : {32, 8}) {
    std::vector<WarpOut> out(64);
    FL_LAUNCH(warp_ops, 1, 64, 0, nullptr)(out.data(), width);
    unsigned bal = 0;
    for (int l = 0; l < 32; ++l)
      if (l % 3 == 0) bal |= 1u << l;
    bool ok = true;
    for (int t = 0; t < 64; ++t) {
      const int lane = t % 32, base = lane & ~(width - 1), in = lane - base;
      auto val = [&](int l) { return l * 10 + 1; };
      const WarpOut& o = out[t];
      ok &= o.idx == val((lane * 7 + 3) % 32);
      ok &= o.up == (in >= 3 ? val(lane - 3) : val(lane));
      ok &= o.down == (in + 5 < width ? val(lane + 5) : val(lane));
      ok &= o.xr == (((lane ^ 6) & ~(width - 1)) == base ? val(lane ^ 6) : val(lane));
      ok &= o.seg == val(base + 1);
      ok &= unsigned(o.bal) == bal && o.any == 1 && o.all == 0 && o.red == 496;
    }
    CHECK(ok && take().empty(), "shuffles and votes, width %d", width);
  }
}

// A block of 40 threads: the second warp has 8 lanes; a full mask means those 8.
__global__ void partial_warp(int* out) {
  const int lane = threadIdx.x % 32;
  const int full = threadIdx.x < 32 ? __activemask() == 0xffffffffu : __activemask() == 0xffu;
  out[threadIdx.x] = __shfl_down_sync(0xffffffffu, lane, 1) + 100 * full;
}

static void test_partial_warp() {
  std::vector<int> out(40);
  FL_LAUNCH(partial_warp, 1, 40, 0, nullptr)(out.data());
  bool ok = true;
  for (int t = 0; t < 32; ++t) ok &= out[t] == (t < 31 ? t + 1 : 31) + 100;
  for (int t = 32; t < 40; ++t) {
    const int lane = t - 32;
    // Lane 7's source (lane 8) does not exist: 0xFF bytes, i.e. -1.
    ok &= out[t] == (lane < 7 ? lane + 1 : -1) + 100;
  }
  const std::string e = take();
  CHECK(ok && e.empty(), "partial last warp: %d %d %d '%s'", out[32], out[38], out[39], e.c_str());
}

// ---- misuse is reported, never a hang ---------------------------------------------------
// Lanes 0-15 wait at the barrier for lanes 16-31, which wait in a shuffle for lanes 0-15.
__global__ void divergent_barrier(int* out) {
  if (threadIdx.x % 32 < 16)
    __syncthreads();
  else
    out[threadIdx.x] = __shfl_sync(0xffffffffu, 1, 0);
}

__global__ void exited_lane(int* out) {
  if (threadIdx.x % 32 == 5) return;
  out[threadIdx.x] = __shfl_sync(0xffffffffu, int(threadIdx.x), 0);
}

__global__ void mixed_collectives(int* out) {
  if (threadIdx.x % 2)
    out[threadIdx.x] = __shfl_sync(0xffffffffu, 1, 0);
  else
    out[threadIdx.x] = int(__ballot_sync(0xffffffffu, 1));
}

static void test_misuse() {
  std::vector<int> out(64);
  FL_LAUNCH(divergent_barrier, 1, 64, 0, nullptr)(out.data());
  std::string e = take();
  CHECK(e.find("divergent_barrier") != std::string::npos && e.find("deadlock") != std::string::npos,
        "deadlock reported: '%s'", e.c_str());
  FL_LAUNCH(exited_lane, 2, 64, 0, nullptr)(out.data());
  e = take();
  CHECK(e.find("exited") != std::string::npos, "exited lane in a shuffle mask: '%s'", e.c_str());
  FL_LAUNCH(mixed_collectives, 1, 32, 0, nullptr)(out.data());
  e = take();
  CHECK(e.find("different warp operations") != std::string::npos, "mixed collectives: '%s'",
        e.c_str());
  FL_LAUNCH(write_ids, 1, 1025, 0, nullptr)(out.data());
  CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration, "block of 1025 threads");
  FL_LAUNCH(write_ids, dim3(1, 65536), 32, 0, nullptr)(out.data());
  CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration, "grid.y of 65536");
  CHECK(cudaGetLastError() == cudaSuccess, "the error is cleared once read");
}

// ---- shared memory: per block, poisoned; dynamic; atomics --------------------------------
__global__ void shared_state(unsigned* first_read, int* sums) {
  __shared__ unsigned s[64];
  __shared__ int total;
  if (threadIdx.x == 0) {
    first_read[blockIdx.x] = s[blockIdx.x % 64];  // never written in this block: poison
    total = 0;
  }
  __syncthreads();
  s[threadIdx.x] = blockIdx.x;
  atomicAdd(&total, int(threadIdx.x));
  __syncthreads();
  if (threadIdx.x == 0) sums[blockIdx.x] = total + int(s[63]) * 10000;
}

__global__ void dynamic_smem(float* out) {
  FL_DYNAMIC_SHARED(float, buf);
  buf[threadIdx.x] = float(threadIdx.x);
  __syncthreads();
  out[blockIdx.x * blockDim.x + threadIdx.x] = buf[blockDim.x - 1 - threadIdx.x];
}

__global__ void float_atomics(float* acc, const float* x) {
  atomicAdd(acc, x[blockIdx.x * blockDim.x + threadIdx.x]);
}

static void test_shared_and_atomics() {
  std::vector<unsigned> first(9);
  std::vector<int> sums(9);
  FL_LAUNCH(shared_state, 9, 64, 0, nullptr)(first.data(), sums.data());
  bool ok = take().empty();
  for (int b = 0; b < 9; ++b) ok &= first[b] == 0xFFFFFFFFu && sums[b] == 2016 + 10000 * b;
  CHECK(ok, "static shared memory is per block and poisoned at block start");
  std::vector<float> out(3 * 96);
  FL_LAUNCH(dynamic_smem, 3, 96, 96 * sizeof(float), nullptr)(out.data());
  ok = take().empty();
  for (int i = 0; i < 3 * 96; ++i) ok &= out[i] == float(95 - i % 96);
  CHECK(ok, "dynamic shared memory");
  FL_LAUNCH(dynamic_smem, 1, 32, 64 * 1024, nullptr)(out.data());
  CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration,
        "64 KiB dynamic smem needs the attribute");
  cudaFuncSetAttribute(dynamic_smem, cudaFuncAttributeMaxDynamicSharedMemorySize, 64 * 1024);
  FL_LAUNCH(dynamic_smem, 1, 32, 64 * 1024, nullptr)(out.data());
  CHECK(cudaGetLastError() == cudaSuccess, "64 KiB dynamic smem with the attribute");
  std::vector<float> x(8 * 128);
  for (size_t i = 0; i < x.size(); ++i) x[i] = 1.0f / float(i + 1);
  float acc = 0;
  fl::emu::clear_log();
  FL_LAUNCH(float_atomics, 8, 128, 0, nullptr)(&acc, x.data());
  double ref = 0;
  for (float v : x) ref += v;
  CHECK(std::fabs(acc - ref) < 1e-5 * ref && fl::emu::launch_log().at(0).float_atomics,
        "float atomicAdd and its flag");
}

// ---- block subsets -----------------------------------------------------------------------
static void test_block_subset() {
  std::vector<int> out(10 * 32, -7);
  fl::emu::config().block_begin = -3;
  fl::emu::config().block_end = -1;
  FL_LAUNCH(write_ids, 10, 32, 0, nullptr)(out.data());
  fl::emu::config() = fl::emu::Config{};
  bool ok = take().empty();
  for (int b = 0; b < 10; ++b) ok &= (out[b * 32] == -7) == (b < 7);
  CHECK(ok, "only the last three blocks ran");
}

// ---- race mode -----------------------------------------------------------------------------
// The classic "warp-synchronous" tail of a reduction: lanes read their neighbours' partial
// sums from shared memory without __syncwarp, relying on lockstep execution.
template <bool kSyncWarp>
__global__ void warp_tail(const float* x, float* out) {
  __shared__ float s[64];
  const int t = threadIdx.x;
  s[t] = x[t] + x[t + 64];
  __syncthreads();
  if (t < 32) {
    for (int o = 32; o > 0; o >>= 1) {
      const float v = s[t] + s[t + o];
      if (kSyncWarp) __syncwarp();
      s[t] = v;
      if (kSyncWarp) __syncwarp();
    }
    if (t == 0) out[0] = s[0];
  }
}

static void test_race_mode() {
  std::vector<float> x(128);
  for (int i = 0; i < 128; ++i) x[i] = float(i % 13) * 0.25f + float(i) * 0.001f;
  float out = 0;
  const std::string racy = fl::emu::race_check(
      [&] { FL_LAUNCH(warp_tail<false>, 1, 64, 0, nullptr)(x.data(), &out); }, {{&out, 4}});
  CHECK(racy.find("warp_tail<false>") != std::string::npos, "missing __syncwarp flagged: '%s'",
        racy.c_str());
  const std::string clean = fl::emu::race_check(
      [&] { FL_LAUNCH(warp_tail<true>, 1, 64, 0, nullptr)(x.data(), &out); }, {{&out, 4}});
  CHECK(clean.empty(), "with __syncwarp every schedule agrees: '%s'", clean.c_str());
  CHECK(take().empty(), "no launch error");
}

int main() {
  test_indices();
  test_warp_ops();
  test_partial_warp();
  test_misuse();
  test_shared_and_atomics();
  test_block_subset();
  test_race_mode();
  std::printf("emu runtime: %d of %d checks passed\n", g_checks - g_failures, g_checks);
  return g_failures ? 1 : 0;
}
