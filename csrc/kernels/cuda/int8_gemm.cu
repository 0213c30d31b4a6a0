// Int8 GEMM with int32 accumulation and the fused dequantisation epilogue on CUDA, and the
// per-row quantiser (fastlayers/int8_gemm.h).
//
// Tensor-core path: mma.sync m16n8k32 s8 x s8 -> s32 through ptx.cuh. A block computes a
// 128 x 128 tile of c with 8 warps (2 x 4), each 64 x 32: 4 x 4 mma tiles, 64 int32
// accumulators per lane. K advances in 64-byte slices through a 3-stage cp.async pipeline
// (two slices in flight while one is multiplied); a and b (both K-contiguous: b is
// nn.Linear's [N, K]) are read by ldmatrix from shared rows padded to 80 bytes, so the
// eight rows of each ldmatrix phase fall in distinct banks. Tails in M, N and K load as
// zeros (cp.async zero-fill); rows whose stride or base is not 16-byte aligned take plain
// byte loads. The epilogue writes int32, or c * a_scale * b_scale + bias cast to the output
// type, straight from the accumulator layout.
// Small M (M <= 16, decode): a GEMV-like kernel instead, one warp per output column over
// all rows, 16-byte loads and __dp4a, a butterfly sum per row: the tensor-core tile would
// waste at least seven eighths of its rows and leave most SMs idle.
// All offsets are int64; both kernels loop over their tiles (grid-stride).

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>

#include "fastlayers/int8_gemm.h"
#include "kernels/cuda/convert.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/ptx.cuh"
#include "kernels/cuda/reduce.cuh"

