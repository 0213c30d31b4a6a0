// Fused scaled-dot-product attention on CUDA (shapes and semantics: fastlayers/attention.h):
// forward with online softmax, saving the log-sum-exp; backward recomputing P from it;
// probabilities of chosen rows. float16 and bfloat16 run on tensor cores (mma.sync
// m16n8k16, ldmatrix, cp.async double buffering, all through ptx.cuh); float32 runs the
// same kernels with a SIMT product in place of the mma.
//
// Warp tiles. A block has kWarps warps; each owns 16 rows of the block's kM-row tile (query
// rows in the forward and dQ kernels, key rows in the dK/dV kernel) and streams tiles of kN
// rows of the other operand through shared memory, two stages deep (the next tile's
// cp.async copies are in flight while this one is multiplied). Scores live in registers in
// the mma accumulator layout: lane (g = lane / 4, t = lane % 4) holds rows g and g + 8,
// columns 2t and 2t + 1 of every 16 x 8 tile. Rows are shared by the four lanes of a quad, so
// row reductions are two shuffles. An accumulator tile is re-packed in registers as the A
// operand of the next product (P V, dS K), as in FlashAttention-2; in the float path the
// product reads operands from shared memory, so P goes through a per-warp scratch tile.
//
// Head dims are padded up to one of kD = 64, 128, 256 (the loaders zero-fill columns
// beyond D and Dv; the zeros add nothing), so only those sizes are instantiated. Row tails
// (Lq, Lk not multiples of the tile) load as zero rows and are masked to -inf. Scores, the
// row max and the lse are in natural units; the forward's exponentials are
// exp2f((x - m) log2 e), the subtraction first, the backward's exp2f(x log2 e - lse log2 e)
// in one fma (the lse's rounding there is a common factor of a row, harmless to dS).
// (Folding scale * log2 e into the scores, as FlashAttention does, saves a multiply but
// rounds every score in the log2 domain: float32 gradients reached 4.4x torch's error on
// scores near 80.)
//
// Backward, deterministic without atomics: one block per (batch, head, query tile) sums dQ
// over the key tiles, after a first pass over them for delta_i = rowsum(P dP Z)_i (half
// types: dO . O would carry the output's rounding to 8 or 11 bits into every dS; float
// uses dO . O); then one block per (batch, key/value head, key tile) sums dK and dV over
// every query row of every query head of its group (GQA without copying K/V). Causal masking skips
// tiles that are entirely masked in all three. At kD = 256 dK and dV are accumulated in two
// launches, so that the accumulators of one fit in registers.
//
// All element offsets are int64; every kernel loops over its work items (grid-stride), so
// any batch x heads x tiles count launches.

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "fastlayers/attention.h"
#include "fastlayers/philox.h"
#include "kernels/cuda/convert.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/ptx.cuh"
#include "kernels/cuda/reduce.cuh"

