// Elman RNN recurrence of one layer in one or both directions, over a packed sequence. No
// torch header.
//
//   h_t[b] = act(xw_t[b] + bias + W_hh h_{t-1}[b]),   act = tanh or relu
//
// xw = x W_ih^T (+ b_ih) for every step is one GEMM done before (by the caller); bias is
// b_hh (or b_ih + b_hh), added here. Rows are packed as torch's PackedSequence: step t has
// batch_sizes[t] rows, for batch entries 0 .. batch_sizes[t] - 1 (sorted by decreasing
// length, so batch_sizes does not increase), at row offset sum_{u<t} batch_sizes[u]. A
// padded [T, B, H] sequence is the case batch_sizes[t] = B. The forward direction runs t = 0
// .. T - 1; the reverse direction runs T - 1 .. 0, and entry b starts from h0[b] at its last
// step len_b - 1. h_n[b] is the hidden state after entry b's final step.
//
// Backward (same packing): given grad_out (of every out row) and grad_hn, the gradient of
// the pre-activation z_t = xw_t + bias + W_hh h_{t-1}:
//   dz_t[b] = (grad_out_t[b] + dh_t[b]) * act'(out_t[b]),  dh_t[b] = W_hh^T dz_{t'}[b]
// where t' is the step that consumed h_t[b] (dh = grad_hn[b] after the final step), and
// grad_h0[b] = W_hh^T dz at entry b's first step. dz is also the gradient of xw and of the
// bias (summed); the gradient of W_hh is dz^T h_prev, which the glue computes as one GEMM.
//
// Both directions (dirs = 2) run together, in one launch: direction d has its own W_hh
// (w_hh + d H H), bias (+ d H), h0, h_n, grad_hn and grad_h0 (+ d B H), and columns
// [d H, d H + H) of the rows of xw, out, grad_out and grad_z, which are dirs H wide (the
// layer's output as torch lays it out). Direction 0 runs forward in time unless `reverse`;
// direction 1 always runs in reverse.
#pragma once

#include <cstdint>

#include "fastlayers/parallel.h"
#include "fastlayers/types.h"

struct CUstream_st;

namespace fl {

struct RnnShape {
  int64_t T;     // steps
  int64_t B;     // batch entries (batch_sizes[0])
  int64_t H;     // hidden size
  int64_t rows;  // sum of batch_sizes
  bool relu;     // else tanh
  bool reverse;  // of direction 0
  DType dtype;
  int64_t dirs = 1;  // 1, or 2: both directions (see above)

  // Whether direction d runs from the last step to the first.
  FL_HOST_DEVICE bool reversed(int64_t d) const { return d == 1 || reverse; }
  // The width of a row of xw, out, grad_out and grad_z.
  FL_HOST_DEVICE int64_t row_width() const { return dirs * H; }
};

struct RnnFwdParams {
  RnnShape s;
  const int64_t* batch_sizes;  // [T], non-increasing, batch_sizes[0] = B; host memory
  const void* xw;              // [rows, dirs H]
  const void* h0;              // [dirs, B, H]
  const void* w_hh;            // [dirs, H, H], row-major (torch's weight_hh)
  const void* bias;            // [dirs, H] or null
  void* out;                   // [rows, dirs H]
  void* h_n;                   // [dirs, B, H]
};

struct RnnBwdParams {
  RnnShape s;
  const int64_t* batch_sizes;  // as above
  const void* grad_out;        // [rows, dirs H] or null (zero)
  const void* grad_hn;         // [dirs, B, H] or null (zero)
  const void* out;             // [rows, dirs H]: the forward's output
  const void* w_hh;            // [dirs, H, H]
  void* grad_z;                // [rows, dirs H]: dz, the gradient of xw
  void* grad_h0;               // [dirs, B, H]
};

namespace cpu {
// float32, float64, bfloat16 (computed in float32).
void rnn_forward(const RnnFwdParams& p, const ParallelFor& pfor);
void rnn_backward(const RnnBwdParams& p, const ParallelFor& pfor);
}  // namespace cpu

namespace cuda {
// float32, float16, bfloat16, computed in float32.
struct RnnCudaParams {
  RnnFwdParams fwd;            // for rnn_forward (its batch_sizes is not read)
  RnnBwdParams bwd;            // for rnn_backward (likewise)
  const int64_t* batch_sizes;  // [T], device memory
  const int64_t* offsets;      // [T + 1] row offsets, device memory
  const float* m;              // [dirs, H, H]: W_hh^T (forward) or W_hh (backward), row-major
  float* state;                // [dirs, 2, B, H] workspace
  bool persistent;             // one cooperative launch (see rnn_persistent_fits)
};
// Whether the persistent kernel's blocks and shared memory fit on the current device.
bool rnn_persistent_fits(const RnnShape& s);
void rnn_forward(const RnnCudaParams& p, CUstream_st* stream);
void rnn_backward(const RnnCudaParams& p, CUstream_st* stream);
}  // namespace cuda

}  // namespace fl