namespace fl {
namespace cuda {
namespace {

constexpr int kBM = 128, kBN = 128, kBK = 64, kStages = 3;
constexpr int kThreads = 256;
constexpr int kLd = kBK + 16;  // padded shared row, bytes
constexpr size_t kSmem = size_t(kStages) * (kBM + kBN) * kLd;

// The epilogue of one output element.
__device__ __forceinline__ void emit(const Int8GemmParams& p, int64_t m, int64_t n, int32_t v) {
  const int64_t i = m * p.N + n;
  if (p.a_scale == nullptr) {
    static_cast<int32_t*>(p.out)[i] = v;
    return;
  }
  const float f = float(v) * p.a_scale[m] * p.b_scale[n] + (p.bias ? p.bias[n] : 0.f);
  switch (p.out_dtype) {
    case DType::kBFloat16: static_cast<__nv_bfloat16*>(p.out)[i] = from_f<__nv_bfloat16>(f); break;
    case DType::kFloat16: static_cast<__half*>(p.out)[i] = from_f<__half>(f); break;
    default: static_cast<float*>(p.out)[i] = f;
  }
}

// Rows [0, ROWS) x bytes [0, kBK) of a shared slice from rows of src (stride ld): rows <
// nrows and bytes < nk copied, the rest zero.
template <int ROWS>
__device__ __forceinline__ void load_slice(int8_t* dst, const int8_t* src, int64_t ld, int nrows,
                                           int nk, bool vec, int tid) {
  constexpr int kChunks = kBK / 16;
  for (int c = tid; c < ROWS * kChunks; c += kThreads) {
    const int r = c / kChunks, x = (c % kChunks) * 16;
    int8_t* d = dst + r * kLd + x;
    if (r < nrows && x < nk) {
      const int8_t* s = src + r * ld + x;
      const int n = nk - x < 16 ? nk - x : 16;
      if (vec) {
        if (n == 16)
          ptx::cp_async_16(d, s);
        else
          ptx::cp_async_16_zfill(d, s, n);
      } else {
        for (int e = 0; e < 16; ++e) d[e] = e < n ? s[e] : int8_t(0);
      }
    } else {
      *reinterpret_cast<uint4*>(d) = make_uint4(0, 0, 0, 0);
    }
  }
}

__global__ void __launch_bounds__(kThreads) int8_gemm_mma(Int8GemmParams p) {
  FL_DYNAMIC_SHARED(int8_t, smem);
  int8_t* sA = smem;                        // [kStages][kBM][kLd]
  int8_t* sB = smem + kStages * kBM * kLd;  // [kStages][kBN][kLd]
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int wm = (warp / 4) * 64, wn = (warp % 4) * 32;  // this warp's 64 x 32 of the tile
  const bool va = reinterpret_cast<uintptr_t>(p.a) % 16 == 0 && p.lda % 16 == 0;
  const bool vb = reinterpret_cast<uintptr_t>(p.b) % 16 == 0 && p.ldb % 16 == 0;
  const int64_t tm = (p.M + kBM - 1) / kBM, tn = (p.N + kBN - 1) / kBN;
  const int64_t nk = (p.K + kBK - 1) / kBK;
  for (int64_t w = blockIdx.x; w < tm * tn; w += gridDim.x) {
    const int64_t m0 = (w % tm) * kBM, n0 = (w / tm) * kBN;
    const int rows_a = int(p.M - m0 < kBM ? p.M - m0 : kBM);
    const int rows_b = int(p.N - n0 < kBN ? p.N - n0 : kBN);
    auto load = [&](int64_t kt, int stage) {
      const int64_t k0 = kt * kBK;
      const int kk = int(p.K - k0 < kBK ? p.K - k0 : kBK);
      load_slice<kBM>(sA + stage * kBM * kLd, p.a + m0 * p.lda + k0, p.lda, rows_a, kk, va, tid);
      load_slice<kBN>(sB + stage * kBN * kLd, p.b + n0 * p.ldb + k0, p.ldb, rows_b, kk, vb, tid);
    };
    // Prologue: slices 0 and 1 in flight (an empty group where there is no slice, so the
    // wait counts below stay uniform).
    for (int s = 0; s < kStages - 1; ++s) {
      if (s < nk) load(s, s);
      ptx::cp_async_commit();
    }
    int32_t acc[4][4][4] = {};
    for (int64_t kt = 0; kt < nk; ++kt) {
      ptx::cp_async_wait<kStages - 2>();  // slice kt has landed (for this thread)
      __syncthreads();                    // ... for every thread; slice kt - 1 is consumed
      if (kt + kStages - 1 < nk) load(kt + kStages - 1, int((kt + kStages - 1) % kStages));
      ptx::cp_async_commit();
      const int st = int(kt % kStages);
      const int8_t* a = sA + st * kBM * kLd + wm * kLd;
      const int8_t* b = sB + st * kBN * kLd + wn * kLd;
#pragma unroll
      for (int k32 = 0; k32 < kBK; k32 += 32) {
        uint32_t af[4][4], bf[4][2];
#pragma unroll
        for (int mt = 0; mt < 4; ++mt)
          ptx::ldmatrix_x4(af[mt], a + (16 * mt + lane % 16) * kLd + k32 + 16 * (lane / 16));
#pragma unroll
        for (int np = 0; np < 2; ++np) {
          uint32_t r[4];
          ptx::ldmatrix_x4(
              r, b + (16 * np + lane % 8 + 8 * (lane / 16)) * kLd + k32 + 16 * ((lane / 8) % 2));
          bf[2 * np][0] = r[0];
          bf[2 * np][1] = r[1];
          bf[2 * np + 1][0] = r[2];
          bf[2 * np + 1][1] = r[3];
        }
#pragma unroll
        for (int mt = 0; mt < 4; ++mt)
#pragma unroll
          for (int nt = 0; nt < 4; ++nt)
            ptx::mma_m16n8k32_s8_s32(acc[mt][nt], af[mt], bf[nt], acc[mt][nt]);
      }
    }
    ptx::cp_async_wait_all();
    const int g = lane / 4, t = lane % 4;
#pragma unroll
    for (int mt = 0; mt < 4; ++mt)
#pragma unroll
      for (int nt = 0; nt < 4; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int64_t m = m0 + wm + 16 * mt + g + 8 * (e / 2);
          const int64_t n = n0 + wn + 8 * nt + 2 * t + e % 2;
          if (m < p.M && n < p.N) emit(p, m, n, acc[mt][nt][e]);
        }
    __syncthreads();  // the next tile's prologue overwrites the stages
  }
}

// Small M: warp per output column n, all M (<= kSmallM) rows at once.
constexpr int kSmallM = 16;

__global__ void __launch_bounds__(kThreads) int8_gemv(Int8GemmParams p) {
  const int lane = threadIdx.x % 32;
  const bool vec = reinterpret_cast<uintptr_t>(p.a) % 16 == 0 && p.lda % 16 == 0 &&
                   reinterpret_cast<uintptr_t>(p.b) % 16 == 0 && p.ldb % 16 == 0;
  const int64_t kv = vec ? p.K / 16 * 16 : 0;  // bytes covered by 16-byte loads
  for (int64_t n = blockIdx.x * int64_t(kThreads / 32) + threadIdx.x / 32; n < p.N;
       n += int64_t(gridDim.x) * (kThreads / 32)) {
    const int8_t* b = p.b + n * p.ldb;
    int32_t acc[kSmallM] = {};
    for (int64_t k = 16 * int64_t(lane); k < kv; k += 16 * 32) {
      const int4 bv = *reinterpret_cast<const int4*>(b + k);
#pragma unroll
      for (int m = 0; m < kSmallM; ++m) {
        if (m < p.M) {
          const int4 av = *reinterpret_cast<const int4*>(p.a + m * p.lda + k);
          acc[m] = __dp4a(av.x, bv.x, acc[m]);
          acc[m] = __dp4a(av.y, bv.y, acc[m]);
          acc[m] = __dp4a(av.z, bv.z, acc[m]);
          acc[m] = __dp4a(av.w, bv.w, acc[m]);
        }
      }
    }
    for (int64_t k = kv + lane; k < p.K; k += 32) {
      const int32_t bk = b[k];
#pragma unroll
      for (int m = 0; m < kSmallM; ++m)
        if (m < p.M) acc[m] += int32_t(p.a[m * p.lda + k]) * bk;
    }
#pragma unroll
    for (int m = 0; m < kSmallM; ++m) {
      if (m >= p.M) break;
      int32_t v = acc[m];
      for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
      if (lane == 0) emit(p, m, n, v);
    }
  }
}

// Quantisation: one warp per row; absmax by a butterfly, then the rounded values.
template <typename T>
__global__ void __launch_bounds__(kThreads) quantize_rows_kernel(QuantizeRowsParams p) {
  const T* x = static_cast<const T*>(p.x);
  const int lane = threadIdx.x % 32;
  for (int64_t r = blockIdx.x * int64_t(kThreads / 32) + threadIdx.x / 32; r < p.rows;
       r += int64_t(gridDim.x) * (kThreads / 32)) {
    const T* row = x + r * p.ld;
    float amax = 0.f;
    for (int64_t j = lane; j < p.n; j += 32) amax = max_nan(amax, fabsf(to_f(row[j])));
    amax = warp_max(amax);
    const float scale = amax == 0.f ? 1.f : amax / 127.f;
    if (lane == 0) p.scale[r] = scale;
    int8_t* q = p.q + r * p.n;
    for (int64_t j = lane; j < p.n; j += 32) {
      const float v = rintf(to_f(row[j]) / scale);
      q[j] = int8_t(v > 127.f ? 127.f : (v < -127.f ? -127.f : (v == v ? v : 0.f)));
    }
  }
}

}  // namespace

void int8_gemm(const Int8GemmParams& p, CUstream_st* stream) {
  if (p.M == 0 || p.N == 0) return;
  if (p.M <= kSmallM) {
    FL_LAUNCH(int8_gemv, blocks_for((p.N + 7) / 8), kThreads, 0, stream)(p);
    return;
  }
  cudaFuncSetAttribute(int8_gemm_mma, cudaFuncAttributeMaxDynamicSharedMemorySize, int(kSmem));
  const int64_t tiles = (p.M + kBM - 1) / kBM * ((p.N + kBN - 1) / kBN);
  FL_LAUNCH(int8_gemm_mma, blocks_for(tiles), kThreads, kSmem, stream)(p);
}

void quantize_rows(const QuantizeRowsParams& p, CUstream_st* stream) {
  const unsigned grid = blocks_for((p.rows + 7) / 8);
  switch (p.dtype) {
    case DType::kFloat32:
      FL_LAUNCH(quantize_rows_kernel<float>, grid, kThreads, 0, stream)(p);
      return;
    case DType::kFloat16:
      FL_LAUNCH(quantize_rows_kernel<__half>, grid, kThreads, 0, stream)(p);
      return;
    case DType::kBFloat16:
      FL_LAUNCH(quantize_rows_kernel<__nv_bfloat16>, grid, kThreads, 0, stream)(p);
      return;
    default: return;  // the glue admits only the types above
  }
}

}  // namespace cuda
}  // namespace fl
