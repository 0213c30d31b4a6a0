// 2-D convolution on CUDA (fastlayers/conv2d.h): forward, data gradient (dgrad) and weight
// gradient (wgrad), each an implicit GEMM per group g over NHWC tensors:
//
//   pass   GEMM rows (M)     GEMM columns        reduction (Kd)   A[m, kk]           B[kk, n]
//   fwd    n p q   (N P Q)   k'  (K')            r s c' (R S C')  x under (p, q)     w[k', c', r,
//   s] dgrad  n h w   (N H W)   c'  (C')            r s k' (R S K')  gy over (h, w)     w[k', c',
//   r, s] wgrad  k'      (K')      r s c' (R S C')     n p q  (N P Q)   gy[npq, k']        x under
//   (p, q)
//
// with C' = C / groups and K' = K / groups. Nothing is materialised: the loaders gather A
// and B from x, gy and the weight on the fly (zero where a tap falls in the padding, or, in
// dgrad, where no output pixel reads the input pixel: the stride does not divide).
//
// Three kernel families:
// - conv_mma (float16, bfloat16): tensor cores, mma.sync m16n8k16 with float accumulation.
//   A 128 x 128 tile per block, 8 warps (2 x 4) of 64 x 32, kBK = 32 reduction elements per
//   stage through a 3-stage cp.async pipeline. fwd and dgrad keep both tiles reduction-
//   innermost ([rows][kBK], plain ldmatrix) because the reduction index runs along C
//   (or K) in NHWC memory and the transformed weights the glue passes ([K, R, S, C'] for
//   fwd, [C, R, S, K'] for dgrad) are rows of B; wgrad reduces over pixels, so its tiles are
//   [kBK][rows] and read by ldmatrix .trans. Chunks of 8 contiguous elements (16 bytes) go
//   by cp.async when the channel count per group is a multiple of 8 (then 8 consecutive
//   reduction indices share one tap); otherwise (in_channels 3, say) each element is
//   gathered by a plain load. wgrad is split over the reduction (blockIdx.y) into a float
//   workspace, summed in a fixed order by wgrad_finalize, so results are deterministic.
// - conv_simt (float32, float64): the same implicit GEMMs on FMA units, 64 x 64 tiles, each
//   thread 4 x 4 outputs, elements gathered one by one into shared memory.
// - direct kernels (every dtype), for depthwise and small-group convolutions (C' or K' < 8),
//   where a GEMM tile would be mostly padding: a thread per output (fwd) or input-gradient
//   element (dgrad), a block per weight element (wgrad), NCHW or NHWC by element strides.
// The bias gradient is a column sum of gy (fixed order). All element offsets are int64.

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "fastlayers/conv2d.h"
#include "kernels/cuda/convert.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/ptx.cuh"

