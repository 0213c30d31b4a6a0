// Elman RNN recurrence on CUDA (fastlayers/rnn.h), forward and backward through time.
//
// Both directions of time are "phases" of one shape: a phase multiplies the previous
// phase's state rows by the matrix m (float [H, H], m[k][j]: W_hh^T for the forward, W_hh
// for the backward) and applies a pointwise epilogue:
//   forward  phase i (step t):  h_t[b] = act(xw_t[b] + bias + src[b] m),
//            src[b] = h of the previous phase, or h0[b] for an entry starting at t
//   backward phase i (T + 1 phases): r[b] = dz_prev[b] m for the previous phase's rows; an
//            entry still running takes dh = r, one that ended (its first forward step was
//            the previous phase's) gets grad_h0[b] = r; new entries take dh = grad_hn[b];
//            then dz_t[b] = (grad_out_t[b] + dh) act'(out_t[b])
// States are kept in float ping-pong buffers [2, B, H] per direction (the workspace), so
// nothing is rounded to the storage type between steps. Both directions of a bidirectional
// layer run in the same launch, each on its own blocks (or tiles), in lockstep: phase i of
// the reverse direction is its step T - 1 - i.
//
// A block computes 32 columns (a lane each) of 8 rows of a phase; its 8 warps split the
// reduction over k (k = warp mod 8) and meet in shared memory. Two drivers:
// - rnn_persistent: one cooperative launch for the whole sequence; block (d, j) owns
//   columns [32 j, 32 j + 32) of direction d and keeps that slice of its m ([H, 32] floats)
//   in shared memory for every phase, with one grid-wide barrier per phase. Used when
//   directions * ceil(H / 32) blocks fit on the device at once and the slice fits in shared
//   memory (H <= 1700 or so).
// - rnn_phase: a launch per phase reading m from global memory (L2): the fallback.
// Offsets are int64; every result has one writer (deterministic).

#include <cooperative_groups.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "fastlayers/rnn.h"
#include "kernels/cuda/convert.cuh"
#include "kernels/cuda/launch.cuh"