namespace fl {
namespace cuda {
namespace {

constexpr float kLog2e = 1.4426950408889634f;

// Tile sizes per storage type and padded head dim, chosen so shared memory stays within the
// 163 KB an sm_80 block may use and the accumulators of a warp fit in registers.
template <typename T, int kD_>
struct Cfg {
  static constexpr int kD = kD_;
  static constexpr bool kF32 = std::is_same_v<T, float>;
  static constexpr int kWarps = (kF32 && kD > 128) ? 2 : 4;
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kM = 16 * kWarps;  // rows a block owns
  // Rows per streamed tile: keys in the forward and dQ kernels, queries in the dK/dV kernel.
  static constexpr int kN = kF32 ? (kD > 128 ? 16 : 32) : (kD > 128 ? 32 : 64);
  static constexpr int kNb = kF32 ? (kD > 128 ? 16 : 32) : (kD > 64 ? 32 : 64);
  // Keys per tile of the dQ kernel, whose dQ accumulators leave fewer registers for scores.
  static constexpr int kNq = kF32 ? kN : (kD > 128 ? 16 : (kD > 64 ? 32 : 64));
  static constexpr int kLd = kD + 16 / int(sizeof(T));    // padded shared row: no bank conflicts
  static constexpr int kLdS = (kN > kNb ? kN : kNb) + 4;  // float scratch row (kNq <= kN)
  static constexpr int kScratch = kF32 ? kWarps * 16 * kLdS : 0;  // floats
};

// ---------------------------------------------------------------------------------------
// Warp products on 16-row tiles. acc[nt] is the 16 x 8 accumulator tile nt.

template <typename T>
__device__ __forceinline__ uint32_t pack2(float lo, float hi) {
  uint32_t u;
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    memcpy(&u, &v, 4);
  } else {
    const __half2 v = __floats2half2_rn(lo, hi);
    memcpy(&u, &v, 4);
  }
  return u;
}

template <typename T>
__device__ __forceinline__ void mma(float (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>)
    ptx::mma_m16n8k16_bf16_f32(c, a, b, c);
  else
    ptx::mma_m16n8k16_f16_f32(c, a, b, c);
}

// Float path: acc += A B with A (16 x K) row-major at a, B (K x 8NT) stored [n][k] (kNK) or
// [k][n] at b, in shared memory; each lane computes its own accumulator elements.
template <int NT, int K, bool kNK>
__device__ __forceinline__ void gemm_f32(float (&acc)[NT][4], const float* a, int lda,
                                         const float* b, int ldb, int lane) {
  const int g = lane / 4, t = lane % 4;
  const float* a0 = a + g * lda;
  const float* a1 = a0 + 8 * lda;
#pragma unroll 4
  for (int k = 0; k < K; ++k) {
    const float x0 = a0[k], x1 = a1[k];
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
      const int n = 8 * nt + 2 * t;
      const float y0 = kNK ? b[n * ldb + k] : b[k * ldb + n];
      const float y1 = kNK ? b[(n + 1) * ldb + k] : b[k * ldb + n + 1];
      acc[nt][0] += x0 * y0;
      acc[nt][1] += x0 * y1;
      acc[nt][2] += x1 * y0;
      acc[nt][3] += x1 * y1;
    }
  }
}

// acc (16 x 8NT) += A (16 x K, row-major at a) * B^T with B stored [n][k] at b (ld ldb).
template <typename T, int NT, int K>
__device__ __forceinline__ void gemm_ss_nk(float (&acc)[NT][4], const T* a, int lda, const T* b,
                                           int ldb, int lane) {
  if constexpr (std::is_same_v<T, float>) {
    gemm_f32<NT, K, true>(acc, a, lda, b, ldb, lane);
  } else {
    static_assert(NT % 2 == 0 && K % 16 == 0, "mma tiles");
    // ldmatrix row addresses. A: matrices (rows 0-7 | 8-15) x (k 0-7 | 8-15) -> a0..a3.
    // B [n][k]: (n 0-7, k 0-7), (n 0-7, k 8-15), (n 8-15, k 0-7), (n 8-15, k 8-15) -> b0, b1
    // of two n-tiles.
    const T* arow = a + (lane % 16) * lda + 8 * (lane / 16);
    const T* brow = b + (lane % 8 + 8 * (lane / 16)) * ldb + 8 * ((lane / 8) % 2);
#pragma unroll
    for (int k0 = 0; k0 < K; k0 += 16) {
      uint32_t af[4];
      ptx::ldmatrix_x4(af, arow + k0);
#pragma unroll
      for (int np = 0; np < NT / 2; ++np) {
        uint32_t r[4];
        ptx::ldmatrix_x4(r, brow + 16 * np * ldb + k0);
        const uint32_t b0[2] = {r[0], r[1]}, b1[2] = {r[2], r[3]};
        mma<T>(acc[2 * np], af, b0);
        mma<T>(acc[2 * np + 1], af, b1);
      }
    }
  }
}

// acc (16 x 8NT) += P (this warp's 16 x 8NP accumulator tiles) * B with B stored [k][n] at b.
// Half types re-pack P's accumulator layout as mma A fragments (the layouts agree); with
// kSplit P goes in as two terms, its rounding to T and the rest (P - round(P)), so the
// product keeps about twice T's precision for one more mma per tile (used for dS, whose
// rounding would otherwise dominate dQ's and dK's error). Float writes P to the warp's
// scratch tile (16 x ld_scratch) first.
template <typename T>
__device__ __forceinline__ void split2(float x, float y, uint32_t& hi, uint32_t& lo) {
  hi = pack2<T>(x, y);
  T h[2];
  memcpy(h, &hi, 4);
  lo = pack2<T>(x - to_f(h[0]), y - to_f(h[1]));
}

template <typename T, int NT, int NP, bool kSplit = false>
__device__ __forceinline__ void gemm_rs_kn(float (&acc)[NT][4], const float (&p)[NP][4], const T* b,
                                           int ldb, int lane, float* scratch, int ld_scratch) {
  if constexpr (std::is_same_v<T, float>) {
    const int g = lane / 4, t = lane % 4;
    __syncwarp();  // the scratch tile's previous readers are done
#pragma unroll
    for (int j = 0; j < NP; ++j) {
      scratch[g * ld_scratch + 8 * j + 2 * t] = p[j][0];
      scratch[g * ld_scratch + 8 * j + 2 * t + 1] = p[j][1];
      scratch[(g + 8) * ld_scratch + 8 * j + 2 * t] = p[j][2];
      scratch[(g + 8) * ld_scratch + 8 * j + 2 * t + 1] = p[j][3];
    }
    __syncwarp();
    gemm_f32<NT, 8 * NP, false>(acc, scratch, ld_scratch, b, ldb, lane);
  } else {
    static_assert(NT % 2 == 0 && NP % 2 == 0, "mma tiles");
    // B [k][n] (.trans): (k 0-7, n 0-7), (k 8-15, n 0-7), (k 0-7, n 8-15), (k 8-15, n 8-15).
    const T* brow = b + (lane % 16) * ldb + 8 * (lane / 16);
#pragma unroll
    for (int kk = 0; kk < NP / 2; ++kk) {
      uint32_t af[4], lo[4];
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        // a0..a3: (row g, k 2t..), (row g + 8, k 2t..), (row g, k 2t + 8..), (g + 8, 2t + 8..)
        const float* src = p[2 * kk + r / 2] + 2 * (r % 2);
        if constexpr (kSplit)
          split2<T>(src[0], src[1], af[r], lo[r]);
        else
          af[r] = pack2<T>(src[0], src[1]);
      }
#pragma unroll
      for (int np = 0; np < NT / 2; ++np) {
        uint32_t r[4];
        ptx::ldmatrix_x4_trans(r, brow + 16 * kk * ldb + 16 * np);
        const uint32_t b0[2] = {r[0], r[1]}, b1[2] = {r[2], r[3]};
        mma<T>(acc[2 * np], af, b0);
        mma<T>(acc[2 * np + 1], af, b1);
        if constexpr (kSplit) {
          mma<T>(acc[2 * np], lo, b0);
          mma<T>(acc[2 * np + 1], lo, b1);
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------
// Loads, masks, dropout.

// Whether every row of a tensor can be copied in 16-byte chunks (cp.async).
template <typename T>
__device__ __forceinline__ bool aligned16(const void* base, const int64_t (&st)[3]) {
  constexpr int64_t e = sizeof(T);
  return reinterpret_cast<uintptr_t>(base) % 16 == 0 && (st[0] * e) % 16 == 0 &&
         (st[1] * e) % 16 == 0 && (st[2] * e) % 16 == 0;
}

// Rows [0, ROWS) x columns [0, kD) of a shared tile (row length kLd) from rows of src (row
// stride ld): rows < nrows, columns < ncols copied, the rest zero. cp.async when vec, else
// plain loads; the caller commits and waits, then synchronises the block.
template <typename T, int ROWS, int kD, int kLd, int kThreads>
__device__ __forceinline__ void load_tile(T* dst, const T* src, int64_t ld, int nrows, int ncols,
                                          bool vec, int tid) {
  constexpr int E = 16 / int(sizeof(T));
  constexpr int kChunks = kD / E;
  for (int c = tid; c < ROWS * kChunks; c += kThreads) {
    const int r = c / kChunks, x = (c % kChunks) * E;
    T* d = dst + r * kLd + x;
    if (r < nrows && x < ncols) {
      const T* s = src + r * ld + x;
      const int n = ncols - x < E ? ncols - x : E;
      if (vec) {
        if (n == E)
          ptx::cp_async_16(d, s);
        else
          ptx::cp_async_16_zfill(d, s, n * int(sizeof(T)));
      } else {
        for (int e = 0; e < E; ++e) d[e] = e < n ? s[e] : from_f<T>(0.f);
      }
    } else {
      *reinterpret_cast<uint4*>(d) = make_uint4(0, 0, 0, 0);
    }
  }
}

// Additive bias of score (i, j), -inf where query i may not attend key j (beyond the
// lengths, causal, bool mask false). mbase = b * mask_stride[0] + h * mask_stride[1].
template <typename T>
__device__ __forceinline__ float score_bias(const AttentionArgs& a, const AttentionShape& s,
                                            int64_t mbase, int64_t i, int64_t j) {
  if (i >= s.Lq || j >= s.Lk || (a.causal && j > i)) return -INFINITY;
  const int64_t off = mbase + i * a.mask_stride[2] + j * a.mask_stride[3];
  if (a.mask_kind == MaskKind::kBool)
    return static_cast<const bool*>(a.mask)[off] ? 0.f : -INFINITY;
  if (a.mask_kind == MaskKind::kAdditive) return to_f(static_cast<const T*>(a.mask)[off]);
  return 0.f;
}

// Dropout: 1 / (1 - p) for a kept element of the stream, 0 for a dropped one.
struct Dropout {
  DropoutStream ds;
  float keep, inv;
  bool on;
  __device__ Dropout(const AttentionArgs& a)
      : ds{a.seed, a.offset},
        keep(float(1.0 - a.dropout_p)),
        inv(float(1.0 / (1.0 - a.dropout_p))),  // 1 without dropout
        on(a.dropout_p > 0) {}
  // Whether score (i, j) of the (b, h) slice at row_base = (b * Hq + h) * Lq is kept.
  __device__ __forceinline__ bool kept(int64_t row_base, int64_t Lk, int64_t i, int64_t j) const {
    return !on || ds.keep(uint64_t((row_base + i) * Lk + j), keep);
  }
  __device__ __forceinline__ float factor(int64_t row_base, int64_t Lk, int64_t i,
                                          int64_t j) const {
    return kept(row_base, Lk, i, j) ? inv : 0.f;
  }
};

template <typename T, int NT>
__device__ __forceinline__ void store_rows(T* out, int64_t ld, int64_t row0, int64_t nrows,
                                           int64_t ncols, const float (&acc)[NT][4], float mul0,
                                           float mul1, int lane) {
  const int g = lane / 4, t = lane % 4;
#pragma unroll
  for (int rr = 0; rr < 2; ++rr) {
    const int64_t r = row0 + g + 8 * rr;
    if (r >= nrows) continue;
    T* o = out + r * ld;
    const float mul = rr ? mul1 : mul0;
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int c = 0; c < 2; ++c) {
        const int64_t col = 8 * nt + 2 * t + c;
        if (col < ncols) o[col] = from_f<T>(acc[nt][2 * rr + c] * mul);
      }
  }
}

// One step of a two-stage cp.async pipeline over items 0..n-1: issues item it + 1's copies
// into the other stage (load(it + 1, stage)), waits until item it's have landed and
// synchronises the block. Returns item it's stage. The caller synchronises again before the
// next step overwrites the stage it read.
template <typename Load>
__device__ __forceinline__ int pipeline_step(int64_t it, int64_t n, Load&& load) {
  const int st = int(it & 1);
  if (it + 1 < n) {
    load(it + 1, st ^ 1);
    ptx::cp_async_commit();
    ptx::cp_async_wait<1>();
  } else {
    ptx::cp_async_wait<0>();
  }
  __syncthreads();
  return st;
}

// The work item of the forward and dQ kernels: query tile w % ntiles of slice (b, h), with
// the key/value head it reads and the key tiles it visits (causal: up to its last row).
template <typename T, typename P>
struct QueryTile {
  int64_t b, h, hk, i0, mbase, row_base, nkt;
  int nq;
  const T *q, *k, *v;
  __device__ QueryTile(const P& p, int64_t w, int kM, int kN) {
    const AttentionShape& s = p.s;
    const int64_t ntiles = (s.Lq + kM - 1) / kM, bh = w / ntiles;
    b = bh / s.Hq;
    h = bh % s.Hq;
    hk = h / (s.Hq / s.Hkv);
    i0 = (w % ntiles) * kM;
    nq = int(s.Lq - i0 < kM ? s.Lq - i0 : kM);
    q = static_cast<const T*>(p.q) + b * p.q_stride[0] + h * p.q_stride[1];
    k = static_cast<const T*>(p.k) + b * p.k_stride[0] + hk * p.k_stride[1];
    v = static_cast<const T*>(p.v) + b * p.v_stride[0] + hk * p.v_stride[1];
    mbase = b * p.a.mask_stride[0] + h * p.a.mask_stride[1];
    row_base = (b * s.Hq + h) * s.Lq;
    const int64_t kend = p.a.causal ? (s.Lk < i0 + nq ? s.Lk : i0 + nq) : s.Lk;
    nkt = (kend + kN - 1) / kN;
  }
  // Key and value tile jt into shared stage `stage` (cp.async where vk / vv).
  template <int kN, int kD, int kLd, int kThreads>
  __device__ void load_kv(const P& p, int64_t jt, int stage, T* sK, T* sV, bool vk, bool vv,
                          int tid) const {
    const int64_t j0 = jt * kN;
    const int nj = int(p.s.Lk - j0 < kN ? p.s.Lk - j0 : kN);
    load_tile<T, kN, kD, kLd, kThreads>(sK + stage * kN * kLd, k + j0 * p.k_stride[2],
                                        p.k_stride[2], nj, int(p.s.D), vk, tid);
    load_tile<T, kN, kD, kLd, kThreads>(sV + stage * kN * kLd, v + j0 * p.v_stride[2],
                                        p.v_stride[2], nj, int(p.s.Dv), vv, tid);
  }
};

// ---------------------------------------------------------------------------------------
// Forward.

template <typename T, int kD>
constexpr size_t fwd_smem() {
  using C = Cfg<T, kD>;
  return sizeof(T) * size_t(C::kM + 4 * C::kN) * C::kLd + sizeof(float) * C::kScratch;
}

template <typename T, int kD>
__global__ void __launch_bounds__(Cfg<T, kD>::kThreads, 1) attention_fwd(AttentionFwdParams p) {
  using C = Cfg<T, kD>;
  constexpr int kM = C::kM, kN = C::kN, kLd = C::kLd, NT = kN / 8, DT = kD / 8;
  FL_DYNAMIC_SHARED(unsigned char, smem);
  T* sQ = reinterpret_cast<T*>(smem);
  T* sK = sQ + kM * kLd;      // [2][kN][kLd]
  T* sV = sK + 2 * kN * kLd;  // [2][kN][kLd]
  float* scratch = reinterpret_cast<float*>(sV + 2 * kN * kLd);
  const AttentionShape& s = p.s;
  const AttentionArgs& a = p.a;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
  float* wscratch = scratch + warp * 16 * C::kLdS;
  const bool vq = aligned16<T>(p.q, p.q_stride), vk = aligned16<T>(p.k, p.k_stride),
             vv = aligned16<T>(p.v, p.v_stride);
  const Dropout drop(a);
  const float scale = float(a.scale);
  const int64_t ntiles = (s.Lq + kM - 1) / kM, work = ntiles * s.B * s.Hq;
  for (int64_t w = blockIdx.x; w < work; w += gridDim.x) {
    const QueryTile<T, AttentionFwdParams> qt(p, w, kM, kN);
    const int64_t b = qt.b, h = qt.h, i0 = qt.i0, mbase = qt.mbase, row_base = qt.row_base;
    const int64_t nkt = qt.nkt;
    const int nq = qt.nq;
    const T* q = qt.q;
    auto load_kv = [&](int64_t jt, int stage) {
      qt.template load_kv<kN, kD, kLd, C::kThreads>(p, jt, stage, sK, sV, vk, vv, tid);
    };
    load_tile<T, kM, kD, kLd, C::kThreads>(sQ, q + i0 * p.q_stride[2], p.q_stride[2], nq, int(s.D),
                                           vq, tid);
    if (nkt > 0) load_kv(0, 0);
    ptx::cp_async_commit();

    float o[DT][4] = {};
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
    const int64_t r0 = i0 + 16 * warp + g;  // this lane's rows: r0 and r0 + 8
    for (int64_t jt = 0; jt < nkt; ++jt) {
      const int st = pipeline_step(jt, nkt, load_kv);
      float sc[NT][4] = {};
      gemm_ss_nk<T, NT, kD>(sc, sQ + 16 * warp * kLd, kLd, sK + st * kN * kLd, kLd, lane);
      const int64_t j0 = jt * kN;
      float mx[2] = {m[0], m[1]};
#pragma unroll
      for (int nt = 0; nt < NT; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int64_t i = r0 + 8 * (e / 2), j = j0 + 8 * nt + 2 * t + e % 2;
          const float x = sc[nt][e] * scale + score_bias<T>(a, s, mbase, i, j);
          sc[nt][e] = x;
          mx[e / 2] = max_nan(mx[e / 2], x);
        }
      float mu[2];
#pragma unroll
      for (int rr = 0; rr < 2; ++rr) {
        mx[rr] = group_max<4>(mx[rr]);
        mu[rr] = mx[rr] == -INFINITY ? 0.f : mx[rr];  // all masked so far: p = 0, not NaN
        const float corr = exp2f((m[rr] - mu[rr]) * kLog2e);
        m[rr] = mx[rr];
        l[rr] *= corr;
#pragma unroll
        for (int dt = 0; dt < DT; ++dt) {
          o[dt][2 * rr] *= corr;
          o[dt][2 * rr + 1] *= corr;
        }
      }
#pragma unroll
      for (int nt = 0; nt < NT; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const float pe = exp2f((sc[nt][e] - mu[e / 2]) * kLog2e);
          l[e / 2] += pe;
          const int64_t i = r0 + 8 * (e / 2), j = j0 + 8 * nt + 2 * t + e % 2;
          sc[nt][e] = pe * drop.factor(row_base, s.Lk, i, j);
        }
      gemm_rs_kn<T, DT, NT>(o, sc, sV + st * kN * kLd, kLd, lane, wscratch, C::kLdS);
      __syncthreads();  // the next iteration's copies overwrite this stage
    }
    ptx::cp_async_wait<0>();  // nothing in flight when there were no key tiles
    float inv[2];
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) {
      l[rr] = group_sum<4>(l[rr]);
      inv[rr] = l[rr] == 0.f ? 0.f : 1.f / l[rr];
      const int64_t i = r0 + 8 * rr;
      if (t == 0 && i < s.Lq)
        static_cast<float*>(p.lse)[row_base + i] = l[rr] == 0.f ? INFINITY : m[rr] + logf(l[rr]);
    }
    T* out = static_cast<T*>(p.out) + b * p.o_stride[0] + h * p.o_stride[1];
    store_rows<T, DT>(out, p.o_stride[2], i0 + 16 * warp, s.Lq, s.Dv, o, inv[0], inv[1], lane);
    __syncthreads();  // shared tiles are reused by the next work item
  }
}

// ---------------------------------------------------------------------------------------
// Backward.

// delta[(b * Hq + h) * Lq + i] = sum_d dO[b, h, i, d] * O[b, h, i, d]: one warp per row.
template <typename T>
__global__ void __launch_bounds__(256) attention_bwd_delta(AttentionBwdParams p, float* delta) {
  const AttentionShape& s = p.s;
  const int lane = threadIdx.x % 32;
  const int64_t rows = s.B * s.Hq * s.Lq;
  for (int64_t r = blockIdx.x * 8 + threadIdx.x / 32; r < rows; r += int64_t(gridDim.x) * 8) {
    const int64_t i = r % s.Lq, bh = r / s.Lq, b = bh / s.Hq, h = bh % s.Hq;
    const T* o =
        static_cast<const T*>(p.out) + b * p.o_stride[0] + h * p.o_stride[1] + i * p.o_stride[2];
    const T* go = static_cast<const T*>(p.grad_out) + b * p.go_stride[0] + h * p.go_stride[1] +
                  i * p.go_stride[2];
    float acc = 0.f;
    for (int64_t d = lane; d < s.Dv; d += 32) acc += to_f(o[d]) * to_f(go[d]);
    acc = warp_sum(acc);
    if (lane == 0) delta[r] = acc;
  }
}

template <typename T, int kD>
constexpr size_t dkdv_smem() {
  using C = Cfg<T, kD>;
  return sizeof(T) * size_t(2 * C::kM + 4 * C::kNb) * C::kLd +
         sizeof(float) * (4 * C::kNb + C::kScratch);
}

// dK and/or dV of one key tile, summed over the query rows of every head of the group.
template <typename T, int kD, bool kDV, bool kDK>
__global__ void __launch_bounds__(Cfg<T, kD>::kThreads, 1)
    attention_bwd_dkdv(AttentionBwdParams p, const float* delta) {
  using C = Cfg<T, kD>;
  constexpr int kM = C::kM, kN = C::kNb, kLd = C::kLd, NT = kN / 8, DT = kD / 8;
  FL_DYNAMIC_SHARED(unsigned char, smem);
  T* sK = reinterpret_cast<T*>(smem);
  T* sV = sK + kM * kLd;
  T* sQ = sV + kM * kLd;                                    // [2][kN][kLd]
  T* sG = sQ + 2 * kN * kLd;                                // dO, [2][kN][kLd]
  float* sL = reinterpret_cast<float*>(sG + 2 * kN * kLd);  // lse * log2 e, [2][kN]
  float* sDl = sL + 2 * kN;                                 // delta, [2][kN]
  float* scratch = sDl + 2 * kN;
  const AttentionShape& s = p.s;
  const AttentionArgs& a = p.a;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
  float* wscratch = scratch + warp * 16 * C::kLdS;
  const bool vq = aligned16<T>(p.q, p.q_stride), vk = aligned16<T>(p.k, p.k_stride),
             vv = aligned16<T>(p.v, p.v_stride), vg = aligned16<T>(p.grad_out, p.go_stride);
  const Dropout drop(a);
  const float scale = float(a.scale);
  const int64_t group = s.Hq / s.Hkv;
  const int64_t ntiles = (s.Lk + kM - 1) / kM, work = ntiles * s.B * s.Hkv;
  const int64_t nqt = (s.Lq + kN - 1) / kN;
  for (int64_t w = blockIdx.x; w < work; w += gridDim.x) {
    const int64_t tile = w % ntiles, bhk = w / ntiles, b = bhk / s.Hkv, hk = bhk % s.Hkv;
    const int64_t j0 = tile * kM;
    const int nk = int(s.Lk - j0 < kM ? s.Lk - j0 : kM);
    const T* k = static_cast<const T*>(p.k) + b * p.k_stride[0] + hk * p.k_stride[1];
    const T* v = static_cast<const T*>(p.v) + b * p.v_stride[0] + hk * p.v_stride[1];
    load_tile<T, kM, kD, kLd, C::kThreads>(sK, k + j0 * p.k_stride[2], p.k_stride[2], nk, int(s.D),
                                           vk, tid);
    if (kDK)
      load_tile<T, kM, kD, kLd, C::kThreads>(sV, v + j0 * p.v_stride[2], p.v_stride[2], nk,
                                             int(s.Dv), vv, tid);
    // Causal: query tiles wholly above this key tile see none of its keys.
    const int64_t it0 = a.causal ? (j0 < s.Lq ? j0 / kN : nqt) : 0;
    const int64_t per_head = nqt - it0, iters = group * per_head;
    auto load_q = [&](int64_t it, int stage) {
      const int64_t h = hk * group + it / per_head, i0 = (it0 + it % per_head) * kN;
      const int nq = int(s.Lq - i0 < kN ? s.Lq - i0 : kN);
      const T* q = static_cast<const T*>(p.q) + b * p.q_stride[0] + h * p.q_stride[1];
      const T* go = static_cast<const T*>(p.grad_out) + b * p.go_stride[0] + h * p.go_stride[1];
      load_tile<T, kN, kD, kLd, C::kThreads>(sQ + stage * kN * kLd, q + i0 * p.q_stride[2],
                                             p.q_stride[2], nq, int(s.D), vq, tid);
      load_tile<T, kN, kD, kLd, C::kThreads>(sG + stage * kN * kLd, go + i0 * p.go_stride[2],
                                             p.go_stride[2], nq, int(s.Dv), vg, tid);
      const int64_t rb = (b * s.Hq + h) * s.Lq + i0;
      for (int x = tid; x < kN; x += C::kThreads) {
        sL[stage * kN + x] = x < nq ? static_cast<const float*>(p.lse)[rb + x] * kLog2e : INFINITY;
        sDl[stage * kN + x] = x < nq ? delta[rb + x] : 0.f;
      }
    };
    if (iters > 0) load_q(0, 0);
    ptx::cp_async_commit();

    float dk[kDK ? DT : 1][4] = {}, dv[kDV ? DT : 1][4] = {};
    const int64_t jr = j0 + 16 * warp + g;  // this lane's key rows: jr and jr + 8
    for (int64_t it = 0; it < iters; ++it) {
      const int st = pipeline_step(it, iters, load_q);
      const int64_t h = hk * group + it / per_head, i0 = (it0 + it % per_head) * kN;
      const int64_t mbase = b * a.mask_stride[0] + h * a.mask_stride[1];
      const int64_t row_base = (b * s.Hq + h) * s.Lq;
      const T* q_s = sQ + st * kN * kLd;
      const T* g_s = sG + st * kN * kLd;
      const float* l_s = sL + st * kN;
      const float* d_s = sDl + st * kN;
      // S^T = K Q^T: rows are keys, columns queries.
      float pt[NT][4] = {};
      gemm_ss_nk<T, NT, kD>(pt, sK + 16 * warp * kLd, kLd, q_s, kLd, lane);
      static_assert(4 * NT <= 32, "dropout bits of a lane's scores fit in one word");
      uint32_t kept = 0;  // bit 4 nt + e: score (nt, e) survives dropout
#pragma unroll
      for (int nt = 0; nt < NT; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int ii = 8 * nt + 2 * t + e % 2;
          const int64_t j = jr + 8 * (e / 2), i = i0 + ii;
          const float x = pt[nt][e] * scale + score_bias<T>(a, s, mbase, i, j);
          pt[nt][e] = exp2f(fmaf(x, kLog2e, -l_s[ii]));
          kept |= uint32_t(drop.kept(row_base, s.Lk, i, j)) << (4 * nt + e);
        }
      auto z = [&](int nt, int e) { return (kept >> (4 * nt + e)) & 1u ? drop.inv : 0.f; };
      if constexpr (kDV) {
        float pz[NT][4];
#pragma unroll
        for (int nt = 0; nt < NT; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e) pz[nt][e] = pt[nt][e] * z(nt, e);
        gemm_rs_kn<T, DT, NT>(dv, pz, g_s, kLd, lane, wscratch, C::kLdS);
      }
      if constexpr (kDK) {
        // dP^T = V dO^T; dS^T = P^T (dP^T Z - delta).
        float dpt[NT][4] = {};
        gemm_ss_nk<T, NT, kD>(dpt, sV + 16 * warp * kLd, kLd, g_s, kLd, lane);
#pragma unroll
        for (int nt = 0; nt < NT; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e)
            dpt[nt][e] = pt[nt][e] * (dpt[nt][e] * z(nt, e) - d_s[8 * nt + 2 * t + e % 2]);
        gemm_rs_kn<T, DT, NT, true>(dk, dpt, q_s, kLd, lane, wscratch, C::kLdS);
      }
      __syncthreads();  // the next iteration's copies overwrite this stage
    }
    ptx::cp_async_wait<0>();
    const int64_t kv_row = (b * s.Hkv + hk) * s.Lk;
    if constexpr (kDK)
      store_rows<T, DT>(static_cast<T*>(p.dk) + kv_row * s.D, s.D, j0 + 16 * warp, s.Lk, s.D, dk,
                        float(a.scale), float(a.scale), lane);
    if constexpr (kDV)
      store_rows<T, DT>(static_cast<T*>(p.dv) + kv_row * s.Dv, s.Dv, j0 + 16 * warp, s.Lk, s.Dv, dv,
                        1.f, 1.f, lane);
    __syncthreads();
  }
}

template <typename T, int kD>
constexpr size_t dq_smem() {
  using C = Cfg<T, kD>;
  return sizeof(T) * size_t(2 * C::kM + 4 * C::kNq) * C::kLd + sizeof(float) * C::kScratch;
}

// dQ of one query tile, summed over the key tiles. For half types it also computes delta
// (kExactDelta), which the dK/dV kernel then reads; float reads attention_bwd_delta's.
template <typename T, int kD>
__global__ void __launch_bounds__(Cfg<T, kD>::kThreads, 1)
    attention_bwd_dq(AttentionBwdParams p, float* delta) {
  using C = Cfg<T, kD>;
  constexpr bool kExactDelta = !C::kF32;
  constexpr int kM = C::kM, kN = C::kNq, kLd = C::kLd, NT = kN / 8, DT = kD / 8;
  FL_DYNAMIC_SHARED(unsigned char, smem);
  T* sQ = reinterpret_cast<T*>(smem);
  T* sG = sQ + kM * kLd;      // dO
  T* sK = sG + kM * kLd;      // [2][kN][kLd]
  T* sV = sK + 2 * kN * kLd;  // [2][kN][kLd]
  float* scratch = reinterpret_cast<float*>(sV + 2 * kN * kLd);
  const AttentionShape& s = p.s;
  const AttentionArgs& a = p.a;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
  float* wscratch = scratch + warp * 16 * C::kLdS;
  const bool vq = aligned16<T>(p.q, p.q_stride), vk = aligned16<T>(p.k, p.k_stride),
             vv = aligned16<T>(p.v, p.v_stride), vg = aligned16<T>(p.grad_out, p.go_stride);
  const Dropout drop(a);
  const float scale = float(a.scale);
  const int64_t ntiles = (s.Lq + kM - 1) / kM, work = ntiles * s.B * s.Hq;
  for (int64_t w = blockIdx.x; w < work; w += gridDim.x) {
    const QueryTile<T, AttentionBwdParams> qt(p, w, kM, kN);
    const int64_t b = qt.b, h = qt.h, i0 = qt.i0, mbase = qt.mbase, row_base = qt.row_base;
    const int64_t nkt = qt.nkt;
    const int nq = qt.nq;
    const T* q = qt.q;
    const T* go = static_cast<const T*>(p.grad_out) + b * p.go_stride[0] + h * p.go_stride[1];
    auto load_kv = [&](int64_t jt, int stage) {
      qt.template load_kv<kN, kD, kLd, C::kThreads>(p, jt, stage, sK, sV, vk, vv, tid);
    };
    load_tile<T, kM, kD, kLd, C::kThreads>(sQ, q + i0 * p.q_stride[2], p.q_stride[2], nq, int(s.D),
                                           vq, tid);
    load_tile<T, kM, kD, kLd, C::kThreads>(sG, go + i0 * p.go_stride[2], p.go_stride[2], nq,
                                           int(s.Dv), vg, tid);
    if (nkt > 0) load_kv(0, 0);
    ptx::cp_async_commit();

    const int64_t r0 = i0 + 16 * warp + g;
    float lse2[2], dl[2] = {0.f, 0.f};
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) {
      const int64_t i = r0 + 8 * rr;
      lse2[rr] = i < s.Lq ? static_cast<const float*>(p.lse)[row_base + i] * kLog2e : INFINITY;
      if (!kExactDelta) dl[rr] = i < s.Lq ? delta[row_base + i] : 0.f;
    }
    // Half types: pass 0 sums delta_i = rowsum(P dP Z) over the key tiles (exact, where
    // dO . O would carry O's rounding to 8 or 11 bits), pass 1 sums dQ.
    float dq[DT][4] = {};
    const int64_t steps = (kExactDelta ? 2 : 1) * nkt;
    for (int64_t it = 0; it < steps; ++it) {
      const int st =
          pipeline_step(it, steps, [&](int64_t i, int stage) { load_kv(i % nkt, stage); });
      const int64_t jt = it % nkt;
      const bool delta_pass = kExactDelta && it < nkt;
      const T* k_s = sK + st * kN * kLd;
      float pr[NT][4] = {}, dp[NT][4] = {};
      gemm_ss_nk<T, NT, kD>(pr, sQ + 16 * warp * kLd, kLd, k_s, kLd, lane);
      gemm_ss_nk<T, NT, kD>(dp, sG + 16 * warp * kLd, kLd, sV + st * kN * kLd, kLd, lane);
      const int64_t j0 = jt * kN;
#pragma unroll
      for (int nt = 0; nt < NT; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int64_t i = r0 + 8 * (e / 2), j = j0 + 8 * nt + 2 * t + e % 2;
          const float x = pr[nt][e] * scale + score_bias<T>(a, s, mbase, i, j);
          const float pe = exp2f(fmaf(x, kLog2e, -lse2[e / 2]));
          const float pdz = pe * dp[nt][e] * drop.factor(row_base, s.Lk, i, j);
          if (delta_pass)
            dl[e / 2] += pdz;
          else
            dp[nt][e] = pdz - pe * dl[e / 2];
        }
      if (delta_pass) {
        if (it == nkt - 1) {
#pragma unroll
          for (int rr = 0; rr < 2; ++rr) {
            dl[rr] = group_sum<4>(dl[rr]);
            const int64_t i = r0 + 8 * rr;
            if (t == 0 && i < s.Lq) delta[row_base + i] = dl[rr];
          }
        }
      } else {
        gemm_rs_kn<T, DT, NT, true>(dq, dp, k_s, kLd, lane, wscratch, C::kLdS);
      }
      __syncthreads();
    }
    ptx::cp_async_wait<0>();
    store_rows<T, DT>(static_cast<T*>(p.dq) + row_base * s.D, s.D, i0 + 16 * warp, s.Lq, s.D, dq,
                      float(a.scale), float(a.scale), lane);
    __syncthreads();
  }
}

// ---------------------------------------------------------------------------------------
// Probabilities of chosen rows: one block per (b, h, row); q_i in shared memory, a thread
// per key.

constexpr int kProbsThreads = 128;

template <typename T>
__global__ void __launch_bounds__(kProbsThreads)
    attention_probs_rows(AttentionProbsParams p, const int64_t* rows) {
  FL_DYNAMIC_SHARED(float, sq);
  const AttentionShape& s = p.s;
  const AttentionArgs& a = p.a;
  const Dropout drop(a);
  const int64_t work = s.B * s.Hq * p.R;
  for (int64_t w = blockIdx.x; w < work; w += gridDim.x) {
    const int64_t r = w % p.R, bh = w / p.R, b = bh / s.Hq, h = bh % s.Hq;
    const int64_t hk = h / (s.Hq / s.Hkv), i = rows[r];
    const T* q =
        static_cast<const T*>(p.q) + b * p.q_stride[0] + h * p.q_stride[1] + i * p.q_stride[2];
    const T* k = static_cast<const T*>(p.k) + b * p.k_stride[0] + hk * p.k_stride[1];
    for (int64_t d = threadIdx.x; d < s.D; d += kProbsThreads) sq[d] = to_f(q[d]);
    __syncthreads();
    const int64_t row_base = (b * s.Hq + h) * s.Lq;
    const float lse = static_cast<const float*>(p.lse)[row_base + i];
    const int64_t mbase = b * a.mask_stride[0] + h * a.mask_stride[1];
    T* out = static_cast<T*>(p.probs) + w * s.Lk;
    for (int64_t j = threadIdx.x; j < s.Lk; j += kProbsThreads) {
      const T* kj = k + j * p.k_stride[2];
      float dot = 0.f;
      for (int64_t d = 0; d < s.D; ++d) dot += sq[d] * to_f(kj[d]);
      const float x = dot * float(a.scale) + score_bias<T>(a, s, mbase, i, j);
      out[j] = from_f<T>(expf(x - lse) * drop.factor(row_base, s.Lk, i, j));
    }
    __syncthreads();
  }
}

// ---------------------------------------------------------------------------------------
// Launchers.

template <typename K>
void allow_smem(K* kernel, size_t bytes) {
  if (bytes > 48 * 1024)
    cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes));
}

