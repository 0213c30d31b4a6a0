// Int8 GEMM with int32 accumulation and an optional fused dequantisation epilogue, and the
// per-row symmetric quantiser. No torch header.
//
//   c[m, n] = sum_k a[m, k] * b[n, k]          (a [M, K], b [N, K]: nn.Linear's weight layout)
//   out[m, n] = c[m, n] * a_scale[m] * b_scale[n] + bias[n], cast to out_dtype
//
// a and b have a contiguous K dimension and a row stride (in elements); outputs are
// contiguous [M, N]. Accumulation is int32 and wraps modulo 2^32 (exact while
// 127 * 128 * K < 2^31, i.e. K <= 131072; the glue rejects larger K).
#pragma once

#include <cstdint>

#include "fastlayers/parallel.h"
#include "fastlayers/types.h"

struct CUstream_st;

namespace fl {

constexpr int64_t kInt8MaxK = 131072;

struct Int8GemmParams {
  int64_t M, N, K;
  const int8_t* a;
  int64_t lda;
  const int8_t* b;
  int64_t ldb;
  // Epilogue: when a_scale is null the output is int32 c; otherwise out_dtype values.
  const float* a_scale;  // [M]
  const float* b_scale;  // [N]
  const float* bias;     // [N] or null
  DType out_dtype;
  void* out;  // [M, N] contiguous
};

// Symmetric absmax quantisation of each row of x [rows, n] (contiguous rows of stride ld):
// scale[r] = max_j |x[r, j]| / 127 (1 for an all-zero row, so nothing divides by zero),
// q[r, j] = round_half_even(x[r, j] / scale[r]) clamped to [-127, 127]. One pass per row
// over data that stays in cache.
struct QuantizeRowsParams {
  int64_t rows, n;
  DType dtype;
  const void* x;
  int64_t ld;
  int8_t* q;     // [rows, n] contiguous
  float* scale;  // [rows]
};

namespace cpu {
// Runtime dispatch: AVX-512 VNNI, else AVX2, else portable (FASTLAYERS_CPU_ISA caps it).
void int8_gemm(const Int8GemmParams& p, const ParallelFor& pfor);
void quantize_rows(const QuantizeRowsParams& p, const ParallelFor& pfor);
// The path int8_gemm takes on this CPU: "avx512-vnni", "avx2" or "portable".
const char* int8_gemm_path();
}  // namespace cpu

namespace cuda {
// Launch on `stream`; the caller checks the launch.
void int8_gemm(const Int8GemmParams& p, CUstream_st* stream);
void quantize_rows(const QuantizeRowsParams& p, CUstream_st* stream);
}  // namespace cuda

}  // namespace fl
