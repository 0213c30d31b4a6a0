// Scaled dot-product attention: the torch glue shared by every backend. Checks with messages
// that name the argument, views with a contiguous last dimension, the mask broadcast to
// [B, Hq, Lq, Lk] as a stride-0 view (no copy), allocation, and the params structs.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <tuple>

#include "fastlayers/attention.h"
#include "ops/common.h"

namespace fl {
namespace ops {

// A view whose last dimension is contiguous (what the kernels index), copying only if not.
inline at::Tensor last_dim_contiguous(const at::Tensor& t) {
  return (t.size(-1) <= 1 || t.stride(-1) == 1) ? t : t.contiguous();
}

struct AttentionInputs {
  at::Tensor q, k, v, mask;
  AttentionShape s;
  AttentionArgs a;
};

inline AttentionInputs attention_inputs(const at::Tensor& query, const at::Tensor& key,
                                        const at::Tensor& value,
                                        const std::optional<at::Tensor>& attn_mask,
                                        double dropout_p, bool is_causal, double scale,
                                        const std::optional<at::Tensor>& seed_offset,
                                        std::initializer_list<at::ScalarType> dtypes,
                                        const char* device, const char* op) {
  TORCH_CHECK(query.dim() == 4 && key.dim() == 4 && value.dim() == 4, op,
              ": query, key and value must be 4-D [batch, heads, length, dim], got ", query.sizes(),
              ", ", key.sizes(), " and ", value.sizes());
  check_same_device({{"query", query}, {"key", key}, {"value", value}}, op);
  check_dtype(query, dtypes, op, "query", device);
  TORCH_CHECK(
      key.scalar_type() == query.scalar_type() && value.scalar_type() == query.scalar_type(), op,
      ": query, key and value must have the same dtype, got ", query.scalar_type(), ", ",
      key.scalar_type(), " and ", value.scalar_type());
  AttentionInputs in;
  AttentionShape& s = in.s;
  s.B = query.size(0);
  s.Hq = query.size(1);
  s.Lq = query.size(2);
  s.D = query.size(3);
  s.Hkv = key.size(1);
  s.Lk = key.size(2);
  s.Dv = value.size(3);
  s.dtype = to_dtype(query.scalar_type(), op);
  TORCH_CHECK(key.size(0) == s.B && value.size(0) == s.B, op,
              ": query, key and value must have the same batch size, got ", s.B, ", ", key.size(0),
              " and ", value.size(0));
  TORCH_CHECK(value.size(1) == s.Hkv && value.size(2) == s.Lk, op,
              ": key and value must have the same number of heads and length, got ", key.sizes(),
              " and ", value.sizes());
  TORCH_CHECK(key.size(3) == s.D, op, ": query and key must have the same embedding size, got ",
              s.D, " and ", key.size(3));
  TORCH_CHECK(s.Hkv > 0 ? s.Hq % s.Hkv == 0 : s.Hq == 0, op, ": the number of query heads (", s.Hq,
              ") must be a multiple of the number of key/value heads (", s.Hkv, ")");
  TORCH_CHECK(dropout_p >= 0 && dropout_p < 1, op, ": dropout_p must be in [0, 1), got ",
              dropout_p);
  in.q = last_dim_contiguous(query);
  in.k = last_dim_contiguous(key);
  in.v = last_dim_contiguous(value);
  AttentionArgs& a = in.a;
  a.mask = nullptr;
  a.mask_kind = MaskKind::kNone;
  for (auto& st : a.mask_stride) st = 0;
  a.causal = is_causal;
  a.scale = scale;
  a.dropout_p = dropout_p;
  a.seed = a.offset = 0;
  if (attn_mask.has_value()) {
    const at::Tensor& m = *attn_mask;
    TORCH_CHECK(!is_causal, op, ": attn_mask must not be given when is_causal is set");
    check_same_device({{"query", query}, {"attn_mask", m}}, op);
    TORCH_CHECK(m.scalar_type() == at::kBool || m.scalar_type() == query.scalar_type(), op,
                ": attn_mask must be bool or have the dtype of query (", query.scalar_type(),
                "), got ", m.scalar_type());
    TORCH_CHECK(m.dim() <= 4, op, ": attn_mask must have at most 4 dimensions, got ", m.dim());
    const int64_t want[4] = {s.B, s.Hq, s.Lq, s.Lk};
    const int64_t off = 4 - m.dim();
    for (int64_t d = 0; d < m.dim(); ++d)
      TORCH_CHECK(m.size(d) == 1 || m.size(d) == want[d + off], op, ": attn_mask of size ",
                  m.sizes(), " does not broadcast to [", s.B, ", ", s.Hq, ", ", s.Lq, ", ", s.Lk,
                  "]");
    in.mask = m.expand({s.B, s.Hq, s.Lq, s.Lk});
    a.mask = in.mask.data_ptr();
    a.mask_kind = m.scalar_type() == at::kBool ? MaskKind::kBool : MaskKind::kAdditive;
    for (int d = 0; d < 4; ++d) a.mask_stride[d] = in.mask.size(d) == 1 ? 0 : in.mask.stride(d);
  }
  if (dropout_p > 0) {
    TORCH_CHECK(seed_offset.has_value(), op, ": dropout_p > 0 needs seed_offset");
    const at::Tensor so = seed_offset->to(at::kCPU);
    TORCH_CHECK(so.scalar_type() == at::kLong && so.numel() == 2, op,
                ": seed_offset must be an int64 tensor of 2 elements, got ", so.scalar_type(),
                " of size ", so.sizes());
    a.seed = uint64_t(so.data_ptr<int64_t>()[0]);
    a.offset = uint64_t(so.data_ptr<int64_t>()[1]);
  }
  return in;
}

inline void fill_strides(const at::Tensor& t, int64_t (&st)[3]) {
  for (int d = 0; d < 3; ++d) st[d] = t.stride(d);
}

inline at::ScalarType lse_dtype(const at::Tensor& q) {
  return q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

// Forward: returns (out [B, Hq, Lq, Dv], lse [B, Hq, Lq]).
template <typename Launch>
std::tuple<at::Tensor, at::Tensor> attention_forward_impl(
    const at::Tensor& query, const at::Tensor& key, const at::Tensor& value,
    const std::optional<at::Tensor>& attn_mask, double dropout_p, bool is_causal, double scale,
    const std::optional<at::Tensor>& seed_offset, std::initializer_list<at::ScalarType> dtypes,
    const char* device, Launch&& launch) {
  AttentionInputs in = attention_inputs(query, key, value, attn_mask, dropout_p, is_causal, scale,
                                        seed_offset, dtypes, device, "attention_forward");
  const AttentionShape& s = in.s;
  at::Tensor out = at::empty({s.B, s.Hq, s.Lq, s.Dv}, query.options());
  at::Tensor lse = at::empty({s.B, s.Hq, s.Lq}, query.options().dtype(lse_dtype(query)));
  if (out.numel() == 0 && lse.numel() == 0) return {out, lse};
  AttentionFwdParams p{};
  p.s = s;
  p.a = in.a;
  p.q = in.q.data_ptr();
  p.k = in.k.data_ptr();
  p.v = in.v.data_ptr();
  fill_strides(in.q, p.q_stride);
  fill_strides(in.k, p.k_stride);
  fill_strides(in.v, p.v_stride);
  p.out = out.data_ptr();
  fill_strides(out, p.o_stride);
  p.lse = lse.data_ptr();
  launch(p);
  return {out, lse};
}

// Probabilities of the given query rows (all rows when `rows` is absent): [B, Hq, R, Lk].
template <typename Launch>
at::Tensor attention_probs_impl(const at::Tensor& query, const at::Tensor& key,
                                const at::Tensor& lse, const std::optional<at::Tensor>& attn_mask,
                                double dropout_p, bool is_causal, double scale,
                                const std::optional<at::Tensor>& seed_offset,
                                const std::optional<at::Tensor>& rows,
                                std::initializer_list<at::ScalarType> dtypes, const char* device,
                                Launch&& launch) {
  const char* op = "attention_probs";
  AttentionInputs in = attention_inputs(query, key, key, attn_mask, dropout_p, is_causal, scale,
                                        seed_offset, dtypes, device, op);
  const AttentionShape& s = in.s;
  check_same_device({{"query", query}, {"lse", lse}}, op);
  TORCH_CHECK(
      lse.sizes() == at::IntArrayRef({s.B, s.Hq, s.Lq}) && lse.scalar_type() == lse_dtype(query),
      op, ": lse must be ", lse_dtype(query), " of size [", s.B, ", ", s.Hq, ", ", s.Lq, "], got ",
      lse.scalar_type(), " of size ", lse.sizes());
  at::Tensor r = rows.has_value() ? rows->to(at::kCPU).contiguous()
                                  : at::arange(s.Lq, at::TensorOptions().dtype(at::kLong));
  TORCH_CHECK(r.scalar_type() == at::kLong && r.dim() == 1, op,
              ": rows must be a 1-D int64 tensor, got ", r.scalar_type(), " of size ", r.sizes());
  if (r.numel() > 0)
    TORCH_CHECK(r.min().item<int64_t>() >= 0 && r.max().item<int64_t>() < s.Lq, op,
                ": rows must be in [0, ", s.Lq, ")");
  at::Tensor probs = at::empty({s.B, s.Hq, r.numel(), s.Lk}, query.options());
  if (probs.numel() == 0) return probs;
  const at::Tensor l = lse.contiguous();
  AttentionProbsParams p{};
  p.s = s;
  p.a = in.a;
  p.q = in.q.data_ptr();
  p.k = in.k.data_ptr();
  fill_strides(in.q, p.q_stride);
  fill_strides(in.k, p.k_stride);
  p.lse = l.data_ptr();
  p.rows = r.data_ptr<int64_t>();
  p.R = r.numel();
  p.probs = probs.data_ptr();
  launch(p);
  return probs;
}

// Backward: returns (dq, dk, dv) shaped like query, key, value (contiguous).
template <typename Launch>
std::tuple<at::Tensor, at::Tensor, at::Tensor> attention_backward_impl(
    const at::Tensor& grad_out, const at::Tensor& query, const at::Tensor& key,
    const at::Tensor& value, const at::Tensor& out, const at::Tensor& lse,
    const std::optional<at::Tensor>& attn_mask, double dropout_p, bool is_causal, double scale,
    const std::optional<at::Tensor>& seed_offset, std::initializer_list<at::ScalarType> dtypes,
    const char* device, Launch&& launch) {
  AttentionInputs in = attention_inputs(query, key, value, attn_mask, dropout_p, is_causal, scale,
                                        seed_offset, dtypes, device, "attention_backward");
  const AttentionShape& s = in.s;
  const char* op = "attention_backward";
  check_same_device({{"query", query}, {"grad_out", grad_out}, {"out", out}, {"lse", lse}}, op);
  const std::vector<int64_t> osize = {s.B, s.Hq, s.Lq, s.Dv};
  TORCH_CHECK(grad_out.sizes() == at::IntArrayRef(osize) && out.sizes() == at::IntArrayRef(osize),
              op, ": grad_out and out must have size ", at::IntArrayRef(osize), ", got ",
              grad_out.sizes(), " and ", out.sizes());
  TORCH_CHECK(
      grad_out.scalar_type() == query.scalar_type() && out.scalar_type() == query.scalar_type(), op,
      ": grad_out and out must have the dtype of query");
  TORCH_CHECK(
      lse.sizes() == at::IntArrayRef({s.B, s.Hq, s.Lq}) && lse.scalar_type() == lse_dtype(query),
      op, ": lse must be ", lse_dtype(query), " of size [", s.B, ", ", s.Hq, ", ", s.Lq, "], got ",
      lse.scalar_type(), " of size ", lse.sizes());
  at::Tensor dq = at::empty(query.sizes(), query.options());
  at::Tensor dk = at::empty(key.sizes(), key.options());
  at::Tensor dv = at::empty(value.sizes(), value.options());
  if (s.B * s.Hq * s.Lq == 0 || s.Lk == 0) {
    // No (query, key) pair: every gradient is zero.
    dq.zero_();
    dk.zero_();
    dv.zero_();
    return {dq, dk, dv};
  }
  const at::Tensor go = last_dim_contiguous(grad_out), o = last_dim_contiguous(out);
  const at::Tensor l = lse.contiguous();
  AttentionBwdParams p{};
  p.s = s;
  p.a = in.a;
  p.q = in.q.data_ptr();
  p.k = in.k.data_ptr();
  p.v = in.v.data_ptr();
  p.out = o.data_ptr();
  p.grad_out = go.data_ptr();
  fill_strides(in.q, p.q_stride);
  fill_strides(in.k, p.k_stride);
  fill_strides(in.v, p.v_stride);
  fill_strides(o, p.o_stride);
  fill_strides(go, p.go_stride);
  p.lse = l.data_ptr();
  p.dq = dq.data_ptr();
  p.dk = dk.data_ptr();
  p.dv = dv.data_ptr();
  launch(p);
  return {dq, dk, dv};
}

}  // namespace ops
}  // namespace fl
