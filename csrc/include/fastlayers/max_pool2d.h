// max_pool2d: parameters and kernel entry points, shared by the torch glue, the CPU
// kernels and the CUDA kernels. No torch header.
#pragma once

#include <cstdint>

#include "fastlayers/parallel.h"
#include "fastlayers/types.h"

// cudaStream_t is `CUstream_st*`; declared here so this header needs no CUDA header.
struct CUstream_st;

namespace fl {

// Geometry of one 2-D max-pool. Tensors are dense, either NCHW (channels_last == false)
// or NHWC; indices are flat offsets into one H*W plane, as torch returns them.
struct MaxPool2dShape {
  int64_t N, C, H, W;  // input
  int64_t OH, OW;      // output
  int64_t kh, kw, sh, sw, ph, pw, dh, dw;
  bool channels_last;
  DType dtype;
};

struct MaxPool2dFwdParams {
  MaxPool2dShape s;
  const void* input;  // [N, C, H, W] or [N, H, W, C]
  void* output;       // [N, C, OH, OW] or [N, OH, OW, C]
  int64_t* indices;   // same layout as output; nullptr: values only
};

struct MaxPool2dBwdParams {
  MaxPool2dShape s;
  const void* grad_output;  // layout of the forward output
  const int64_t* indices;   // layout of the forward output
  void* grad_input;         // layout of the forward input
};

namespace cpu {
void max_pool2d_forward(const MaxPool2dFwdParams& p, const ParallelFor& pfor);
// Indices outside [0, H*W) contribute nothing.
void max_pool2d_backward(const MaxPool2dBwdParams& p, const ParallelFor& pfor);
// The instruction set the CPU kernels were dispatched to at run time.
const char* max_pool2d_isa();
}  // namespace cpu

namespace cuda {
// Launch on `stream`; the caller checks the launch (cudaGetLastError).
void max_pool2d_forward(const MaxPool2dFwdParams& p, CUstream_st* stream);
void max_pool2d_backward(const MaxPool2dBwdParams& p, CUstream_st* stream);
}  // namespace cuda

}  // namespace fl
