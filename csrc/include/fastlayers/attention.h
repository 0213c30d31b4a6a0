// Scaled dot-product attention: parameters and kernel entry points, shared by the torch glue
// and the CPU (and later CUDA) kernels. No torch header.
//
// Tensors are 4-D with a contiguous last dimension and arbitrary int64 strides (in
// elements) for batch, head and row, so transposed views of a packed QKV projection and
// broadcast (stride 0) dimensions need no copy:
//   q [B, Hq, Lq, D], k [B, Hkv, Lk, D], v [B, Hkv, Lk, Dv], out [B, Hq, Lq, Dv];
//   lse [B, Hq, Lq] contiguous, in the accumulation type (double for float64, else float).
// Query head h reads key/value head h / (Hq / Hkv) (grouped-query attention).
// The mask, if any, is indexed by (b, h, i, j) through its own four strides (broadcast
// dimensions have stride 0): bool (true = attend) or additive, in the input's dtype.
// Causal masking is torch's: query i attends keys j <= i (top-left aligned).
// Dropout keeps score element e = ((b * Hq + h) * Lq + i) * Lk + j with probability
// 1 - dropout_p, decided by DropoutStream{seed, offset} (philox.h); kept probabilities are
// scaled by 1 / (1 - dropout_p).
// A row whose keys are all masked has output 0, lse = +inf, and zero gradients.
#pragma once

#include <cstdint>

#include "fastlayers/parallel.h"
#include "fastlayers/types.h"

struct CUstream_st;

namespace fl {

enum class MaskKind : int { kNone, kBool, kAdditive };

struct AttentionShape {
  int64_t B, Hq, Hkv, Lq, Lk, D, Dv;
  DType dtype;
};

struct AttentionArgs {
  const void* mask;  // nullptr when kind == kNone
  MaskKind mask_kind;
  int64_t mask_stride[4];  // b, h, i, j
  bool causal;
  double scale;
  double dropout_p;
  uint64_t seed, offset;
};

struct AttentionFwdParams {
  AttentionShape s;
  AttentionArgs a;
  const void *q, *k, *v;
  int64_t q_stride[3], k_stride[3], v_stride[3];  // b, h, row
  void* out;
  int64_t o_stride[3];
  void* lse;
};

struct AttentionBwdParams {
  AttentionShape s;
  AttentionArgs a;
  const void *q, *k, *v, *out, *grad_out;
  int64_t q_stride[3], k_stride[3], v_stride[3], o_stride[3], go_stride[3];
  const void* lse;
  // Outputs, contiguous: dq [B, Hq, Lq, D], dk [B, Hkv, Lk, D], dv [B, Hkv, Lk, Dv].
  void *dq, *dk, *dv;
};

// Attention probabilities of chosen query rows, recomputed from the forward's lse:
// probs[b, h, r, j] = exp(scale * q_i . k_j + bias_ij - lse_i) * z_ij with i = rows[r]
// (dropout factors z as in the forward, so these are the weights the output used), 0 for
// masked keys and for rows whose keys are all masked.
struct AttentionProbsParams {
  AttentionShape s;
  AttentionArgs a;
  const void *q, *k;
  int64_t q_stride[3], k_stride[3];
  const void* lse;
  const int64_t* rows;  // [R] query row indices
  int64_t R;
  void* probs;  // [B, Hq, R, Lk], contiguous
};

namespace cpu {
void attention_forward(const AttentionFwdParams& p, const ParallelFor& pfor);
void attention_probs(const AttentionProbsParams& p, const ParallelFor& pfor);
// Deterministic: every gradient element is summed by one task in a fixed order.
void attention_backward(const AttentionBwdParams& p, const ParallelFor& pfor);
}  // namespace cpu

namespace cuda {
// Head dims (D and Dv) up to this; float32, float16, bfloat16.
constexpr int64_t kMaxHeadDim = 256;
// Launch on `stream`; the caller checks the launch. The backward needs a float workspace
// `delta` of B * Hq * Lq elements; `rows` of the probabilities is a device array. Both
// backward and probabilities are deterministic (no atomics).
void attention_forward(const AttentionFwdParams& p, CUstream_st* stream);
void attention_backward(const AttentionBwdParams& p, float* delta, CUstream_st* stream);
void attention_probs(const AttentionProbsParams& p, const int64_t* rows, CUstream_st* stream);
}  // namespace cuda

}  // namespace fl
