// Elman RNN recurrence on the CPU (fastlayers/rnn.h), forward and backward, one fused
// sequence kernel each.
//
// The state of every batch entry lives in a float (double for float64) buffer [B, ld],
// ld = H rounded up to a vector, for the whole sequence; each step is
//   forward:  next[b] = act(xw_t[b] + bias + cur[b] W_hh^T)
//   backward: dz[b] = (grad_out_t[b] + dh[b]) act'(out_t[b]),  dh'[b] = dz[b] W_hh
// with the matrix kept as [H, ld] (W_hh^T for the forward, W_hh for the backward), read by
// a register-blocked kernel (4 rows x 4 vectors of 16 lanes: each matrix vector loaded
// serves 4 rows) over column blocks, in parallel when a step has enough work; the
// activation runs on vectors (tanh by Cephes' tanhf: a polynomial below 0.625, else via exp,
// within 2 ulp of std::tanh). Each output element has one writer, so results do not depend
// on the thread count.
//
// Included once per instruction set by rnn*.cpp with FL_ISA_NS naming the namespace (see
// max_pool2d_impl.h).

#ifndef FL_ISA_NS
#error "define FL_ISA_NS before including rnn_impl.h"
#endif

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#include "fastlayers/rnn.h"

namespace fl {
namespace cpu {
namespace FL_ISA_NS {
namespace {

constexpr int64_t kLanes = 16;
template <typename U>
struct VecOf {
  typedef U type __attribute__((vector_size(kLanes * sizeof(U))));
};
template <typename U>
using Vec = typename VecOf<U>::type;

// A step is run in parallel over column blocks from this many multiply-adds on.
constexpr int64_t kParallelWork = int64_t(1) << 18;
// Two directions run side by side, a thread each, below this many multiply-adds per step.
constexpr int64_t kDirectionsSideBySide = int64_t(1) << 21;

int64_t round_up(int64_t a, int64_t b) { return (a + b - 1) / b * b; }

template <typename U>
inline Vec<U> vload(const U* p) {
  Vec<U> v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <typename U>
inline void vstore(U* p, const Vec<U>& v) {
  std::memcpy(p, &v, sizeof v);
}

// n (<= kLanes) elements of T from p as a vector of U, the rest 0.
template <typename T, typename U>
inline Vec<U> load_part(const T* p, int64_t n) {
  Vec<U> v = {};
  for (int64_t i = 0; i < n; ++i) v[i] = load(p + i);
  return v;
}
template <typename T, typename U>
inline void store_part(T* p, const Vec<U>& v, int64_t n) {
  for (int64_t i = 0; i < n; ++i) store(p + i, v[i]);
}

// tanh of 16 floats, Cephes' tanhf: |x| < 0.625: x + x^3 P(x^2); else 1 - 2 / (exp(2|x|) + 1)
// with the sign of x; exp by Cephes' expf (2^n times a degree-5 polynomial). |x| is capped at
// 10 (tanh is 1 in float from 9.01 on); NaN stays NaN.
inline Vec<float> tanh_v(const Vec<float>& x) {
  typedef int32_t I __attribute__((vector_size(kLanes * 4)));
  const Vec<float> ax = x < 0.f ? -x : x;
  const Vec<float> z2 = x * x;
  Vec<float> p = -5.70498872745e-3f * z2 + 2.06390887954e-2f;
  p = p * z2 - 5.37397155531e-2f;
  p = p * z2 + 1.33314422036e-1f;
  p = p * z2 - 3.33332819422e-1f;
  const Vec<float> small = p * z2 * x + x;
  Vec<float> y = ax > 10.f ? Vec<float>{} + 10.f : ax;
  y = y + y;  // exp(2 |x|)
  Vec<float> n = y * 1.44269504088896341f + 0.5f;
  n = __builtin_convertvector(__builtin_convertvector(n, I), Vec<float>);  // floor (n >= 0.5)
  const Vec<float> r = y - n * 0.693359375f + n * 2.12194440e-4f;
  Vec<float> e = 1.9875691500e-4f * r + 1.3981999507e-3f;
  e = e * r + 8.3334519073e-3f;
  e = e * r + 4.1665795894e-2f;
  e = e * r + 1.6666665459e-1f;
  e = e * r + 5.0000001201e-1f;
  e = e * r * r + r + 1.f;
  const I bits = (__builtin_convertvector(n, I) + 127) << 23;
  Vec<float> scale;
  std::memcpy(&scale, &bits, sizeof scale);
  e = e * scale;
  Vec<float> big = 1.f - 2.f / (e + 1.f);
  big = x < 0.f ? -big : big;
  return ax < 0.625f ? small : (x != x ? x : big);
}

template <typename U>
inline Vec<U> act_v(const Vec<U>& x, bool relu) {
  if (relu) return x < U(0) ? Vec<U>{} : x;  // NaN stays NaN, as torch's relu
  if constexpr (std::is_same_v<U, float>) {
    return tanh_v(x);
  } else {
    Vec<U> v;
    for (int64_t i = 0; i < kLanes; ++i) v[i] = std::tanh(x[i]);
    return v;
  }
}

// act' from the activation's output: tanh 1 - y^2, relu (y > 0), as torch's backward.
template <typename U>
inline Vec<U> act_grad_v(const Vec<U>& y, bool relu) {
  if (relu) return y > U(0) ? Vec<U>{} + U(1) : Vec<U>{};
  return U(1) - y * y;
}

// dst[r][j0 + 16 c + l] = sum_k src[r][k] m[k][j0 + 16 c + l], r < R, c < CV; rows at ld.
template <typename U, int R, int CV>
inline void block(const U* src, const U* m, U* dst, int64_t K, int64_t ld, int64_t j0) {
  Vec<U> acc[R][CV] = {};
  for (int64_t k = 0; k < K; ++k) {
    Vec<U> mv[CV];
    for (int c = 0; c < CV; ++c) mv[c] = vload(m + k * ld + j0 + c * kLanes);
    for (int r = 0; r < R; ++r) {
      const U s = src[r * ld + k];
      for (int c = 0; c < CV; ++c) acc[r][c] += s * mv[c];
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < CV; ++c) vstore(dst + r * ld + j0 + c * kLanes, acc[r][c]);
}

// dst[b] = src[b] m for rows b < n ([n, ld] buffers, m [K, ld]).
template <typename U>
void rows_times(const U* src, const U* m, U* dst, int64_t n, int64_t K, int64_t ld,
                const ParallelFor& pfor) {
  constexpr int CV = sizeof(U) == 4 ? 4 : 2;  // accumulators: 16 zmm for float, 16 for double
  const int64_t nv = ld / kLanes, blocks = (nv + CV - 1) / CV;
  auto body = [&](int64_t b0, int64_t b1) {
    for (int64_t cb = b0; cb < b1; ++cb) {
      const int64_t j0 = cb * CV * kLanes, cvs = std::min<int64_t>(CV, nv - cb * CV);
      int64_t r = 0;
      for (; r + 4 <= n; r += 4) {
        if (cvs == CV)
          block<U, 4, CV>(src + r * ld, m, dst + r * ld, K, ld, j0);
        else
          for (int64_t c = 0; c < cvs; ++c)
            block<U, 4, 1>(src + r * ld, m, dst + r * ld, K, ld, j0 + c * kLanes);
      }
      for (; r < n; ++r) {
        if (cvs == CV)
          block<U, 1, CV>(src + r * ld, m, dst + r * ld, K, ld, j0);
        else
          for (int64_t c = 0; c < cvs; ++c)
            block<U, 1, 1>(src + r * ld, m, dst + r * ld, K, ld, j0 + c * kLanes);
      }
    }
  };
  if (n * K * ld >= kParallelWork && blocks > 1)
    pfor(0, blocks, 1, body);
  else
    body(0, blocks);
}

std::vector<int64_t> row_offsets(const RnnShape& s, const int64_t* bs) {
  std::vector<int64_t> off(s.T + 1, 0);
  for (int64_t t = 0; t < s.T; ++t) off[t + 1] = off[t] + bs[t];
  return off;
}

// One row of T into a padded row of U (zeros past H).
template <typename T, typename U>
void load_row(const T* src, U* dst, int64_t H, int64_t ld) {
  for (int64_t j = 0; j < H; ++j) dst[j] = load(src + j);
  for (int64_t j = H; j < ld; ++j) dst[j] = U(0);
}

// Direction d of the forward.
template <typename T>
void forward_dir(const RnnFwdParams& p, int64_t d, const ParallelFor& pfor) {
  using U = acc_t<T>;
  const RnnShape& s = p.s;
  const int64_t H = s.H, B = s.B, X = s.row_width(), ld = round_up(H, kLanes);
  const bool reverse = s.reversed(d);
  const T* w = static_cast<const T*>(p.w_hh) + d * H * H;
  std::vector<U> m(H * ld, U(0)), bias(ld, U(0)), cur(B * ld), next(B * ld);
  for (int64_t j = 0; j < H; ++j)
    for (int64_t k = 0; k < H; ++k) m[k * ld + j] = load(w + j * H + k);  // W_hh^T
  if (p.bias) load_row(static_cast<const T*>(p.bias) + d * H, bias.data(), H, ld);
  const T* h0 = static_cast<const T*>(p.h0) + d * B * H;
  const T* xw = static_cast<const T*>(p.xw) + d * H;  // rows X wide
  T* out = static_cast<T*>(p.out) + d * H;
  T* hn = static_cast<T*>(p.h_n) + d * B * H;
  const auto off = row_offsets(s, p.batch_sizes);
  if (!reverse)
    for (int64_t b = 0; b < B; ++b) load_row(h0 + b * H, cur.data() + b * ld, H, ld);
  for (int64_t i = 0; i < s.T; ++i) {
    const int64_t t = reverse ? s.T - 1 - i : i;
    const int64_t n = p.batch_sizes[t], later = t + 1 < s.T ? p.batch_sizes[t + 1] : 0;
    if (reverse)  // entries whose last step is t start here
      for (int64_t b = later; b < n; ++b) load_row(h0 + b * H, cur.data() + b * ld, H, ld);
    rows_times(cur.data(), m.data(), next.data(), n, H, ld, pfor);
    auto epilogue = [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const T* x = xw + (off[t] + b) * X;
        T* o = out + (off[t] + b) * X;
        U* st = next.data() + b * ld;
        const bool final = reverse ? t == 0 : b >= later;
        for (int64_t j = 0; j < H; j += kLanes) {
          const int64_t len = std::min(kLanes, H - j);
          Vec<U> v = vload(st + j) + load_part<T, U>(x + j, len) + vload(bias.data() + j);
          v = act_v<U>(v, s.relu);
          vstore(st + j, v);
          store_part<T, U>(o + j, v, len);
          if (final) store_part<T, U>(hn + b * H + j, v, len);
        }
      }
    };
    if (n * H >= kParallelWork / 16)
      pfor(0, n, 1, epilogue);
    else
      epilogue(0, n);
    std::swap(cur, next);
  }
}

// Direction d of the backward.
template <typename T>
void backward_dir(const RnnBwdParams& p, int64_t d, const ParallelFor& pfor) {
  using U = acc_t<T>;
  const RnnShape& s = p.s;
  const int64_t H = s.H, B = s.B, X = s.row_width(), ld = round_up(H, kLanes);
  const bool reverse = s.reversed(d);
  const T* w = static_cast<const T*>(p.w_hh) + d * H * H;
  std::vector<U> m(H * ld, U(0)), dh(B * ld, U(0)), dz(B * ld, U(0)), dh_next(B * ld);
  for (int64_t j = 0; j < H; ++j)
    for (int64_t k = 0; k < H; ++k) m[j * ld + k] = load(w + j * H + k);  // W_hh
  // Rows of go, out and gz are X wide; the [B, H] blocks are direction d's.
  const T* go = p.grad_out ? static_cast<const T*>(p.grad_out) + d * H : nullptr;
  const T* ghn = p.grad_hn ? static_cast<const T*>(p.grad_hn) + d * B * H : nullptr;
  const T* out = static_cast<const T*>(p.out) + d * H;
  T* gz = static_cast<T*>(p.grad_z) + d * H;
  T* gh0 = static_cast<T*>(p.grad_h0) + d * B * H;
  const auto off = row_offsets(s, p.batch_sizes);
  // The backward visits the steps in the opposite order of the forward.
  for (int64_t i = 0; i < s.T; ++i) {
    const int64_t t = reverse ? i : s.T - 1 - i;
    const int64_t n = p.batch_sizes[t], later = t + 1 < s.T ? p.batch_sizes[t + 1] : 0;
    // Entries whose forward ended at step t take grad_hn here.
    const int64_t first = reverse ? (t == 0 ? 0 : n) : later;
    for (int64_t b = first; b < n; ++b) {
      if (ghn)
        load_row(ghn + b * H, dh.data() + b * ld, H, ld);
      else
        std::fill(dh.data() + b * ld, dh.data() + (b + 1) * ld, U(0));
    }
    auto pointwise = [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t row = off[t] + b;
        U* dzb = dz.data() + b * ld;
        for (int64_t j = 0; j < H; j += kLanes) {
          const int64_t len = std::min(kLanes, H - j);
          Vec<U> g = vload(dh.data() + b * ld + j);
          if (go) g += load_part<T, U>(go + row * X + j, len);
          const Vec<U> v = g * act_grad_v<U>(load_part<T, U>(out + row * X + j, len), s.relu);
          vstore(dzb + j, v);
          store_part<T, U>(gz + row * X + j, v, len);
        }
      }
    };
    if (n * H >= kParallelWork / 16)
      pfor(0, n, 1, pointwise);
    else
      pointwise(0, n);
    rows_times(dz.data(), m.data(), dh_next.data(), n, H, ld, pfor);
    // Entries whose forward started at step t: dh is the gradient of h0.
    const int64_t from = reverse ? later : (t == 0 ? 0 : n);
    for (int64_t b = from; b < n; ++b)
      for (int64_t j = 0; j < H; ++j) store(gh0 + b * H + j, dh_next[b * ld + j]);
    std::swap(dh, dh_next);
  }
}

// Runs run(d, pfor) for each direction. Two directions whose steps are too small to split
// run side by side, each on one thread (a step's work is serial then, and the directions are
// independent); larger ones one after the other, each step in parallel.
template <typename Run>
void each_direction(const RnnShape& s, const ParallelFor& pfor, Run&& run) {
  if (s.dirs == 2 && s.B * s.H * round_up(s.H, kLanes) < kDirectionsSideBySide) {
    pfor(0, 2, 1, [&](int64_t d0, int64_t d1) {
      for (int64_t d = d0; d < d1; ++d) run(d, ParallelFor(serial_for));
    });
    return;
  }
  for (int64_t d = 0; d < s.dirs; ++d) run(d, pfor);
}

}  // namespace

void rnn_forward(const RnnFwdParams& p, const ParallelFor& pfor) {
  dispatch_cpu_types(p.s.dtype, [&](auto tag) {
    each_direction(p.s, pfor,
                   [&](int64_t d, const ParallelFor& f) { forward_dir<decltype(tag)>(p, d, f); });
  });
}

void rnn_backward(const RnnBwdParams& p, const ParallelFor& pfor) {
  dispatch_cpu_types(p.s.dtype, [&](auto tag) {
    each_direction(p.s, pfor,
                   [&](int64_t d, const ParallelFor& f) { backward_dir<decltype(tag)>(p, d, f); });
  });
}

}  // namespace FL_ISA_NS
}  // namespace cpu
}  // namespace fl
