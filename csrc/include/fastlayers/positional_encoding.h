// Sinusoidal positional encoding ("Attention Is All You Need", section 3.5), computed in the
// kernel instead of read from a table: out = x + PE(pos, d) with
//   PE(pos, 2i) = sin(pos * w_i), PE(pos, 2i + 1) = cos(pos * w_i), w_i = 10000^(-2i / E).
// x is dense, viewed as [outer, L, inner, E]: pos is the index along L. No torch header.
#pragma once

#include <cstdint>

#include "fastlayers/parallel.h"
#include "fastlayers/types.h"

struct CUstream_st;

namespace fl {

struct PositionalEncodingParams {
  int64_t outer, L, inner, E;
  DType dtype;
  const void* input;
  void* output;
};

namespace cpu {
void positional_encoding(const PositionalEncodingParams& p, const ParallelFor& pfor);
}  // namespace cpu

namespace cuda {
// float32, float16, bfloat16. Launch on `stream`; the caller checks the launch.
void positional_encoding(const PositionalEncodingParams& p, CUstream_st* stream);
}  // namespace cuda

}  // namespace fl
