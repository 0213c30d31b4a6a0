// conv2d glue shared by the CPU and CUDA implementations: argument checks (torch's checks,
// with torch's messages where it has one), the output geometry and memory format.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <tuple>
#include <vector>

#include "fastlayers/conv2d.h"
#include "ops/common.h"

namespace fl {
namespace ops {

inline std::string sizes_str(const at::Tensor& t) { return c10::str(t.sizes()); }

// One value (both dims), two (height, width); padding also four (top, bottom, left, right).
inline std::vector<int64_t> expand_arg(at::IntArrayRef v, const char* name, bool allow4) {
  TORCH_CHECK(v.size() == 1 || v.size() == 2 || (allow4 && v.size() == 4), "expected ", name,
              " to be a single integer value or a list of 2 values",
              allow4 ? " (or 4: top, bottom, left, right)" : "",
              " to match the convolution dimensions, but got ", name, "=", v);
  if (v.size() == 1) return {v[0], v[0]};
  return std::vector<int64_t>(v.begin(), v.end());
}

// Validates as torch's conv2d does and returns the geometry (dtype and layout set).
inline Conv2dShape conv2d_shape(const at::Tensor& input, const at::Tensor& weight,
                                const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                                at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  TORCH_CHECK(input.dim() == 3 || input.dim() == 4,
              "Expected 3D (unbatched) or 4D (batched) input to conv2d, but got input of size: ",
              input.sizes());
  TORCH_CHECK(weight.dim() == 4,
              "conv2d: expected weight to be 4-D [out_channels, in_channels / groups, kH, kW], "
              "but got weight of size ",
              weight.sizes());
  const auto st = expand_arg(stride, "stride", false);
  const auto pd = expand_arg(padding, "padding", true);
  const auto dl = expand_arg(dilation, "dilation", false);
  for (auto v : st) TORCH_CHECK(v > 0, "non-positive stride is not supported");
  for (auto v : pd) TORCH_CHECK(v >= 0, "negative padding is not supported");
  for (auto v : dl) TORCH_CHECK(v > 0, "non-positive dilation is not supported");
  TORCH_CHECK(groups > 0, "non-positive groups is not supported");
  TORCH_CHECK(weight.size(0) >= groups, "Given groups=", groups,
              ", expected weight to be at least ", groups,
              " at dimension 0, but got weight of size ", weight.sizes(), " instead");
  TORCH_CHECK(weight.size(0) % groups == 0, "Given groups=", groups,
              ", expected weight to be divisible by ", groups,
              " at dimension 0, but got weight of size ", weight.sizes(), " instead");
  const bool batched = input.dim() == 4;
  const int64_t C = input.size(batched ? 1 : 0);
  TORCH_CHECK(C == weight.size(1) * groups, "Given groups=", groups, ", weight of size ",
              weight.sizes(), ", expected input", input.sizes(), " to have ",
              weight.size(1) * groups, " channels, but got ", C, " channels instead");
  TORCH_CHECK(
      input.size(-1) > 0 && input.size(-2) > 0,
      "Only zero batch or zero channel inputs are supported, but got input shape: ", input.sizes());
  TORCH_CHECK(weight.size(2) > 0 && weight.size(3) > 0,
              "conv2d: weight must have a nonzero kernel size, but got weight of size ",
              weight.sizes());
  if (bias.has_value() && bias->defined())
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == weight.size(0), "Given weight of size ",
                weight.sizes(), ", expected bias to be 1-dimensional with ", weight.size(0),
                " elements, but got bias of size ", bias->sizes(), " instead");
  check_same_device({{"input", input}, {"weight", weight}}, "conv2d");
  TORCH_CHECK(input.scalar_type() == weight.scalar_type(), "conv2d: Input type (", input.dtype(),
              ") and weight type (", weight.dtype(), ") should be the same");
  if (bias.has_value() && bias->defined()) {
    check_same_device({{"input", input}, {"bias", *bias}}, "conv2d");
    TORCH_CHECK(input.scalar_type() == bias->scalar_type(), "Input type (", input.dtype(),
                ") and bias type (", bias->dtype(), ") should be the same");
  }