template <typename T, int kD>
void forward_d(const AttentionFwdParams& p, cudaStream_t stream) {
  using C = Cfg<T, kD>;
  constexpr size_t smem = fwd_smem<T, kD>();
  allow_smem(attention_fwd<T, kD>, smem);
  const int64_t work = (p.s.Lq + C::kM - 1) / C::kM * p.s.B * p.s.Hq;
  FL_LAUNCH((attention_fwd<T, kD>), blocks_for(work), C::kThreads, smem, stream)(p);
}

template <typename T, int kD, bool kDV, bool kDK>
void dkdv_d(const AttentionBwdParams& p, const float* delta, cudaStream_t stream) {
  using C = Cfg<T, kD>;
  constexpr size_t smem = dkdv_smem<T, kD>();
  allow_smem(attention_bwd_dkdv<T, kD, kDV, kDK>, smem);
  const int64_t work = (p.s.Lk + C::kM - 1) / C::kM * p.s.B * p.s.Hkv;
  FL_LAUNCH((attention_bwd_dkdv<T, kD, kDV, kDK>), blocks_for(work), C::kThreads, smem, stream)
  (p, delta);
}

template <typename T, int kD>
void backward_d(const AttentionBwdParams& p, float* delta, cudaStream_t stream) {
  using C = Cfg<T, kD>;
  if constexpr (C::kF32) {
    const int64_t rows = p.s.B * p.s.Hq * p.s.Lq;
    FL_LAUNCH(attention_bwd_delta<T>, blocks_for((rows + 7) / 8), 256, 0, stream)(p, delta);
  }
  // dQ first: for half types it computes delta.
  constexpr size_t smem = dq_smem<T, kD>();
  allow_smem(attention_bwd_dq<T, kD>, smem);
  const int64_t work = (p.s.Lq + C::kM - 1) / C::kM * p.s.B * p.s.Hq;
  FL_LAUNCH((attention_bwd_dq<T, kD>), blocks_for(work), C::kThreads, smem, stream)(p, delta);
  if constexpr (kD > 128) {
    dkdv_d<T, kD, true, false>(p, delta, stream);
    dkdv_d<T, kD, false, true>(p, delta, stream);
  } else {
    dkdv_d<T, kD, true, true>(p, delta, stream);
  }
}