namespace fl {
namespace cuda {
namespace {

// The pass, as an int template argument so that kernel names read the same in nvcc's and
// the emulator's spelling (scripts/emu_coverage.py matches them).
using Pass = int;
namespace pass {
constexpr Pass kFwd = 0, kDgrad = 1, kWgrad = 2;
}  // namespace pass

// The accumulator of storage type T: double for double, float otherwise.
template <typename T>
using Acc = std::conditional_t<std::is_same_v<T, double>, double, float>;

template <typename T>
__device__ __forceinline__ Acc<T> ld(T v) {
  if constexpr (std::is_same_v<T, double>)
    return v;
  else
    return to_f(v);
}

template <typename T>
__device__ __forceinline__ T st(Acc<T> v) {
  if constexpr (std::is_same_v<T, double>)
    return v;
  else
    return from_f<T>(v);
}

// Everything a pass needs; pointers typed by the kernel.
struct ConvArgs {
  Conv2dShape s;
  int64_t Cg, Kg;    // channels per group: input, output
  const void* x;     // [N, H, W, C] (direct kernels: NCHW or NHWC per s.channels_last)
  const void* gy;    // [N, P, Q, K] (likewise)
  const void* w;     // [K, C', R, S]
  const void* w_t;   // conv_mma's B rows: fwd [K, R, S, C'], dgrad [G, C', R, S, K']
  const void* bias;  // [K] or null (fwd)
  void* out;         // fwd y, dgrad gx, direct wgrad gw
  void* ws;          // wgrad: [splits, K, R S C'] partial sums in Acc<T>
  int splits;
};

// GEMM extents of one group.
template <Pass P>
__host__ __device__ __forceinline__ int64_t gemm_m(const ConvArgs& a) {
  if constexpr (P == pass::kFwd) return a.s.N * a.s.P * a.s.Q;
  if constexpr (P == pass::kDgrad) return a.s.N * a.s.H * a.s.W;
  return a.Kg;
}
template <Pass P>
__host__ __device__ __forceinline__ int64_t gemm_n(const ConvArgs& a) {
  if constexpr (P == pass::kFwd) return a.Kg;
  if constexpr (P == pass::kDgrad) return a.Cg;
  return a.s.R * a.s.S * a.Cg;
}
template <Pass P>
__host__ __device__ __forceinline__ int64_t gemm_k(const ConvArgs& a) {
  if constexpr (P == pass::kFwd) return a.s.R * a.s.S * a.Cg;
  if constexpr (P == pass::kDgrad) return a.s.R * a.s.S * a.Kg;
  return a.s.N * a.s.P * a.s.Q;
}

template <typename T>
__device__ __forceinline__ T zero() {
  if constexpr (std::is_same_v<T, double> || std::is_same_v<T, float>)
    return T(0);
  else
    return from_f<T>(0.f);
}

// im2col of group g: x[n, p sh - pt + r dh, q sw - pl + s dw, g C' + c] for output pixel
// npq = (n, p, q) and rsc = (r, s, c), or 0 in the padding. NHWC.
template <typename T>
__device__ T im2col(const ConvArgs& a, int64_t g, int64_t npq, int64_t rsc) {
  const Conv2dShape& s = a.s;
  const int64_t c = rsc % a.Cg, rs = rsc / a.Cg, r = rs / s.S, sx = rs % s.S;
  const int64_t q = npq % s.Q, t = npq / s.Q, p = t % s.P, n = t / s.P;
  const int64_t h = p * s.sh - s.pt + r * s.dh, w = q * s.sw - s.pl + sx * s.dw;
  if (h < 0 || h >= s.H || w < 0 || w >= s.W) return zero<T>();
  return static_cast<const T*>(a.x)[((n * s.H + h) * s.W + w) * s.C + g * a.Cg + c];
}

// dgrad's A of group g: gy[n, p, q, g K' + k] for input pixel nhw = (n, h, w) and rsk =
// (r, s, k), where p sh - pt + r dh = h and q sw - pl + s dw = w; 0 where no such (p, q).
template <typename T>
__device__ T dcol(const ConvArgs& a, int64_t g, int64_t nhw, int64_t rsk) {
  const Conv2dShape& s = a.s;
  const int64_t k = rsk % a.Kg, rs = rsk / a.Kg, r = rs / s.S, sx = rs % s.S;
  const int64_t w = nhw % s.W, t = nhw / s.W, h = t % s.H, n = t / s.H;
  const int64_t ph = h + s.pt - r * s.dh, qw = w + s.pl - sx * s.dw;
  if (ph < 0 || qw < 0 || ph % s.sh != 0 || qw % s.sw != 0) return zero<T>();
  const int64_t p = ph / s.sh, q = qw / s.sw;
  if (p >= s.P || q >= s.Q) return zero<T>();
  return static_cast<const T*>(a.gy)[((n * s.P + p) * s.Q + q) * s.K + g * a.Kg + k];
}

template <typename T>
__device__ __forceinline__ T weight_at(const ConvArgs& a, int64_t k, int64_t c, int64_t r,
                                       int64_t sx) {
  return static_cast<const T*>(a.w)[((k * a.Cg + c) * a.s.R + r) * a.s.S + sx];
}

// A[m, kk] and B[kk, n] of group g (see the table above); callers keep m, n, kk in range.
template <typename T, Pass P>
__device__ T gather_a(const ConvArgs& a, int64_t g, int64_t m, int64_t kk) {
  if constexpr (P == pass::kFwd) return im2col<T>(a, g, m, kk);
  if constexpr (P == pass::kDgrad) return dcol<T>(a, g, m, kk);
  return static_cast<const T*>(a.gy)[kk * a.s.K + g * a.Kg + m];
}

template <typename T, Pass P>
__device__ T gather_b(const ConvArgs& a, int64_t g, int64_t n, int64_t kk) {
  if constexpr (P == pass::kWgrad) return im2col<T>(a, g, kk, n);
  const int64_t inner = P == pass::kFwd ? a.Cg : a.Kg;
  const int64_t i = kk % inner, rs = kk / inner, r = rs / a.s.S, sx = rs % a.s.S;
  if constexpr (P == pass::kFwd) return weight_at<T>(a, g * a.Kg + n, i, r, sx);
  return weight_at<T>(a, g * a.Kg + i, n, r, sx);
}

// The epilogue of one GEMM element (m, n) of group g: fwd y (+ bias), dgrad gx, wgrad the
// split's partial sum.
template <typename T, Pass P>
__device__ __forceinline__ void emit(const ConvArgs& a, int64_t g, int split, int64_t m, int64_t n,
                                     Acc<T> v) {
  if constexpr (P == pass::kFwd) {
    const int64_t k = g * a.Kg + n;
    if (a.bias != nullptr) v += ld(static_cast<const T*>(a.bias)[k]);
    static_cast<T*>(a.out)[m * a.s.K + k] = st<T>(v);
  } else if constexpr (P == pass::kDgrad) {
    static_cast<T*>(a.out)[m * a.s.C + g * a.Cg + n] = st<T>(v);
  } else {
    const int64_t cols = a.s.R * a.s.S * a.Cg;
    static_cast<Acc<T>*>(a.ws)[(split * a.s.K + g * a.Kg + m) * cols + n] = v;
  }
}

// The reduction steps [begin, end) of `split` among a.splits over nk steps.
__device__ __forceinline__ void split_range(int64_t nk, int splits, int split, int64_t& begin,
                                            int64_t& end) {
  const int64_t per = (nk + splits - 1) / splits;
  begin = split * per;
  end = begin + per < nk ? begin + per : nk;
}

// ------------------------------------------------------------------------------------------
// Tensor cores (float16, bfloat16).

constexpr int kBM = 128, kBN = 128, kBK = 32, kStages = 3, kThreads = 256;
constexpr int kLdK = kBK + 8;  // [rows][kBK] tile row: 80 bytes, 8 ldmatrix rows in distinct banks
constexpr int kLdR = kBM + 8;  // [kBK][rows] tile row (wgrad): 272 bytes, likewise
constexpr int kStageElems = (kBM + kBN) * kLdK;  // >= 2 * kBK * kLdR
constexpr size_t kSmemMma = size_t(kStages) * kStageElems * 2;
static_assert(2 * kBK * kLdR <= kStageElems, "a wgrad stage must fit in a stage");

template <typename T>
__device__ __forceinline__ void mma(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>)
    ptx::mma_m16n8k16_bf16_f32(d, a, b, d);
  else
    ptx::mma_m16n8k16_f16_f32(d, a, b, d);
}

__device__ __forceinline__ void zero16(void* dst) {
  *reinterpret_cast<uint4*>(dst) = make_uint4(0, 0, 0, 0);
}

// Whether 16-byte chunks may be copied: channel counts (per group and in all) multiples of
// 8 and 16-byte aligned bases, so that 8 consecutive reduction indices are 8 contiguous,
// aligned elements of one tap.
struct MmaVec {
  bool a, b;
};

template <Pass P>
MmaVec mma_vec(const ConvArgs& a) {
  auto al = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  const Conv2dShape& s = a.s;
  if constexpr (P == pass::kFwd)
    return {a.Cg % 8 == 0 && s.C % 8 == 0 && al(a.x), gemm_k<P>(a) % 8 == 0 && al(a.w_t)};
  if constexpr (P == pass::kDgrad)
    return {a.Kg % 8 == 0 && s.K % 8 == 0 && al(a.gy), gemm_k<P>(a) % 8 == 0 && al(a.w_t)};
  return {a.Kg % 8 == 0 && s.K % 8 == 0 && al(a.gy), a.Cg % 8 == 0 && s.C % 8 == 0 && al(a.x)};
}

template <typename T, Pass P>
__global__ void __launch_bounds__(kThreads) conv_mma(ConvArgs a, MmaVec vec) {
  constexpr bool kRedInner = P != pass::kWgrad;
  FL_DYNAMIC_SHARED(T, smem);
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int wm = (warp / 4) * 64, wn = (warp % 4) * 32;  // this warp's 64 x 32 of the tile
  const Conv2dShape& s = a.s;
  const int64_t M = gemm_m<P>(a), N = gemm_n<P>(a), Kd = gemm_k<P>(a);
  const int64_t tm = (M + kBM - 1) / kBM, tn = (N + kBN - 1) / kBN, tiles = tm * tn;
  const int64_t nk = (Kd + kBK - 1) / kBK;
  int64_t kt_begin, kt_end;
  split_range(nk, a.splits, blockIdx.y, kt_begin, kt_end);
  const T* x = static_cast<const T*>(a.x);
  const T* gy = static_cast<const T*>(a.gy);
  const T* wt = static_cast<const T*>(a.w_t);

  for (int64_t w = blockIdx.x; w < s.groups * tiles; w += gridDim.x) {
    const int64_t g = w / tiles, m0 = (w % tiles % tm) * kBM, n0 = (w % tiles / tm) * kBN;
    // This thread's two chunk rows (fwd, dgrad: GEMM rows of A; wgrad: reduction rows) and
    // its chunk column; what the loads need of them is computed once per tile.
    const int crow = kRedInner ? tid / 4 : tid / 16;  // + 64 i (fwd, dgrad), + 16 i (wgrad)
    const int ccol = kRedInner ? (tid % 4) * 8 : (tid % 16) * 8;
    int64_t rn[2];     // fwd, dgrad: image n of A row m0 + crow + 64 i (-1 past M)
    int rh[2], rw[2];  // fwd: top-left tap p sh - pt, q sw - pl; dgrad: h + pt, w + pl
    if constexpr (kRedInner) {
      for (int i = 0; i < 2; ++i) {
        const int64_t m = m0 + crow + 64 * i;
        const int64_t hh = P == pass::kFwd ? s.P : s.H, ww = P == pass::kFwd ? s.Q : s.W;
        rn[i] = m < M ? m / (hh * ww) : -1;
        const int64_t y = m / ww % hh, xx = m % ww;
        rh[i] = int(P == pass::kFwd ? y * s.sh - s.pt : y + s.pt);
        rw[i] = int(P == pass::kFwd ? xx * s.sw - s.pl : xx + s.pl);
      }
    }
    // wgrad: the tap (r, s, c) of this thread's B chunk column.
    int br = 0, bs = 0, bc = 0;
    if constexpr (!kRedInner) {
      const int64_t col = n0 + ccol;
      bc = int(col % a.Cg);
      br = int(col / a.Cg / s.S);
      bs = int(col / a.Cg % s.S);
    }

    auto load = [&](int64_t kt, int stage) {
      T* sa = smem + stage * kStageElems;
      T* sb = sa + (kRedInner ? kBM * kLdK : kBK * kLdR);
      const int64_t k0 = kt * kBK;
      for (int i = 0; i < 2; ++i) {
        if constexpr (kRedInner) {
          const int row = crow + 64 * i;
          const int64_t kk = k0 + ccol;
          // A: 8 reduction elements of GEMM row m0 + row.
          T* da = sa + row * kLdK + ccol;
          if (rn[i] < 0 || kk >= Kd) {
            zero16(da);
          } else if (vec.a) {
            const int inner = int(P == pass::kFwd ? a.Cg : a.Kg);
            const int ci = int(kk % inner), rs = int(kk / inner), r = rs / int(s.S),
                      sx = rs % int(s.S);
            const T* src = nullptr;
            if constexpr (P == pass::kFwd) {
              const int64_t h = rh[i] + int64_t(r) * s.dh, ww = rw[i] + int64_t(sx) * s.dw;
              if (h >= 0 && h < s.H && ww >= 0 && ww < s.W)
                src = x + ((rn[i] * s.H + h) * s.W + ww) * s.C + g * a.Cg + ci;
            } else {
              // 32-bit: coordinates are below 2^31, and a 64-bit division is a call.
              const int ph = rh[i] - r * int(s.dh), qw = rw[i] - sx * int(s.dw);
              const int sh = int(s.sh), sw = int(s.sw);
              if (ph >= 0 && qw >= 0 && ph % sh == 0 && qw % sw == 0 && ph / sh < s.P &&
                  qw / sw < s.Q)
                src = gy + ((rn[i] * s.P + ph / sh) * s.Q + qw / sw) * s.K + g * a.Kg + ci;
            }
            if (src != nullptr)
              ptx::cp_async_16(da, src);
            else
              zero16(da);
          } else {
            for (int e = 0; e < 8; ++e)
              da[e] = kk + e < Kd ? gather_a<T, P>(a, g, m0 + row, kk + e) : zero<T>();
          }
          // B: 8 reduction elements of transformed-weight row n0 + row.
          T* db = sb + row * kLdK + ccol;
          const int64_t n = n0 + row;
          if (n >= N || kk >= Kd) {
            zero16(db);
          } else {
            const T* src = wt + ((P == pass::kFwd ? g * a.Kg : g * a.Cg) + n) * Kd + kk;
            if (vec.b) {
              ptx::cp_async_16(db, src);
            } else {
              for (int e = 0; e < 8; ++e) db[e] = kk + e < Kd ? src[e] : zero<T>();
            }
          }
        } else {
          const int row = crow + 16 * i;  // reduction row: output pixel k0 + row
          const int64_t npq = k0 + row;
          // A: gy[npq, g K' + m0 + ccol ...], 8 output channels.
          T* da = sa + row * kLdR + ccol;
          const int64_t m = m0 + ccol;
          if (npq >= Kd || m >= M) {
            zero16(da);
          } else if (vec.a) {
            const int64_t left = M - m;
            const T* src = gy + npq * s.K + g * a.Kg + m;
            if (left >= 8)
              ptx::cp_async_16(da, src);
            else
              ptx::cp_async_16_zfill(da, src, int(left) * 2);
          } else {
            for (int e = 0; e < 8; ++e)
              da[e] = m + e < M ? gather_a<T, P>(a, g, m + e, npq) : zero<T>();
          }
          // B: x under output pixel npq at tap (br, bs), 8 input channels from bc.
          T* db = sb + row * kLdR + ccol;
          const int64_t n = n0 + ccol;
          if (npq >= Kd || n >= N) {
            zero16(db);
          } else if (vec.b) {
            const int64_t q = npq % s.Q, t = npq / s.Q, p = t % s.P, nn = t / s.P;
            const int64_t h = p * s.sh - s.pt + br * s.dh, ww = q * s.sw - s.pl + bs * s.dw;
            if (h >= 0 && h < s.H && ww >= 0 && ww < s.W)
              ptx::cp_async_16(db, x + ((nn * s.H + h) * s.W + ww) * s.C + g * a.Cg + bc);
            else
              zero16(db);
          } else {
            for (int e = 0; e < 8; ++e)
              db[e] = n + e < N ? gather_b<T, P>(a, g, n + e, npq) : zero<T>();
          }
        }
      }
    };

    // Prologue: two stages in flight (empty groups where there is no step, so the wait
    // counts below stay uniform).
    for (int st = 0; st < kStages - 1; ++st) {
      if (kt_begin + st < kt_end) load(kt_begin + st, st);
      ptx::cp_async_commit();
    }
    float acc[4][4][4] = {};
    for (int64_t kt = kt_begin; kt < kt_end; ++kt) {
      ptx::cp_async_wait<kStages - 2>();  // step kt has landed (for this thread)
      __syncthreads();                    // ... for every thread; step kt - 1 is consumed
      const int64_t next = kt + kStages - 1;
      if (next < kt_end) load(next, int((next - kt_begin) % kStages));
      ptx::cp_async_commit();
      const T* sa = smem + int((kt - kt_begin) % kStages) * kStageElems;
      const T* sb = sa + (kRedInner ? kBM * kLdK : kBK * kLdR);
#pragma unroll
      for (int k16 = 0; k16 < kBK; k16 += 16) {
        uint32_t af[4][4], bf[4][2];
#pragma unroll
        for (int mt = 0; mt < 4; ++mt) {
          if constexpr (kRedInner)
            ptx::ldmatrix_x4(af[mt],
                             sa + (wm + 16 * mt + lane % 16) * kLdK + k16 + 8 * (lane / 16));
          else
            ptx::ldmatrix_x4_trans(af[mt], sa + (k16 + lane % 8 + 8 * (lane / 16)) * kLdR + wm +
                                               16 * mt + 8 * ((lane / 8) % 2));
        }
#pragma unroll
        for (int np = 0; np < 2; ++np) {
          uint32_t r[4];
          if constexpr (kRedInner)
            ptx::ldmatrix_x4(r, sb + (wn + 16 * np + lane % 8 + 8 * (lane / 16)) * kLdK + k16 +
                                    8 * ((lane / 8) % 2));
          else
            ptx::ldmatrix_x4_trans(r, sb + (k16 + lane % 8 + 8 * ((lane / 8) % 2)) * kLdR + wn +
                                          16 * np + 8 * (lane / 16));
          bf[2 * np][0] = r[0];
          bf[2 * np][1] = r[1];
          bf[2 * np + 1][0] = r[2];
          bf[2 * np + 1][1] = r[3];
        }
#pragma unroll
        for (int mt = 0; mt < 4; ++mt)
#pragma unroll
          for (int nt = 0; nt < 4; ++nt) mma<T>(acc[mt][nt], af[mt], bf[nt]);
      }
    }
    ptx::cp_async_wait_all();
    const int gq = lane / 4, tq = lane % 4;
#pragma unroll
    for (int mt = 0; mt < 4; ++mt)
#pragma unroll
      for (int nt = 0; nt < 4; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int64_t m = m0 + wm + 16 * mt + gq + 8 * (e / 2);
          const int64_t n = n0 + wn + 8 * nt + 2 * tq + e % 2;
          if (m < M && n < N) emit<T, P>(a, g, blockIdx.y, m, n, acc[mt][nt][e]);
        }
    __syncthreads();  // the next tile's prologue overwrites the stages
  }
}

// ------------------------------------------------------------------------------------------
// SIMT (float32, float64).

constexpr int kSM = 64, kSN = 64, kSK = 16, kSThreads = 256;

template <typename T, Pass P>
__global__ void __launch_bounds__(kSThreads) conv_simt(ConvArgs a) {
  using A = Acc<T>;
  __shared__ A sa[kSK][kSM + 1], sb[kSK][kSN + 1];
  const int tid = threadIdx.x, ty = tid / 16, tx = tid % 16;
  const int64_t M = gemm_m<P>(a), N = gemm_n<P>(a), Kd = gemm_k<P>(a);
  const int64_t tm = (M + kSM - 1) / kSM, tn = (N + kSN - 1) / kSN, tiles = tm * tn;
  const int64_t nk = (Kd + kSK - 1) / kSK;
  int64_t kt_begin, kt_end;
  split_range(nk, a.splits, blockIdx.y, kt_begin, kt_end);
  for (int64_t w = blockIdx.x; w < a.s.groups * tiles; w += gridDim.x) {
    const int64_t g = w / tiles, m0 = (w % tiles % tm) * kSM, n0 = (w % tiles / tm) * kSN;
    A acc[4][4] = {};
    for (int64_t kt = kt_begin; kt < kt_end; ++kt) {
      const int64_t k0 = kt * kSK;
      // Neighbouring threads take neighbouring elements along the operand's contiguous
      // dimension: the reduction in fwd and dgrad, the rows and columns in wgrad.
      for (int e = tid; e < kSK * kSM; e += kSThreads) {
        const int kk = P == pass::kWgrad ? e / kSM : e % kSK;
        const int i = P == pass::kWgrad ? e % kSM : e / kSK;
        const bool in = k0 + kk < Kd;
        sa[kk][i] = in && m0 + i < M ? ld(gather_a<T, P>(a, g, m0 + i, k0 + kk)) : A(0);
        sb[kk][i] = in && n0 + i < N ? ld(gather_b<T, P>(a, g, n0 + i, k0 + kk)) : A(0);
      }
      __syncthreads();
#pragma unroll
      for (int kk = 0; kk < kSK; ++kk) {
        A av[4], bv[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) av[i] = sa[kk][ty + 16 * i], bv[i] = sb[kk][tx + 16 * i];
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
          for (int j = 0; j < 4; ++j) acc[i][j] += av[i] * bv[j];
      }
      __syncthreads();  // the tiles are consumed before the next step overwrites them
    }
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < 4; ++j) {
        const int64_t m = m0 + ty + 16 * i, n = n0 + tx + 16 * j;
        if (m < M && n < N) emit<T, P>(a, g, blockIdx.y, m, n, acc[i][j]);
      }
  }
}

// gw[k, c, r, s] = sum over the splits of ws[split, k, (r s c)], in split order.
template <typename T>
__global__ void __launch_bounds__(256) wgrad_finalize(ConvArgs a) {
  const Conv2dShape& s = a.s;
  const int64_t cols = s.R * s.S * a.Cg, total = s.K * cols;
  const Acc<T>* ws = static_cast<const Acc<T>*>(a.ws);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t sx = i % s.S, r = i / s.S % s.R, c = i / (s.S * s.R) % a.Cg,
                  k = i / (s.S * s.R * a.Cg);
    const int64_t col = (r * s.S + sx) * a.Cg + c;
    Acc<T> v = 0;
    for (int z = 0; z < a.splits; ++z) v += ws[(z * s.K + k) * cols + col];
    static_cast<T*>(a.out)[i] = st<T>(v);
  }
}

