// 2-D convolution (cross-correlation, as torch's conv2d), forward and both gradients. No
// torch header.
//
//   y[n, k, p, q] = bias[k] + sum_{c, r, s} x[n, g C' + c, p sh - pt + r dh, q sw - pl + s dw]
//                                           * w[k, c, r, s]
// with groups G, C' = C / G input channels per group, K' = K / G output channels per group,
// g = k / K'; taps outside the input read zero. Padding may be asymmetric: pt and pl are
// the top and left padding, and P, Q (given) imply the bottom and right.
//
// Layouts: x, y and their gradients are [N, C, H, W] (NCHW) or, with channels_last,
// [N, H, W, C] (NHWC), both contiguous; w and its gradient are [K, C', R, S] contiguous.
#pragma once

#include <cstdint>
#include <functional>

#include "fastlayers/parallel.h"
#include "fastlayers/types.h"

struct CUstream_st;

namespace fl {

struct Conv2dShape {
  int64_t N, C, H, W;  // input
  int64_t K, R, S;     // weight [K, C / groups, R, S]
  int64_t P, Q;        // output height and width
  int64_t sh, sw;      // stride
  int64_t pt, pl;      // top and left padding
  int64_t dh, dw;      // dilation
  int64_t groups;
  bool channels_last;
  DType dtype;
};

struct Conv2dFwdParams {
  Conv2dShape s;
  const void* x;
  const void* w;
  const void* bias;  // [K] or null
  void* y;
};

// Any of gx, gw, gb may be null: that gradient is not computed.
struct Conv2dBwdParams {
  Conv2dShape s;
  const void* gy;  // [N, K, P, Q] in the layout of x
  const void* x;
  const void* w;
  void* gx;  // like x
  void* gw;  // [K, C', R, S]
  void* gb;  // [K]
};

// A row-major GEMM the glue supplies (the CPU kernels' matrix-multiply stage; the torch
// glue runs ATen's, the C++ tests a plain loop):
//   c[M, N] (row stride ldc) = op(a) op(b) (+ c when accumulate)
// op(a) is [M, K]: a[M, K] (row stride lda), or a stored [K, M] when trans_a; likewise b
// is [K, N], or stored [N, K] when trans_b. dtype is kFloat32 or kFloat64.
struct GemmCall {
  bool trans_a, trans_b;
  int64_t M, N, K;
  const void* a;
  int64_t lda;
  const void* b;
  int64_t ldb;
  void* c;
  int64_t ldc;
  bool accumulate;
  DType dtype;
};
using Gemm = std::function<void(const GemmCall&)>;

namespace cpu {
// float32, float64 and bfloat16 (computed in float32). Depthwise convolutions (groups = C,
// any channel multiplier) run a direct kernel; the rest im2col over `gemm`.
void conv2d_forward(const Conv2dFwdParams& p, const ParallelFor& pfor, const Gemm& gemm);
void conv2d_backward(const Conv2dBwdParams& p, const ParallelFor& pfor, const Gemm& gemm);
}  // namespace cpu

namespace cuda {
// What the CUDA kernels need of the glue for a shape.
struct Conv2dCudaPlan {
  // Depthwise and small-group convolutions (C' or K' below 8) run direct kernels on NCHW or
  // NHWC; the rest are implicit GEMMs on NHWC tensors only.
  bool direct;
  // float16/bfloat16 GEMMs read the weight transposed: the forward takes w_t = [K, R, S, C']
  // and the data gradient [groups, C', R, S, K'], both contiguous.
  bool weight_transform;
  size_t wgrad_workspace_bytes;  // scratch for the weight gradient's split reduction
};
Conv2dCudaPlan conv2d_plan(const Conv2dShape& s);
// float32, float64, float16, bfloat16. w_t as the plan says (else unused).
void conv2d_forward(const Conv2dFwdParams& p, const void* w_t, CUstream_st* stream);
// w_t: the data gradient's transposed weight; workspace: wgrad_workspace_bytes.
void conv2d_backward(const Conv2dBwdParams& p, const void* w_t, void* workspace,
                     CUstream_st* stream);
}  // namespace cuda

}  // namespace fl