namespace fl {
namespace cuda {
namespace {

constexpr int kCols = 32, kRows = 8, kWarps = 8, kThreads = 32 * kWarps;

struct RnnArgs {
  RnnShape s;
  const int64_t* bs;   // [T], device
  const int64_t* off;  // [T + 1] row offsets, device
  const float* m;      // [dirs, H, H]
  // forward
  const void* xw;
  const void* h0;
  const void* bias;
  void* out;
  void* h_n;
  // backward
  const void* grad_out;
  const void* grad_hn;
  const void* fwd_out;  // the forward's output
  void* grad_z;
  void* grad_h0;
  float* state;  // [dirs, 2, B, H] ping-pong
};

// The step of phase i, the step of the phase before (or -1), and their row counts.
struct Phase {
  int64_t t, n, prev_t, prev_n;
};

__device__ __forceinline__ Phase phase_of(const RnnArgs& a, int64_t i, bool fwd, int64_t d) {
  const RnnShape& s = a.s;
  // The forward visits t = 0 .. T-1 (reverse: T-1 .. 0); the backward the other way, with a
  // last phase (t = -1, no rows) that only hands the final rows their grad_h0.
  const bool ascending = fwd != s.reversed(d);
  auto step = [&](int64_t k) -> int64_t {
    if (k < 0 || k >= s.T) return -1;
    return ascending ? k : s.T - 1 - k;
  };
  Phase p;
  p.t = step(i);
  p.prev_t = step(i - 1);
  p.n = p.t < 0 ? 0 : a.bs[p.t];
  p.prev_n = p.prev_t < 0 ? 0 : a.bs[p.prev_t];
  return p;
}

__device__ __forceinline__ float act(float v, bool relu) {
  if (relu) return v < 0.f ? 0.f : v;  // NaN stays NaN, as torch's relu
  return tanhf(v);
}

// The 32-column, 8-row tile (jt, rb) of phase i of direction d. m is direction d's, read at
// m[k * ldm + c], c the column within the tile (a shared-memory slice: ldm = 32) or at
// m + 32 jt (global: ldm = H).
template <typename T, bool kFwd>
__device__ void run_tile(const RnnArgs& a, int64_t d, int64_t i, int64_t jt, int64_t rb,
                         const float* m, int64_t ldm, float (*part)[kRows][kCols + 1]) {
  const RnnShape& s = a.s;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t H = s.H, j = jt * kCols + lane;
  const Phase ph = phase_of(a, i, kFwd, d);
  const int64_t rows = kFwd ? ph.n : ph.prev_n;  // rows of the matrix product
  const float* prev = a.state + (2 * d + (i + 1) % 2) * s.B * H;
  float* cur = a.state + (2 * d + i % 2) * s.B * H;
  // Direction d's [B, H] blocks, and its columns of the packed rows (X wide).
  const int64_t X = s.row_width(), bh = d * s.B * H, col = d * H + j;
  const int64_t b0 = rb * kRows;
  // Partial products over k = warp, warp + 8, ...
  float acc[kRows] = {};
  if (b0 < rows) {
    for (int64_t k = warp; k < H; k += kWarps) {
      const float mv = j < H ? m[k * ldm + lane] : 0.f;
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        const int64_t b = b0 + r;
        if (b >= rows) break;
        float x;
        if (kFwd && b >= ph.prev_n)  // an entry starting at this step: h0
          x = to_f(static_cast<const T*>(a.h0)[bh + b * H + k]);
        else
          x = __ldcg(prev + b * H + k);  // written by other blocks in the last phase
        acc[r] += x * mv;
      }
    }
  }
#pragma unroll
  for (int r = 0; r < kRows; ++r) part[warp][r][lane] = acc[r];
  __syncthreads();
  // Warp r finishes row b0 + r: the sum over warps, then the epilogue.
  const int64_t b = b0 + warp;
  float v = 0.f;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) v += part[w][warp][lane];
  __syncthreads();  // part is reused by the next tile
  if (j >= H) return;
  if constexpr (kFwd) {
    if (b >= ph.n) return;
    const int64_t row = a.off[ph.t] + b;
    v += to_f(static_cast<const T*>(a.xw)[row * X + col]);
    if (a.bias) v += to_f(static_cast<const T*>(a.bias)[d * H + j]);
    v = act(v, s.relu);
    cur[b * H + j] = v;
    static_cast<T*>(a.out)[row * X + col] = from_f<T>(v);
    const int64_t later = ph.t + 1 < s.T ? a.bs[ph.t + 1] : 0;
    if (s.reversed(d) ? ph.t == 0 : b >= later)
      static_cast<T*>(a.h_n)[bh + b * H + j] = from_f<T>(v);
  } else {
    // Rows of the last phase that this phase does not continue: their first forward step
    // was the last phase's, so v is their grad_h0.
    if (b < ph.prev_n && b >= ph.n) static_cast<T*>(a.grad_h0)[bh + b * H + j] = from_f<T>(v);
    if (b >= ph.n) return;
    float dh = v;
    if (b >= ph.prev_n)  // an entry whose forward ended at this step
      dh = a.grad_hn ? to_f(static_cast<const T*>(a.grad_hn)[bh + b * H + j]) : 0.f;
    const int64_t row = a.off[ph.t] + b;
    if (a.grad_out) dh += to_f(static_cast<const T*>(a.grad_out)[row * X + col]);
    const float y = to_f(static_cast<const T*>(a.fwd_out)[row * X + col]);
    const float dz = dh * (s.relu ? (y > 0.f ? 1.f : 0.f) : 1.f - y * y);
    cur[b * H + j] = dz;
    static_cast<T*>(a.grad_z)[row * X + col] = from_f<T>(dz);
  }
}

// Row groups of a phase: enough for every row either phase of the pair may touch.
__device__ __forceinline__ int64_t row_groups(const RnnArgs& a, int64_t i, bool fwd, int64_t d) {
  const Phase ph = phase_of(a, i, fwd, d);
  const int64_t rows = ph.n > ph.prev_n ? ph.n : ph.prev_n;
  return (rows + kRows - 1) / kRows;
}

template <typename T, bool kFwd>
__global__ void __launch_bounds__(kThreads) rnn_phase(RnnArgs a, int64_t i) {
  __shared__ float part[kWarps][kRows][kCols + 1];
  // Tiles (d, rb, jt), rb over the row groups of the whole batch; those past direction d's
  // rows in this phase are skipped.
  const int64_t H = a.s.H, jts = (H + kCols - 1) / kCols, groups = (a.s.B + kRows - 1) / kRows;
  const int64_t per_dir = jts * groups, tiles = a.s.dirs * per_dir;
  for (int64_t w = blockIdx.x; w < tiles; w += gridDim.x) {
    const int64_t d = w / per_dir, jt = w % per_dir % jts, rb = w % per_dir / jts;
    if (rb >= row_groups(a, i, kFwd, d)) continue;
    run_tile<T, kFwd>(a, d, i, jt, rb, a.m + d * H * H + jt * kCols, H, part);
  }
}

template <typename T, bool kFwd>
__global__ void __launch_bounds__(kThreads) rnn_persistent(RnnArgs a) {
  __shared__ float part[kWarps][kRows][kCols + 1];
  FL_DYNAMIC_SHARED(float, slice);  // [H, 32]: columns 32 jt .. of m
  const int64_t H = a.s.H;
  // Direction and column tile, in 32-bit (the grid is small; a 64-bit division is a call).
  const int jts = int((H + kCols - 1) / kCols);
  const int64_t d = int(blockIdx.x) / jts, jt = int(blockIdx.x) % jts;
  const float* m = a.m + d * H * H;
  for (int64_t e = threadIdx.x; e < H * kCols; e += kThreads) {
    const int64_t k = e / kCols, c = e % kCols, j = jt * kCols + c;
    slice[e] = j < H ? m[k * H + j] : 0.f;
  }
  __syncthreads();
  const int64_t phases = kFwd ? a.s.T : a.s.T + 1;
  for (int64_t i = 0; i < phases; ++i) {
    const int64_t groups = row_groups(a, i, kFwd, d);
    for (int64_t rb = 0; rb < groups; ++rb) run_tile<T, kFwd>(a, d, i, jt, rb, slice, kCols, part);
    cooperative_groups::this_grid().sync();  // the phase's states are visible to all blocks
  }
}

template <typename T, bool kFwd>
void launch(const RnnArgs& a, bool persistent, CUstream_st* stream) {
  const int64_t jts = (a.s.H + kCols - 1) / kCols;
  const int64_t phases = kFwd ? a.s.T : a.s.T + 1;
  if (persistent) {
    const size_t smem = size_t(a.s.H) * kCols * sizeof(float);
    cudaFuncSetAttribute((rnn_persistent<T, kFwd>), cudaFuncAttributeMaxDynamicSharedMemorySize,
                         int(smem));
    FL_LAUNCH_COOPERATIVE((rnn_persistent<T, kFwd>), unsigned(a.s.dirs * jts), kThreads, smem,
                          stream)(a);
    return;
  }
  const int64_t groups = (a.s.B + kRows - 1) / kRows;
  for (int64_t i = 0; i < phases; ++i)
    FL_LAUNCH((rnn_phase<T, kFwd>), blocks_for(a.s.dirs * jts * groups), kThreads, 0, stream)(a, i);
}

template <bool kFwd>
void dispatch(const RnnArgs& a, bool persistent, CUstream_st* stream) {
  switch (a.s.dtype) {
    case DType::kFloat32: return launch<float, kFwd>(a, persistent, stream);
    case DType::kFloat16: return launch<__half, kFwd>(a, persistent, stream);
    case DType::kBFloat16: return launch<__nv_bfloat16, kFwd>(a, persistent, stream);
    default: return;  // the glue admits only the types above
  }
}

}  // namespace