// ------------------------------------------------------------------------------------------
// Direct kernels (every dtype), NCHW or NHWC.

// Element strides of an [N, C, H, W] tensor in the shape's layout.
struct Strides {
  int64_t n, c, h, w;
};
__device__ __forceinline__ Strides strides(int64_t C, int64_t H, int64_t W, bool cl) {
  return cl ? Strides{H * W * C, 1, W * C, C} : Strides{C * H * W, H * W, W, 1};
}

// (n, c, h, w) of the element at memory offset i.
__device__ __forceinline__ void unravel(int64_t i, int64_t C, int64_t H, int64_t W, bool cl,
                                        int64_t& n, int64_t& c, int64_t& h, int64_t& w) {
  if (cl) {
    c = i % C, w = i / C % W, h = i / (C * W) % H, n = i / (C * W * H);
  } else {
    w = i % W, h = i / W % H, c = i / (W * H) % C, n = i / (W * H * C);
  }
}

template <typename T>
__global__ void __launch_bounds__(256) direct_fwd(ConvArgs a) {
  const Conv2dShape& s = a.s;
  const T* x = static_cast<const T*>(a.x);
  const Strides xs = strides(s.C, s.H, s.W, s.channels_last);
  const int64_t total = s.N * s.K * s.P * s.Q;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    int64_t n, k, p, q;
    unravel(i, s.K, s.P, s.Q, s.channels_last, n, k, p, q);
    const int64_t g = k / a.Kg;
    Acc<T> v = a.bias != nullptr ? ld(static_cast<const T*>(a.bias)[k]) : Acc<T>(0);
    for (int64_t c = 0; c < a.Cg; ++c) {
      const T* xc = x + n * xs.n + (g * a.Cg + c) * xs.c;
      for (int64_t r = 0; r < s.R; ++r) {
        const int64_t h = p * s.sh - s.pt + r * s.dh;
        if (h < 0 || h >= s.H) continue;
        for (int64_t sx = 0; sx < s.S; ++sx) {
          const int64_t w = q * s.sw - s.pl + sx * s.dw;
          if (w >= 0 && w < s.W)
            v += ld(xc[h * xs.h + w * xs.w]) * ld(weight_at<T>(a, k, c, r, sx));
        }
      }
    }
    static_cast<T*>(a.out)[i] = st<T>(v);
  }
}

