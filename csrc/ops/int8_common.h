// Int8 GEMM and quantisation: the torch glue shared by every backend. Checks with messages
// that name the argument, views with a contiguous last dimension, allocation, then
// `launch(params)`.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <tuple>

#include "fastlayers/int8_gemm.h"
#include "ops/common.h"

namespace fl {
namespace ops {

// a [M, K] and b [N, K], int8, K-contiguous (copied only if not), on one device.
inline std::tuple<at::Tensor, at::Tensor> int8_operands(const at::Tensor& a, const at::Tensor& b,
                                                        const char* op) {
  TORCH_CHECK(a.dim() == 2 && b.dim() == 2, op, ": a and b must be 2-D ([M, K] and [N, K]), got ",
              a.sizes(), " and ", b.sizes());
  TORCH_CHECK(a.scalar_type() == at::kChar, op, ": a must be int8, got ", a.scalar_type());
  TORCH_CHECK(b.scalar_type() == at::kChar, op, ": b must be int8, got ", b.scalar_type());
  TORCH_CHECK(a.size(1) == b.size(1), op,
              ": a and b must have the same K (a [M, K], b [N, K]), got ", a.sizes(), " and ",
              b.sizes());
  TORCH_CHECK(a.size(1) <= kInt8MaxK, op, ": K = ", a.size(1), " exceeds ", kInt8MaxK,
              ", beyond which int32 accumulation could overflow");
  check_same_device({{"a", a}, {"b", b}}, op);
  auto k_contiguous = [](const at::Tensor& t) {
    return (t.size(1) <= 1 || t.stride(1) == 1) && t.stride(0) >= 0 ? t : t.contiguous();
  };
  return {k_contiguous(a), k_contiguous(b)};
}

inline Int8GemmParams int8_params(const at::Tensor& a, const at::Tensor& b, at::Tensor& out) {
  Int8GemmParams p{};
  p.M = a.size(0);
  p.N = b.size(0);
  p.K = a.size(1);
  p.a = a.data_ptr<int8_t>();
  p.lda = a.stride(0);
  p.b = b.data_ptr<int8_t>();
  p.ldb = b.stride(0);
  p.out = out.data_ptr();
  p.out_dtype = DType::kFloat32;
  return p;
}

template <typename Launch>
at::Tensor int8_mm_impl(const at::Tensor& a_in, const at::Tensor& b_in, Launch&& launch) {
  auto [a, b] = int8_operands(a_in, b_in, "int8_mm");
  at::Tensor out = at::empty({a.size(0), b.size(0)}, a.options().dtype(at::kInt));
  if (out.numel() == 0) return out;
  Int8GemmParams p = int8_params(a, b, out);
  launch(p);
  return out;
}

// A float32 vector of n elements (scales, bias), checked by name.
inline at::Tensor float_vector(const at::Tensor& t, int64_t n, const char* op, const char* arg,
                               const char* len_name, const at::Tensor& like) {
  TORCH_CHECK(t.scalar_type() == at::kFloat, op, ": ", arg, " must be float32, got ",
              t.scalar_type());
  TORCH_CHECK(t.dim() == 1 && t.size(0) == n, op, ": ", arg, " must have shape [", len_name,
              "] = [", n, "], got ", t.sizes());
  check_same_device({{"a", like}, {arg, t}}, op);
  return t.contiguous();
}

template <typename Launch>
at::Tensor int8_linear_impl(const at::Tensor& a_in, const at::Tensor& a_scale,
                            const at::Tensor& b_in, const at::Tensor& b_scale,
                            const std::optional<at::Tensor>& bias, at::ScalarType out_dtype,
                            std::initializer_list<at::ScalarType> out_dtypes, const char* device,
                            Launch&& launch) {
  const char* op = "int8_linear";
  auto [a, b] = int8_operands(a_in, b_in, op);
  const int64_t M = a.size(0), N = b.size(0);
  bool ok = false;
  for (auto d : out_dtypes) ok = ok || d == out_dtype;
  TORCH_CHECK(ok, op, ": out_dtype ", out_dtype, " is not supported on ", device);
  const at::Tensor as = float_vector(a_scale, M, op, "a_scale", "M", a);
  const at::Tensor bs = float_vector(b_scale, N, op, "b_scale", "N", a);
  at::Tensor bias32;
  if (bias.has_value()) {
    TORCH_CHECK(at::isFloatingType(bias->scalar_type()), op, ": bias must be floating point, got ",
                bias->scalar_type());
    bias32 = float_vector(bias->to(at::kFloat), N, op, "bias", "N", a);
  }
  at::Tensor out = at::empty({M, N}, a.options().dtype(out_dtype));
  if (out.numel() == 0) return out;
  Int8GemmParams p = int8_params(a, b, out);
  p.a_scale = as.data_ptr<float>();
  p.b_scale = bs.data_ptr<float>();
  p.bias = bias.has_value() ? bias32.data_ptr<float>() : nullptr;
  p.out_dtype = to_dtype(out_dtype, op);
  launch(p);
  return out;
}

template <typename Launch>
std::tuple<at::Tensor, at::Tensor> quantize_per_row_impl(
    const at::Tensor& self, std::initializer_list<at::ScalarType> dtypes, const char* device,
    Launch&& launch) {
  const char* op = "quantize_per_row";
  check_dtype(self, dtypes, op, "input", device);
  TORCH_CHECK(self.dim() >= 1, op, ": input must have at least 1 dimension");
  const at::Tensor x = self.contiguous();
  at::Tensor q = at::empty(self.sizes(), self.options().dtype(at::kChar));
  at::Tensor scale =
      at::empty(self.sizes().slice(0, self.dim() - 1), self.options().dtype(at::kFloat));
  const int64_t n = self.size(-1);
  const int64_t rows = n == 0 ? scale.numel() : self.numel() / n;
  if (rows == 0) return {q, scale};
  if (n == 0) {
    scale.fill_(1.0);
    return {q, scale};
  }
  QuantizeRowsParams p{rows,
                       n,
                       to_dtype(self.scalar_type(), op),
                       x.data_ptr(),
                       n,
                       q.data_ptr<int8_t>(),
                       scale.data_ptr<float>()};
  launch(p);
  return {q, scale};
}

}  // namespace ops
}  // namespace fl
