// The schema of every fastlayers op, in one place: registered as torch.ops.fastlayers, and,
// in the test-only emulator extension, as torch.ops.fastlayers_emu (csrc/emu/torch_module.cpp).
#pragma once

#include <torch/library.h>

namespace fl {
namespace ops {

inline void define_schemas(torch::Library& m) {
  // Values and int64 indices (flat offsets into each H*W plane), as aten's
  // max_pool2d_with_indices. An empty stride means stride = kernel_size.
  m.def(
      "max_pool2d_forward(Tensor self, int[2] kernel_size, int[2] stride, int[2] padding, "
      "int[2] dilation, bool ceil_mode) -> (Tensor, Tensor)");
  // Values only: the inference path, which skips writing indices.
  m.def(
      "max_pool2d(Tensor self, int[2] kernel_size, int[2] stride, int[2] padding, "
      "int[2] dilation, bool ceil_mode) -> Tensor");
  m.def(
      "max_pool2d_backward(Tensor grad_output, Tensor self, Tensor indices, int[2] kernel_size, "
      "int[2] stride, int[2] padding, int[2] dilation, bool ceil_mode) -> Tensor");
  // 2-D convolution (fastlayers/conv2d.h), as aten's conv2d. padding: one value, two
  // (height, width) or four (top, bottom, left, right: asymmetric, e.g. TensorFlow's 'same'
  // with stride > 1). The output is channels_last when the input or the weight is.
  m.def(
      "conv2d(Tensor input, Tensor weight, Tensor? bias, int[2] stride, int[] padding, "
      "int[2] dilation, int groups) -> Tensor");
  // (grad_input, grad_weight, grad_bias); an output whose output_mask entry is false is an
  // empty tensor.
  m.def(
      "conv2d_backward(Tensor grad_output, Tensor input, Tensor weight, int[2] stride, "
      "int[] padding, int[2] dilation, int groups, bool[3] output_mask) -> (Tensor, Tensor, "
      "Tensor)");
  // Elman RNN recurrence of one layer in one direction (fastlayers/rnn.h) over packed rows:
  // input_proj [rows, H] = x W_ih^T (+ b_ih) for every step; batch_sizes int64 [T] on the
  // CPU (torch's PackedSequence.batch_sizes; [B] * T for a padded sequence); h0 [B, H];
  // bias [H] added inside (b_hh, or b_ih + b_hh). Returns (output [rows, H], h_n [B, H]).
  m.def(
      "rnn_recurrence(Tensor input_proj, Tensor batch_sizes, Tensor h0, Tensor weight_hh, "
      "Tensor? bias, bool relu, bool reverse) -> (Tensor, Tensor)");
  // (grad_input_proj, grad_h0, grad_weight_hh, grad_bias); a missing grad_output or grad_hn
  // counts as zeros.
  m.def(
      "rnn_recurrence_backward(Tensor? grad_output, Tensor? grad_hn, Tensor output, Tensor h0, "
      "Tensor weight_hh, Tensor batch_sizes, bool relu, bool reverse) -> (Tensor, Tensor, "
      "Tensor, Tensor)");
  // Scaled dot-product attention on [B, H, L, E] tensors (fastlayers/attention.h): returns
  // the output and the log-sum-exp of each query row's scores. attn_mask: bool (true =
  // attend) or additive, broadcastable to [B, Hq, Lq, Lk]. seed_offset: int64 [2], the
  // Philox seed and offset of the dropout mask (needed when dropout_p > 0).
  m.def(
      "attention_forward(Tensor query, Tensor key, Tensor value, Tensor? attn_mask, "
      "float dropout_p, bool is_causal, float scale, Tensor? seed_offset) -> (Tensor, Tensor)");
  m.def(
      "attention_backward(Tensor grad_out, Tensor query, Tensor key, Tensor value, Tensor out, "
      "Tensor lse, Tensor? attn_mask, float dropout_p, bool is_causal, float scale, "
      "Tensor? seed_offset) -> (Tensor, Tensor, Tensor)");
  // The probabilities (after dropout) of the given query rows, recomputed from lse:
  // [B, Hq, len(rows), Lk]; all rows when rows is None.
  m.def(
      "attention_probs(Tensor query, Tensor key, Tensor lse, Tensor? attn_mask, float dropout_p, "
      "bool is_causal, float scale, Tensor? seed_offset, Tensor? rows) -> Tensor");
  // Softmax along `dim` (wrapped like torch's); backward takes the forward's output.
  m.def("softmax_forward(Tensor self, int dim) -> Tensor");
  m.def("softmax_backward(Tensor grad_output, Tensor output, int dim) -> Tensor");
  // x + the sinusoidal encoding of each position along seq_dim (features: the last dim).
  m.def("positional_encoding(Tensor self, int seq_dim) -> Tensor");
  // input * mask / (1 - p), the mask drawn from the Philox stream seed_offset (int64 [2]:
  // seed, offset) over the input's elements in logical order (fastlayers/dropout.h).
  m.def("dropout(Tensor input, float p, Tensor seed_offset) -> Tensor");
  // Int8 GEMM (fastlayers/int8_gemm.h): a [M, K] int8 x b [N, K] int8 (nn.Linear's weight
  // layout) -> int32 [M, N]; int8_linear fuses out = c * a_scale[:, None] * b_scale[None, :]
  // + bias, cast to out_dtype.
  m.def("int8_mm(Tensor a, Tensor b) -> Tensor");
  m.def(
      "int8_linear(Tensor a, Tensor a_scale, Tensor b, Tensor b_scale, Tensor? bias, "
      "ScalarType out_dtype) -> Tensor");
  // Symmetric absmax quantisation of each row (last dim): (int8 values, float32 scales).
  m.def("quantize_per_row(Tensor self) -> (Tensor, Tensor)");
}

}  // namespace ops
}  // namespace fl