template <typename T>
__global__ void __launch_bounds__(256) direct_dgrad(ConvArgs a) {
  const Conv2dShape& s = a.s;
  const T* gy = static_cast<const T*>(a.gy);
  const Strides ys = strides(s.K, s.P, s.Q, s.channels_last);
  const int64_t total = s.N * s.C * s.H * s.W;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    int64_t n, c, h, w;
    unravel(i, s.C, s.H, s.W, s.channels_last, n, c, h, w);
    const int64_t g = c / a.Cg, cg = c % a.Cg;
    // 32-bit coordinates (below 2^31): a 64-bit division is a call, and spills around it.
    const int sh = int(s.sh), sw = int(s.sw);
    Acc<T> v = 0;
    for (int r = 0; r < int(s.R); ++r) {
      const int ph = int(h + s.pt) - r * int(s.dh);
      if (ph < 0 || ph % sh != 0 || ph / sh >= s.P) continue;
      for (int sx = 0; sx < int(s.S); ++sx) {
        const int qw = int(w + s.pl) - sx * int(s.dw);
        if (qw < 0 || qw % sw != 0 || qw / sw >= s.Q) continue;
        const T* go = gy + n * ys.n + int64_t(ph / sh) * ys.h + int64_t(qw / sw) * ys.w;
        for (int64_t kg = 0; kg < a.Kg; ++kg) {
          const int64_t k = g * a.Kg + kg;
          v += ld(go[k * ys.c]) * ld(weight_at<T>(a, k, cg, r, sx));
        }
      }
    }
    static_cast<T*>(a.out)[i] = st<T>(v);
  }
}

