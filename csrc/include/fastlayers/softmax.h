// Softmax along one dimension: parameters and kernel entry points. No torch header.
//
// The tensor is viewed as [outer, n, inner] (contiguous): softmax runs over n for every
// (outer, inner) pair. With inner == 1 the rows are contiguous; otherwise the inner index is
// the vector lane and the reduction strides over n.
#pragma once

#include <cstdint>

#include "fastlayers/parallel.h"
#include "fastlayers/types.h"

struct CUstream_st;

namespace fl {

struct SoftmaxShape {
  int64_t outer, n, inner;
  DType dtype;
};

struct SoftmaxFwdParams {
  SoftmaxShape s;
  const void* input;
  void* output;
};

struct SoftmaxBwdParams {
  SoftmaxShape s;
  const void* grad_output;
  const void* output;  // the forward's result
  void* grad_input;    // y * (g - sum(g * y))
};

namespace cpu {
void softmax_forward(const SoftmaxFwdParams& p, const ParallelFor& pfor);
void softmax_backward(const SoftmaxBwdParams& p, const ParallelFor& pfor);
}  // namespace cpu

namespace cuda {
// Launch on `stream`; the caller checks the launch.
void softmax_forward(const SoftmaxFwdParams& p, CUstream_st* stream);
void softmax_backward(const SoftmaxBwdParams& p, CUstream_st* stream);
}  // namespace cuda

}  // namespace fl
