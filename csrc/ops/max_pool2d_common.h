// max_pool2d glue shared by the CPU and CUDA implementations: argument checks (with
// torch's messages), output geometry, and the tensors' memory formats.
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <initializer_list>
#include <tuple>
#include <vector>

#include "fastlayers/max_pool2d.h"
#include "ops/common.h"

namespace fl {
namespace ops {

// torch's pooling_output_shape: floor or ceil division, and in ceil mode the last window
// must start inside the input or its left padding.
inline int64_t pooled_size(int64_t in, int64_t k, int64_t pad, int64_t stride, int64_t dil,
                           bool ceil_mode) {
  const int64_t span = in + 2 * pad - dil * (k - 1) - 1 + (ceil_mode ? stride - 1 : 0);
  int64_t out = (span >= 0 ? span / stride : -((-span + stride - 1) / stride)) + 1;
  if (ceil_mode && (out - 1) * stride >= in + pad) --out;
  return out;
}

// Validates the arguments exactly as torch's max_pool2d does (same checks, order and
// messages) and returns the geometry. `input` is 3-D (C, H, W) or 4-D (N, C, H, W).
inline MaxPool2dShape max_pool2d_shape(const at::Tensor& input, at::IntArrayRef kernel_size,
                                       at::IntArrayRef stride, at::IntArrayRef padding,
                                       at::IntArrayRef dilation, bool ceil_mode) {
  TORCH_CHECK(kernel_size.size() == 1 || kernel_size.size() == 2,
              "max_pool2d: kernel_size must either be a single int, or a tuple of two ints")
  const int64_t kH = kernel_size[0];
  const int64_t kW = kernel_size.size() == 1 ? kH : kernel_size[1];
  TORCH_CHECK(stride.empty() || stride.size() == 1 || stride.size() == 2,
              "max_pool2d: stride must either be omitted, a single int, or a tuple of two ints")
  const int64_t dH = stride.empty() ? kH : stride[0];
  const int64_t dW = stride.empty() ? kW : stride.size() == 1 ? dH : stride[1];
  TORCH_CHECK(padding.size() == 1 || padding.size() == 2,
              "max_pool2d: padding must either be a single int, or a tuple of two ints")
  const int64_t padH = padding[0];
  const int64_t padW = padding.size() == 1 ? padH : padding[1];
  TORCH_CHECK(dilation.size() == 1 || dilation.size() == 2,
              "max_pool2d: dilation must be either a single int, or a tuple of two ints")
  const int64_t dilH = dilation[0];
  const int64_t dilW = dilation.size() == 1 ? dilH : dilation[1];

  const int64_t dim = input.dim();
  TORCH_CHECK(dim == 3 || dim == 4, "non-empty 3D or 4D (batch mode) tensor expected for input");
  // pooling_output_shape's checks, height first.
  for (auto [k, st, pad, dil] :
       {std::array<int64_t, 4>{kH, dH, padH, dilH}, std::array<int64_t, 4>{kW, dW, padW, dilW}}) {
    TORCH_CHECK(st != 0, "stride should not be zero");
    TORCH_CHECK(pad >= 0, "pad must be non-negative, but got pad: ", pad);
    TORCH_CHECK(pad <= ((k - 1) * dil + 1) / 2,
                "pad should be at most half of effective kernel size, but got pad=", pad,
                ", kernel_size=", k, " and dilation=", dil);
  }
  TORCH_CHECK(kW > 0 && kH > 0, "kernel size should be greater than zero, but got kH: ", kH,
              " kW: ", kW);
  TORCH_CHECK(dW > 0 && dH > 0, "stride should be greater than zero, but got dH: ", dH,
              " dW: ", dW);
  TORCH_CHECK(dilH > 0 && dilW > 0,
              "dilation should be greater than zero, but got dilationH: ", dilH,
              " dilationW: ", dilW);
  const bool channels_last =
      dim == 4 && input.suggest_memory_format() == at::MemoryFormat::ChannelsLast;
  const bool valid_dims =
      input.size(dim - 1) != 0 && input.size(dim - 2) != 0 && input.size(dim - 3) != 0;
  TORCH_CHECK(!channels_last || valid_dims,
              "Expected 4D (batch mode) tensor expected for input with channels_last layout "
              "with optional 0 dim batch size for input, but got: ",
              input.sizes());
  TORCH_CHECK(valid_dims,
              "Expected 3D or 4D (batch mode) tensor with optional 0 dim batch size for "
              "input, but got:",
              input.sizes());
  TORCH_CHECK(kW / 2 >= padW && kH / 2 >= padH,
              "pad should be smaller than or equal to half of kernel size, but got padW = ", padW,
              ", padH = ", padH, ", kW = ", kW, ", kH = ", kH);

  MaxPool2dShape s{};
  s.N = dim == 4 ? input.size(0) : 1;
  s.C = input.size(dim - 3);
  s.H = input.size(dim - 2);
  s.W = input.size(dim - 1);
  s.OH = pooled_size(s.H, kH, padH, dH, dilH, ceil_mode);
  s.OW = pooled_size(s.W, kW, padW, dW, dilW, ceil_mode);
  TORCH_CHECK(s.OH >= 1 && s.OW >= 1, "Given input size: (", s.C, "x", s.H, "x", s.W,
              "). Calculated output size: (", s.C, "x", s.OH, "x", s.OW,
              "). Output size is too small");
  s.kh = kH;
  s.kw = kW;
  s.sh = dH;
  s.sw = dW;
  s.ph = padH;
  s.pw = padW;
  s.dh = dilH;
  s.dw = dilW;
  s.channels_last = channels_last;
  s.dtype = to_dtype(input.scalar_type(), "max_pool2d");
  return s;
}

inline at::MemoryFormat memory_format(const MaxPool2dShape& s) {
  return s.channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

inline std::vector<int64_t> output_sizes(const at::Tensor& input, const MaxPool2dShape& s) {
  if (input.dim() == 3) return {s.C, s.OH, s.OW};
  return {s.N, s.C, s.OH, s.OW};
}

// Checks shared by the backward implementations; returns the geometry of the forward.
inline MaxPool2dShape max_pool2d_backward_shape(const at::Tensor& grad_output,
                                                const at::Tensor& input, const at::Tensor& indices,
                                                at::IntArrayRef kernel_size, at::IntArrayRef stride,
                                                at::IntArrayRef padding, at::IntArrayRef dilation,
                                                bool ceil_mode) {
  check_same_device({{"grad_output", grad_output}, {"self", input}, {"indices", indices}},
                    "max_pool2d_backward");
  TORCH_CHECK(indices.scalar_type() == at::kLong,
              "max_pool2d_backward: indices must have dtype int64, got ", indices.scalar_type());
  TORCH_CHECK(grad_output.scalar_type() == input.scalar_type(),
              "max_pool2d_backward: grad_output must have the dtype of self (", input.scalar_type(),
              "), got ", grad_output.scalar_type());
  MaxPool2dShape s = max_pool2d_shape(input, kernel_size, stride, padding, dilation, ceil_mode);
  const auto expected = output_sizes(input, s);
  TORCH_CHECK(grad_output.sizes() == at::IntArrayRef(expected),
              "max_pool2d_backward: grad_output must have size ", at::IntArrayRef(expected),
              ", got ", grad_output.sizes());
  TORCH_CHECK(indices.sizes() == at::IntArrayRef(expected),
              "max_pool2d_backward: indices must have size ", at::IntArrayRef(expected), ", got ",
              indices.sizes());
  return s;
}

// The device-independent body of the forward ops: checks, allocation in the input's memory
// format, then `launch(params)` unless the output is empty. Returns (values, indices);
// indices is an empty int64 tensor when with_indices is false.
template <typename Launch>
std::tuple<at::Tensor, at::Tensor> max_pool2d_forward_impl(
    const at::Tensor& self, at::IntArrayRef kernel_size, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, bool ceil_mode, bool with_indices,
    std::initializer_list<at::ScalarType> dtypes, const char* device, Launch&& launch) {
  MaxPool2dShape s = max_pool2d_shape(self, kernel_size, stride, padding, dilation, ceil_mode);
  check_dtype(self, dtypes, "max_pool2d", "input", device);
  const auto fmt = memory_format(s);
  const at::Tensor input = self.contiguous(fmt);
  const auto sizes = output_sizes(self, s);
  at::Tensor out = at::empty(sizes, self.options().memory_format(fmt));
  at::Tensor idx = with_indices
                       ? at::empty(sizes, self.options().dtype(at::kLong).memory_format(fmt))
                       : at::empty({0}, self.options().dtype(at::kLong));
  if (out.numel() == 0) return {out, idx};
  launch(MaxPool2dFwdParams{s, input.data_ptr(), out.data_ptr(),
                            with_indices ? idx.data_ptr<int64_t>() : nullptr});
  return {out, idx};
}

// The device-independent body of the backward op; `launch(params)` returns nothing.
template <typename Launch>
at::Tensor max_pool2d_backward_impl(const at::Tensor& grad_output, const at::Tensor& self,
                                    const at::Tensor& indices, at::IntArrayRef kernel_size,
                                    at::IntArrayRef stride, at::IntArrayRef padding,
                                    at::IntArrayRef dilation, bool ceil_mode,
                                    std::initializer_list<at::ScalarType> dtypes,
                                    const char* device, Launch&& launch) {
  MaxPool2dShape s = max_pool2d_backward_shape(grad_output, self, indices, kernel_size, stride,
                                               padding, dilation, ceil_mode);
  check_dtype(self, dtypes, "max_pool2d_backward", "self", device);
  const auto fmt = memory_format(s);
  const at::Tensor go = grad_output.contiguous(fmt);
  const at::Tensor ix = indices.contiguous(fmt);
  at::Tensor gi = at::empty(self.sizes(), self.options().memory_format(fmt));
  if (gi.numel() == 0) return gi;
  launch(MaxPool2dBwdParams{s, go.data_ptr(), ix.data_ptr<int64_t>(), gi.data_ptr()});
  return gi;
}

}  // namespace ops
}  // namespace fl