// Block-wide sum (blockDim.x == 256), the same order on every run.
template <typename A>
__device__ A block_sum(A v) {
  __shared__ A part[8];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  if (threadIdx.x % 32 == 0) part[threadIdx.x / 32] = v;
  __syncthreads();
  A t = 0;
  for (int i = 0; i < 8; ++i) t += part[i];
  __syncthreads();  // part is reused by the next call
  return t;
}

// A block per weight element (k, c, r, s): the sum over output pixels of gy * x.
template <typename T>
__global__ void __launch_bounds__(256) direct_wgrad(ConvArgs a) {
  const Conv2dShape& s = a.s;
  const T* x = static_cast<const T*>(a.x);
  const T* gy = static_cast<const T*>(a.gy);
  const Strides xs = strides(s.C, s.H, s.W, s.channels_last);
  const Strides ys = strides(s.K, s.P, s.Q, s.channels_last);
  const int64_t weights = s.K * a.Cg * s.R * s.S, pixels = s.N * s.P * s.Q;
  for (int64_t wi = blockIdx.x; wi < weights; wi += gridDim.x) {
    const int64_t sx = wi % s.S, r = wi / s.S % s.R, cg = wi / (s.S * s.R) % a.Cg,
                  k = wi / (s.S * s.R * a.Cg);
    const int64_t c = k / a.Kg * a.Cg + cg;
    Acc<T> v = 0;
    for (int64_t j = threadIdx.x; j < pixels; j += blockDim.x) {
      const int64_t q = j % s.Q, p = j / s.Q % s.P, n = j / (s.Q * s.P);
      const int64_t h = p * s.sh - s.pt + r * s.dh, w = q * s.sw - s.pl + sx * s.dw;
      if (h >= 0 && h < s.H && w >= 0 && w < s.W)
        v += ld(gy[n * ys.n + k * ys.c + p * ys.h + q * ys.w]) *
             ld(x[n * xs.n + c * xs.c + h * xs.h + w * xs.w]);
    }
    v = block_sum(v);
    if (threadIdx.x == 0) static_cast<T*>(a.out)[wi] = st<T>(v);
  }
}

