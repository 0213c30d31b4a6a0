// The strided path of the dropout kernels (fastlayers/dropout.h): a cursor over a tensor's
// elements in logical (row-major) order, giving each element's input and output offsets.
// Kernel-side only (host-and-device code, FL_HOST_DEVICE): the glue needs dropout.h alone.
#pragma once

#include <cstdint>

#include "fastlayers/dropout.h"

// nvcc's unroll pragma; host compilers would warn about it.
#if defined(__CUDACC__)
#define FL_DROPOUT_UNROLL _Pragma("unroll")
#else
#define FL_DROPOUT_UNROLL
#endif

namespace fl {

// seek(e) to element e, then next() steps to e + 1 (an increment with carries). The loops
// run over all kDropoutMaxDims dimensions, those past p.ndim skipped, so that on the GPU they
// unroll with constant indices and the coordinates stay in registers (no local memory).
struct DropoutCursor {
  int64_t coord[kDropoutMaxDims];
  int64_t in_off, out_off;

  FL_HOST_DEVICE void seek(const DropoutParams& p, int64_t e) {
    in_off = out_off = 0;
    FL_DROPOUT_UNROLL
    for (int d = kDropoutMaxDims - 1; d >= 0; --d) {
      if (d >= p.ndim) continue;
      const int64_t c = e % p.sizes[d];
      e /= p.sizes[d];
      coord[d] = c;
      in_off += c * p.in_stride[d];
      out_off += c * p.out_stride[d];
    }
  }
  FL_HOST_DEVICE void next(const DropoutParams& p) {
    FL_DROPOUT_UNROLL
    for (int d = kDropoutMaxDims - 1; d >= 0; --d) {
      if (d >= p.ndim) continue;
      in_off += p.in_stride[d];
      out_off += p.out_stride[d];
      if (++coord[d] < p.sizes[d]) return;
      in_off -= coord[d] * p.in_stride[d];
      out_off -= coord[d] * p.out_stride[d];
      coord[d] = 0;
    }
  }
};

}  // namespace fl

#undef FL_DROPOUT_UNROLL
