// RNN recurrence glue shared by the CPU and CUDA implementations: argument checks (naming
// the argument), allocation, and the weight and bias gradients, which are one GEMM and one
// column sum over all steps once dz is known.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "fastlayers/rnn.h"
#include "ops/common.h"

namespace fl {
namespace ops {

// Validates and returns the shape (dtype set). One direction: weight_hh [H, H], h0 [B, H],
// bias [H]; or with a leading directions dimension (1 or 2; 2 = both directions in one
// launch): weight_hh [D, H, H], h0 [D, B, H], bias [D, H]. input_proj is [rows, D H].
inline RnnShape rnn_shape(const at::Tensor& input_proj, const at::Tensor& batch_sizes,
                          const at::Tensor& h0, const at::Tensor& weight_hh,
                          const std::optional<at::Tensor>& bias, bool relu, bool reverse,
                          const char* op) {
  TORCH_CHECK(batch_sizes.dim() == 1 && batch_sizes.scalar_type() == at::kLong &&
                  batch_sizes.device().is_cpu(),
              op, ": batch_sizes must be a 1-D int64 CPU tensor, got ", batch_sizes.dim(), "-D ",
              batch_sizes.scalar_type(), " on ", batch_sizes.device());
  TORCH_CHECK(weight_hh.dim() == 2 ||
                  (weight_hh.dim() == 3 && (weight_hh.size(0) == 1 || weight_hh.size(0) == 2)),
              op,
              ": weight_hh must be [hidden_size, hidden_size] or [directions (1 or 2), "
              "hidden_size, hidden_size], got ",
              weight_hh.sizes());
  const bool stacked = weight_hh.dim() == 3;
  const int64_t D = stacked ? weight_hh.size(0) : 1, H = weight_hh.size(-1);
  TORCH_CHECK(weight_hh.size(-2) == H, op,
              ": weight_hh must be square in its last two dimensions, got ", weight_hh.sizes());
  TORCH_CHECK(h0.dim() == weight_hh.dim() && h0.size(-1) == H && (!stacked || h0.size(0) == D), op,
              ": h0 must be ",
              stacked ? "[directions, batch, hidden_size] = [" : "[batch, hidden_size = ",
              stacked ? std::to_string(D) + ", batch, " : std::string(), H, "], got ", h0.sizes());
  TORCH_CHECK(input_proj.dim() == 2 && input_proj.size(1) == D * H, op,
              ": input_proj must be 2-D [rows, directions * hidden_size = ", D * H, "], got ",
              input_proj.sizes());
  const bool has_bias = bias.has_value() && bias->defined();
  if (has_bias)
    TORCH_CHECK(bias->sizes() == weight_hh.sizes().slice(0, weight_hh.dim() - 1), op,
                ": bias must be ", weight_hh.sizes().slice(0, weight_hh.dim() - 1), ", got ",
                bias->sizes());
  check_same_device({{"input_proj", input_proj}, {"h0", h0}, {"weight_hh", weight_hh}}, op);
  if (has_bias) check_same_device({{"input_proj", input_proj}, {"bias", *bias}}, op);
  for (const auto& [name, t] :
       {std::pair<const char*, at::Tensor>{"h0", h0}, {"weight_hh", weight_hh}})
    TORCH_CHECK(t.scalar_type() == input_proj.scalar_type(), op, ": ", name,
                " must have the dtype of input_proj (", input_proj.scalar_type(), "), got ",
                t.scalar_type());
  if (has_bias)
    TORCH_CHECK(bias->scalar_type() == input_proj.scalar_type(), op,
                ": bias must have the dtype of input_proj (", input_proj.scalar_type(), "), got ",
                bias->scalar_type());
  RnnShape s{};
  s.T = batch_sizes.size(0);
  s.B = h0.size(-2);
  s.H = H;
  s.rows = input_proj.size(0);
  s.relu = relu;
  s.reverse = reverse;
  s.dtype = to_dtype(input_proj.scalar_type(), op);
  s.dirs = D;
  const int64_t* bs = batch_sizes.data_ptr<int64_t>();
  int64_t total = 0;
  for (int64_t t = 0; t < s.T; ++t) {
    TORCH_CHECK(bs[t] > 0 && bs[t] <= s.B && (t == 0 || bs[t] <= bs[t - 1]), op,
                ": batch_sizes must be positive, non-increasing and at most h0's batch (", s.B,
                "), got ", batch_sizes);
    total += bs[t];
  }
  TORCH_CHECK(total == s.rows, op, ": input_proj has ", s.rows, " rows but batch_sizes sums to ",
              total);
  TORCH_CHECK(s.T == 0 || bs[0] == s.B, op, ": h0 has batch ", s.B,
              " but the first step has batch_sizes[0] = ", s.T ? bs[0] : 0);
  return s;
}

template <typename Launch>
std::tuple<at::Tensor, at::Tensor> rnn_forward_impl(
    const at::Tensor& input_proj, const at::Tensor& batch_sizes, const at::Tensor& h0,
    const at::Tensor& weight_hh, const std::optional<at::Tensor>& bias, bool relu, bool reverse,
    std::initializer_list<at::ScalarType> dtypes, const char* device, Launch&& launch) {
  const RnnShape s =
      rnn_shape(input_proj, batch_sizes, h0, weight_hh, bias, relu, reverse, "rnn_recurrence");
  check_dtype(input_proj, dtypes, "rnn_recurrence", "input_proj", device);
  const at::Tensor x = input_proj.contiguous(), h = h0.contiguous(), w = weight_hh.contiguous();
  const bool has_bias = bias.has_value() && bias->defined();
  const at::Tensor b = has_bias ? bias->contiguous() : at::Tensor();
  at::Tensor out = at::empty({s.rows, s.row_width()}, x.options());
  if (s.T == 0 || s.B == 0 || s.H == 0) return {out, h.clone()};
  at::Tensor hn = at::empty_like(h);
  launch(RnnFwdParams{s, batch_sizes.data_ptr<int64_t>(), x.data_ptr(), h.data_ptr(), w.data_ptr(),
                      has_bias ? b.data_ptr() : nullptr, out.data_ptr(), hn.data_ptr()});
  return {out, hn};
}

// For each packed row, the row of cat([h0, output]) (one direction's) that held its previous
// hidden state in a direction running in reverse or not.
inline at::Tensor previous_rows(const RnnShape& s, const int64_t* bs, bool reverse) {
  at::Tensor idx = at::empty({s.rows}, at::kLong);
  int64_t* p = idx.data_ptr<int64_t>();
  std::vector<int64_t> off(s.T + 1, 0);
  for (int64_t t = 0; t < s.T; ++t) off[t + 1] = off[t] + bs[t];
  for (int64_t t = 0; t < s.T; ++t) {
    const int64_t later = t + 1 < s.T ? bs[t + 1] : 0;
    for (int64_t b = 0; b < bs[t]; ++b) {
      int64_t src;
      if (!reverse)
        src = t == 0 ? b : s.B + off[t - 1] + b;
      else
        src = b >= later ? b : s.B + off[t + 1] + b;
      p[off[t] + b] = src;
    }
  }
  return idx;
}

template <typename Launch>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> rnn_backward_impl(
    const std::optional<at::Tensor>& grad_output, const std::optional<at::Tensor>& grad_hn,
    const at::Tensor& output, const at::Tensor& h0, const at::Tensor& weight_hh,
    const at::Tensor& batch_sizes, bool relu, bool reverse,
    std::initializer_list<at::ScalarType> dtypes, const char* device, Launch&& launch) {
  const char* op = "rnn_recurrence_backward";
  const RnnShape s = rnn_shape(output, batch_sizes, h0, weight_hh, std::nullopt, relu, reverse, op);
  check_dtype(output, dtypes, op, "output", device);
  const bool has_go = grad_output.has_value() && grad_output->defined();
  const bool has_ghn = grad_hn.has_value() && grad_hn->defined();
  if (has_go)
    TORCH_CHECK(grad_output->sizes() == output.sizes() &&
                    grad_output->scalar_type() == output.scalar_type() &&
                    grad_output->device() == output.device(),
                op, ": grad_output must match output (", output.sizes(), ", ", output.scalar_type(),
                "), got ", grad_output->sizes(), ", ", grad_output->scalar_type());
  if (has_ghn)
    TORCH_CHECK(grad_hn->sizes() == h0.sizes() && grad_hn->scalar_type() == h0.scalar_type() &&
                    grad_hn->device() == h0.device(),
                op, ": grad_hn must match h0 (", h0.sizes(), ", ", h0.scalar_type(), "), got ",
                grad_hn->sizes(), ", ", grad_hn->scalar_type());
  const auto opts = output.options();
  at::Tensor gz = at::empty({s.rows, s.row_width()}, opts);
  const auto bias_shape = weight_hh.sizes().slice(0, weight_hh.dim() - 1);
  if (s.T == 0 || s.B == 0 || s.H == 0) {
    at::Tensor gh0 = has_ghn ? grad_hn->clone() : at::zeros_like(h0);
    return {gz, gh0, at::zeros_like(weight_hh), at::zeros(bias_shape, opts)};
  }
  at::Tensor gh0 = at::empty(h0.sizes(), opts);
  const at::Tensor go = has_go ? grad_output->contiguous() : at::Tensor();
  const at::Tensor ghn = has_ghn ? grad_hn->contiguous() : at::Tensor();
  const at::Tensor out = output.contiguous(), w = weight_hh.contiguous();
  launch(RnnBwdParams{s, batch_sizes.data_ptr<int64_t>(), has_go ? go.data_ptr() : nullptr,
                      has_ghn ? ghn.data_ptr() : nullptr, out.data_ptr(), w.data_ptr(),
                      gz.data_ptr(), gh0.data_ptr()});
  // Per direction: dW_hh = dz^T h_prev over every row; dbias = the column sums of dz.
  const at::Tensor h = h0.contiguous().view({s.dirs, s.B, s.H});
  std::vector<at::Tensor> gws;
  for (int64_t d = 0; d < s.dirs; ++d) {
    const at::Tensor rows =
        previous_rows(s, batch_sizes.data_ptr<int64_t>(), s.reversed(d)).to(output.device());
    const at::Tensor prev = at::cat({h[d], out.narrow(1, d * s.H, s.H)}, 0).index_select(0, rows);
    gws.push_back(at::mm(gz.narrow(1, d * s.H, s.H).t(), prev));
  }
  at::Tensor gw = (s.dirs == 1 ? gws[0] : at::stack(gws, 0)).view(weight_hh.sizes());
  at::Tensor gb = gz.sum(0).view(bias_shape);
  return {gz, gh0, gw, gb};
}

}  // namespace ops
}  // namespace fl