// gb[k] = sum of gy over n, p, q. NHWC: 32 columns per block, 8 row phases; NCHW: a block
// per channel over its N planes.
template <typename T>
__global__ void __launch_bounds__(256) bias_grad(ConvArgs a) {
  const Conv2dShape& s = a.s;
  const T* gy = static_cast<const T*>(a.gy);
  const int64_t pq = s.P * s.Q, rows = s.N * pq;
  if (s.channels_last) {
    __shared__ Acc<T> part[8][33];
    const int lane = threadIdx.x % 32, phase = threadIdx.x / 32;
    for (int64_t k0 = blockIdx.x * int64_t(32); k0 < s.K; k0 += int64_t(gridDim.x) * 32) {
      const int64_t k = k0 + lane;
      Acc<T> v = 0;
      if (k < s.K)
        for (int64_t r = phase; r < rows; r += 8) v += ld(gy[r * s.K + k]);
      part[phase][lane] = v;
      __syncthreads();
      if (phase == 0 && k < s.K) {
        Acc<T> t = 0;
        for (int i = 0; i < 8; ++i) t += part[i][lane];
        static_cast<T*>(a.out)[k] = st<T>(t);
      }
      __syncthreads();
    }
  } else {
    for (int64_t k = blockIdx.x; k < s.K; k += gridDim.x) {
      Acc<T> v = 0;
      for (int64_t j = threadIdx.x; j < rows; j += blockDim.x)
        v += ld(gy[(j / pq * s.K + k) * pq + j % pq]);
      v = block_sum(v);
      if (threadIdx.x == 0) static_cast<T*>(a.out)[k] = st<T>(v);
    }
  }
}