bool rnn_persistent_fits(const RnnShape& s) {
  int dev = 0, sms = 0, smem = 0;
  cudaGetDevice(&dev);
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
  cudaDeviceGetAttribute(&smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
  const int64_t static_smem = int64_t(kWarps) * kRows * (kCols + 1) * sizeof(float);
  return s.dirs * ((s.H + kCols - 1) / kCols) <= sms &&
         s.H * kCols * int64_t(sizeof(float)) + static_smem <= smem;
}

namespace {
// The fields both directions of time share.
RnnArgs common_args(const RnnCudaParams& p, const RnnShape& s) {
  RnnArgs a{};
  a.s = s;
  a.bs = p.batch_sizes;
  a.off = p.offsets;
  a.m = p.m;
  a.state = p.state;
  return a;
}
}  // namespace

void rnn_forward(const RnnCudaParams& p, CUstream_st* stream) {
  RnnArgs a = common_args(p, p.fwd.s);
  a.xw = p.fwd.xw;
  a.h0 = p.fwd.h0;
  a.bias = p.fwd.bias;
  a.out = p.fwd.out;
  a.h_n = p.fwd.h_n;
  dispatch<true>(a, p.persistent, stream);
}

void rnn_backward(const RnnCudaParams& p, CUstream_st* stream) {
  RnnArgs a = common_args(p, p.bwd.s);
  a.grad_out = p.bwd.grad_out;
  a.grad_hn = p.bwd.grad_hn;
  a.fwd_out = p.bwd.out;
  a.grad_z = p.bwd.grad_z;
  a.grad_h0 = p.bwd.grad_h0;
  dispatch<false>(a, p.persistent, stream);
}

}  // namespace cuda
}  // namespace fl