  Conv2dShape s{};
  s.N = batched ? input.size(0) : 1;
  s.C = C;
  s.H = input.size(-2);
  s.W = input.size(-1);
  s.K = weight.size(0);
  s.R = weight.size(2);
  s.S = weight.size(3);
  s.sh = st[0];
  s.sw = st[1];
  int64_t pb, pr;
  if (pd.size() == 4) {
    s.pt = pd[0], pb = pd[1], s.pl = pd[2], pr = pd[3];
  } else {
    s.pt = pb = pd[0];
    s.pl = pr = pd[1];
  }
  s.dh = dl[0];
  s.dw = dl[1];
  s.groups = groups;
  const int64_t eh = s.dh * (s.R - 1) + 1, ew = s.dw * (s.S - 1) + 1;  // dilated kernel
  const int64_t ih = s.H + s.pt + pb, iw = s.W + s.pl + pr;
  TORCH_CHECK(ih >= eh && iw >= ew, "Calculated padded input size per channel: (", ih, " x ", iw,
              "). Kernel size: (", eh, " x ", ew,
              "). Kernel size can't be greater than actual input size");
  s.P = (ih - eh) / s.sh + 1;
  s.Q = (iw - ew) / s.sw + 1;
  // torch's rule (mkldnn and cudnn alike): channels_last when the input or the weight is.
  s.channels_last = batched && (input.suggest_memory_format() == at::MemoryFormat::ChannelsLast ||
                                weight.suggest_memory_format() == at::MemoryFormat::ChannelsLast);
  s.dtype = to_dtype(input.scalar_type(), "conv2d");
  return s;
}

inline at::MemoryFormat memory_format(const Conv2dShape& s) {
  return s.channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

// As torch: an input without channels gives an output without channels (not the bias).
inline std::vector<int64_t> conv2d_output_sizes(const at::Tensor& input, const Conv2dShape& s) {
  const int64_t k = s.C == 0 ? 0 : s.K;
  if (input.dim() == 3) return {k, s.P, s.Q};
  return {s.N, k, s.P, s.Q};
}

// The forward body: checks, allocation in the chosen memory format, `launch(params)` unless
// there is nothing to compute.
template <typename Launch>
at::Tensor conv2d_forward_impl(const at::Tensor& input, const at::Tensor& weight,
                               const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                               at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                               std::initializer_list<at::ScalarType> dtypes, const char* device,
                               Launch&& launch) {
  Conv2dShape s = conv2d_shape(input, weight, bias, stride, padding, dilation, groups);
  check_dtype(input, dtypes, "conv2d", "input", device);
  const auto fmt = memory_format(s);
  at::Tensor y = at::empty(conv2d_output_sizes(input, s), input.options().memory_format(fmt));
  if (y.numel() == 0) return y;
  const bool has_bias = bias.has_value() && bias->defined();
  const at::Tensor x = input.contiguous(fmt), w = weight.contiguous();
  const at::Tensor b = has_bias ? bias->contiguous() : at::Tensor();
  launch(Conv2dFwdParams{s, x.data_ptr(), w.data_ptr(), has_bias ? b.data_ptr() : nullptr,
                         y.data_ptr()});
  return y;
}

// The backward body: (grad_input, grad_weight, grad_bias), each an empty tensor where
// output_mask is false.
template <typename Launch>
std::tuple<at::Tensor, at::Tensor, at::Tensor> conv2d_backward_impl(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
    std::array<bool, 3> output_mask, std::initializer_list<at::ScalarType> dtypes,
    const char* device, Launch&& launch) {
  Conv2dShape s = conv2d_shape(input, weight, std::nullopt, stride, padding, dilation, groups);
  check_dtype(input, dtypes, "conv2d_backward", "input", device);
  check_same_device({{"grad_output", grad_output}, {"input", input}}, "conv2d_backward");
  TORCH_CHECK(grad_output.scalar_type() == input.scalar_type(),
              "conv2d_backward: grad_output must have the dtype of input (", input.scalar_type(),
              "), got ", grad_output.scalar_type());
  const auto expected = conv2d_output_sizes(input, s);
  TORCH_CHECK(grad_output.sizes() == at::IntArrayRef(expected),
              "conv2d_backward: grad_output must have size ", at::IntArrayRef(expected), ", got ",
              grad_output.sizes());
  const auto fmt = memory_format(s);
  const auto opts = input.options();
  at::Tensor gx =
      output_mask[0] ? at::empty(input.sizes(), opts.memory_format(fmt)) : at::empty({0}, opts);
  at::Tensor gw = output_mask[1] ? at::empty(weight.sizes(), opts) : at::empty({0}, opts);
  at::Tensor gb = output_mask[2] ? at::empty({s.K}, opts) : at::empty({0}, opts);
  if (s.N == 0 || s.C == 0 || s.K == 0) {  // nothing to multiply: the sums are empty
    if (output_mask[0]) gx.zero_();
    if (output_mask[1]) gw.zero_();
    if (output_mask[2]) gb.zero_();
    if (output_mask[2] && s.N > 0 && s.C > 0) {
      const std::vector<int64_t> dims =
          input.dim() == 4 ? std::vector<int64_t>{0, 2, 3} : std::vector<int64_t>{1, 2};
      gb.copy_(grad_output.sum(dims));
    }
    return {gx, gw, gb};
  }
  const at::Tensor go = grad_output.contiguous(fmt), x = input.contiguous(fmt),
                   w = weight.contiguous();
  launch(Conv2dBwdParams{
      s, go.data_ptr(), x.data_ptr(), w.data_ptr(), output_mask[0] ? gx.data_ptr() : nullptr,
      output_mask[1] ? gw.data_ptr() : nullptr, output_mask[2] ? gb.data_ptr() : nullptr});
  return {gx, gw, gb};
}

}  // namespace ops
}  // namespace fl