// ------------------------------------------------------------------------------------------
// Host side.

constexpr int kTargetBlocks = 2 * 132;  // two waves of an H100/H200

bool is_direct(const Conv2dShape& s) {
  const int64_t cg = s.C / s.groups, kg = s.K / s.groups;
  return s.groups > 1 && (cg < 8 || kg < 8);
}

bool uses_mma(const Conv2dShape& s) {
  return !is_direct(s) && (s.dtype == DType::kFloat16 || s.dtype == DType::kBFloat16);
}

ConvArgs make_args(const Conv2dShape& s) {
  ConvArgs a{};
  a.s = s;
  a.Cg = s.C / s.groups;
  a.Kg = s.K / s.groups;
  a.splits = 1;
  return a;
}

// wgrad's reduction split: enough blocks for two waves, each split at least 8 steps.
int wgrad_splits(const Conv2dShape& s) {
  if (is_direct(s)) return 1;
  const ConvArgs a = make_args(s);
  const bool mma = uses_mma(s);
  const int64_t bm = mma ? kBM : kSM, bn = mma ? kBN : kSN, bk = mma ? kBK : kSK;
  const int64_t tiles =
      s.groups * ((a.Kg + bm - 1) / bm) * ((gemm_n<pass::kWgrad>(a) + bn - 1) / bn);
  const int64_t steps = (gemm_k<pass::kWgrad>(a) + bk - 1) / bk;
  int64_t splits = (kTargetBlocks + tiles - 1) / tiles;
  if (splits > steps / 8) splits = steps / 8;
  if (splits > 64) splits = 64;
  return int(splits < 1 ? 1 : splits);
}

