// Dropout with an explicit Philox stream: out[e] = in[e] * (keep(e) ? 1 / (1 - p) : 0), where
// keep(e) is bit e % 4 of DropoutStream{seed, offset}.keep4(e / 4, 1 - p) (fastlayers/philox.h)
// and e is the element's flat index in the input's logical, row-major order. The mask is thus
// a pure function of (seed, offset, e): the same on every device, whatever the memory layout,
// and backward (the same op on the gradient) regenerates forward's mask. A dropped element is
// multiplied by 0, not set to 0, so NaN and Inf give NaN there, as torch's input * mask.
// The kernels share DropoutCursor (dropout_cursor.h). No torch header.
#pragma once

#include <cstdint>

#include "fastlayers/parallel.h"
#include "fastlayers/types.h"

struct CUstream_st;

namespace fl {

// Strided layouts handled without a copy; tensors of higher rank are made contiguous.
constexpr int kDropoutMaxDims = 8;

struct DropoutParams {
  int64_t n;  // elements
  // Dense: input and output are contiguous, element e at offset e. Otherwise element e has
  // coordinates (row-major) in `sizes`, and offsets sum(coord * stride) in each tensor.
  bool dense;
  int ndim;
  int64_t sizes[kDropoutMaxDims], in_stride[kDropoutMaxDims], out_stride[kDropoutMaxDims];
  uint64_t seed, offset;
  float keep_prob;  // 1 - p, as the stream compares it
  double scale;     // 1 / (1 - p); 0 when p == 1. Kernels use it in their compute type.
  DType dtype;
  const void* input;
  void* output;
};

namespace cpu {
// float32, float64, float16, bfloat16. Parallel over groups of 4 elements (one Philox call
// each), so results do not depend on the thread count.
void dropout(const DropoutParams& p, const ParallelFor& pfor);
}  // namespace cpu

namespace cuda {
// float32, float64, float16, bfloat16. Launch on `stream`; the caller checks the launch.
void dropout(const DropoutParams& p, CUstream_st* stream);
}  // namespace cuda

}  // namespace fl