template <typename T, typename P, typename F64, typename F128, typename F256>
void by_head_dim(const P& p, F64&& f64, F128&& f128, F256&& f256) {
  const int64_t d = p.s.D > p.s.Dv ? p.s.D : p.s.Dv;
  if (d <= 64)
    f64();
  else if (d <= 128)
    f128();
  else
    f256();
}

template <typename T>
void forward_t(const AttentionFwdParams& p, cudaStream_t stream) {
  by_head_dim<T>(
      p, [&] { forward_d<T, 64>(p, stream); }, [&] { forward_d<T, 128>(p, stream); },
      [&] { forward_d<T, 256>(p, stream); });
}

template <typename T>
void backward_t(const AttentionBwdParams& p, float* delta, cudaStream_t stream) {
  by_head_dim<T>(
      p, [&] { backward_d<T, 64>(p, delta, stream); },
      [&] { backward_d<T, 128>(p, delta, stream); }, [&] { backward_d<T, 256>(p, delta, stream); });
}

template <typename T>
void probs_t(const AttentionProbsParams& p, const int64_t* rows, cudaStream_t stream) {
  const size_t smem = sizeof(float) * size_t(p.s.D);
  allow_smem(attention_probs_rows<T>, smem);
  FL_LAUNCH(attention_probs_rows<T>, blocks_for(p.s.B * p.s.Hq * p.R), kProbsThreads, smem, stream)(
      p, rows);
}

}  // namespace

void attention_forward(const AttentionFwdParams& p, CUstream_st* stream) {
  switch (p.s.dtype) {
    case DType::kFloat32: return forward_t<float>(p, stream);
    case DType::kFloat16: return forward_t<__half>(p, stream);
    case DType::kBFloat16: return forward_t<__nv_bfloat16>(p, stream);
    default: return;  // the glue admits only the types above
  }
}

void attention_backward(const AttentionBwdParams& p, float* delta, CUstream_st* stream) {
  switch (p.s.dtype) {
    case DType::kFloat32: return backward_t<float>(p, delta, stream);
    case DType::kFloat16: return backward_t<__half>(p, delta, stream);
    case DType::kBFloat16: return backward_t<__nv_bfloat16>(p, delta, stream);
    default: return;
  }
}

void attention_probs(const AttentionProbsParams& p, const int64_t* rows, CUstream_st* stream) {
  switch (p.s.dtype) {
    case DType::kFloat32: return probs_t<float>(p, rows, stream);
    case DType::kFloat16: return probs_t<__half>(p, rows, stream);
    case DType::kBFloat16: return probs_t<__nv_bfloat16>(p, rows, stream);
    default: return;
  }
}

}  // namespace cuda
}  // namespace fl