size_t acc_size(DType t) { return t == DType::kFloat64 ? 8 : 4; }

template <typename T, Pass P>
void launch_gemm(const ConvArgs& a, CUstream_st* stream) {
  const int64_t M = gemm_m<P>(a), N = gemm_n<P>(a);
  const dim3 grid_split(1, unsigned(a.splits));
  if constexpr (std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>) {
    const int64_t tiles = a.s.groups * ((M + kBM - 1) / kBM) * ((N + kBN - 1) / kBN);
    cudaFuncSetAttribute((conv_mma<T, P>), cudaFuncAttributeMaxDynamicSharedMemorySize,
                         int(kSmemMma));
    FL_LAUNCH((conv_mma<T, P>), dim3(blocks_for(tiles), grid_split.y), kThreads, kSmemMma, stream)(
        a, mma_vec<P>(a));
  } else {
    const int64_t tiles = a.s.groups * ((M + kSM - 1) / kSM) * ((N + kSN - 1) / kSN);
    FL_LAUNCH((conv_simt<T, P>), dim3(blocks_for(tiles), grid_split.y), kSThreads, 0, stream)(a);
  }
}

template <typename T>
void forward_t(const Conv2dFwdParams& p, const void* w_t, CUstream_st* stream) {
  ConvArgs a = make_args(p.s);
  a.x = p.x;
  a.w = p.w;
  a.w_t = w_t;
  a.bias = p.bias;
  a.out = p.y;
  if (is_direct(p.s)) {
    FL_LAUNCH(direct_fwd<T>, grid_for(p.s.N * p.s.K * p.s.P * p.s.Q, 256), 256, 0, stream)(a);
    return;
  }
  launch_gemm<T, pass::kFwd>(a, stream);
}

template <typename T>
void backward_t(const Conv2dBwdParams& p, const void* w_t, void* workspace, CUstream_st* stream) {
  const Conv2dShape& s = p.s;
  ConvArgs a = make_args(s);
  a.x = p.x;
  a.gy = p.gy;
  a.w = p.w;
  a.w_t = w_t;
  const bool direct = is_direct(s);
  if (p.gx != nullptr) {
    a.out = p.gx;
    if (direct)
      FL_LAUNCH(direct_dgrad<T>, grid_for(s.N * s.C * s.H * s.W, 256), 256, 0, stream)(a);
    else
      launch_gemm<T, pass::kDgrad>(a, stream);
  }
  if (p.gw != nullptr) {
    a.out = p.gw;
    if (direct) {
      FL_LAUNCH(direct_wgrad<T>, blocks_for(s.K * a.Cg * s.R * s.S), 256, 0, stream)(a);
    } else {
      a.ws = workspace;
      a.splits = wgrad_splits(s);
      launch_gemm<T, pass::kWgrad>(a, stream);
      FL_LAUNCH(wgrad_finalize<T>, grid_for(s.K * a.Cg * s.R * s.S, 256), 256, 0, stream)(a);
    }
  }
  if (p.gb != nullptr) {
    a.out = p.gb;
    const int64_t blocks = s.channels_last ? (s.K + 31) / 32 : s.K;
    FL_LAUNCH(bias_grad<T>, blocks_for(blocks), 256, 0, stream)(a);
  }
}

}  // namespace

Conv2dCudaPlan conv2d_plan(const Conv2dShape& s) {
  Conv2dCudaPlan plan;
  plan.direct = is_direct(s);
  plan.weight_transform = uses_mma(s);
  plan.wgrad_workspace_bytes = plan.direct ? 0
                                           : size_t(wgrad_splits(s)) * s.K * s.R * s.S *
                                                 (s.C / s.groups) * acc_size(s.dtype);
  return plan;
}

void conv2d_forward(const Conv2dFwdParams& p, const void* w_t, CUstream_st* stream) {
  switch (p.s.dtype) {
    case DType::kFloat32: return forward_t<float>(p, w_t, stream);
    case DType::kFloat64: return forward_t<double>(p, w_t, stream);
    case DType::kFloat16: return forward_t<__half>(p, w_t, stream);
    case DType::kBFloat16: return forward_t<__nv_bfloat16>(p, w_t, stream);
    default: return;  // the glue admits only the types above
  }
}

void conv2d_backward(const Conv2dBwdParams& p, const void* w_t, void* workspace,
                     CUstream_st* stream) {
  switch (p.s.dtype) {
    case DType::kFloat32: return backward_t<float>(p, w_t, workspace, stream);
    case DType::kFloat64: return backward_t<double>(p, w_t, workspace, stream);
    case DType::kFloat16: return backward_t<__half>(p, w_t, workspace, stream);
    case DType::kBFloat16: return backward_t<__nv_bfloat16>(p, w_t, workspace, stream);
    default: return;
  }
}

}  // namespace cuda
}  // namespace fl
