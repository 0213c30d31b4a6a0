// The CPU conv2d kernels, torch-free, against a direct float64 loop over the definition in
// fastlayers/conv2d.h: forward, data, weight and bias gradients, NCHW and NHWC, groups,
// depthwise with channel multipliers, strides, dilations, asymmetric padding, float32,
// float64 and bfloat16. The GEMM stage is a plain loop (the extension uses ATen's).
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "fastlayers/conv2d.h"
#include "tests/test_util.h"

using namespace fl;

namespace {

using fl_test::failures;
using fl_test::thread_for;

std::mt19937 rng(11);

template <typename A>
void naive_gemm_t(const GemmCall& g) {
  const A* a = static_cast<const A*>(g.a);
  const A* b = static_cast<const A*>(g.b);
  A* c = static_cast<A*>(g.c);
  for (int64_t i = 0; i < g.M; ++i)
    for (int64_t j = 0; j < g.N; ++j) {
      double acc = g.accumulate ? double(c[i * g.ldc + j]) : 0.0;
      for (int64_t k = 0; k < g.K; ++k)
        acc += double(g.trans_a ? a[k * g.lda + i] : a[i * g.lda + k]) *
               double(g.trans_b ? b[j * g.ldb + k] : b[k * g.ldb + j]);
      c[i * g.ldc + j] = A(acc);
    }
}

void naive_gemm(const GemmCall& g) {
  if (g.dtype == DType::kFloat64)
    naive_gemm_t<double>(g);
  else
    naive_gemm_t<float>(g);
}

// Storage of one element type, with conversion from and to double.
template <typename T>
double to_d(T v) {
  if constexpr (std::is_same_v<T, bf16>)
    return to_float(v);
  else
    return double(v);
}
template <typename T>
T from_d(double v) {
  if constexpr (std::is_same_v<T, bf16>)
    return to_bf16(float(v));
  else
    return T(v);
}

struct Case {
  int64_t N, C, H, W, K, R, S, sh, sw, pt, pb, pl, pr, dh, dw, groups;
};

// Index of (n, c, h, w) in NCHW or NHWC.
int64_t at4(bool cl, int64_t C, int64_t H, int64_t W, int64_t n, int64_t c, int64_t h, int64_t w) {
  return cl ? ((n * H + h) * W + w) * C + c : ((n * C + c) * H + h) * W + w;
}

template <typename T>
void check(const Case& c, bool cl, DType dt, double tol) {
  Conv2dShape s{c.N,  c.C,  c.H,  c.W,  c.K,  c.R,  c.S,      0,  0,
                c.sh, c.sw, c.pt, c.pl, c.dh, c.dw, c.groups, cl, dt};
  s.P = (c.H + c.pt + c.pb - c.dh * (c.R - 1) - 1) / c.sh + 1;
  s.Q = (c.W + c.pl + c.pr - c.dw * (c.S - 1) - 1) / c.sw + 1;
  const int64_t Cg = c.C / c.groups, Kg = c.K / c.groups;
  std::normal_distribution<double> nd;
  auto rnd = [&](int64_t n) {
    std::vector<T> v(static_cast<size_t>(n));
    for (auto& e : v) e = from_d<T>(nd(rng));
    return v;
  };
  const auto x = rnd(c.N * c.C * c.H * c.W), w = rnd(c.K * Cg * c.R * c.S), b = rnd(c.K),
             gy = rnd(c.N * c.K * s.P * s.Q);
  // Reference in float64 from the stored (rounded) values.
  std::vector<double> y_ref(gy.size(), 0.0), gx_ref(x.size(), 0.0), gw_ref(w.size(), 0.0),
      gb_ref(b.size(), 0.0);
  for (int64_t n = 0; n < c.N; ++n)
    for (int64_t k = 0; k < c.K; ++k)
      for (int64_t p = 0; p < s.P; ++p)
        for (int64_t q = 0; q < s.Q; ++q) {
          const int64_t yi = at4(cl, c.K, s.P, s.Q, n, k, p, q);
          double acc = to_d(b[size_t(k)]);
          const double g = to_d(gy[size_t(yi)]);
          gb_ref[size_t(k)] += g;
          for (int64_t ci = 0; ci < Cg; ++ci)
            for (int64_t r = 0; r < c.R; ++r)
              for (int64_t ss = 0; ss < c.S; ++ss) {
                const int64_t h = p * c.sh - c.pt + r * c.dh, ww = q * c.sw - c.pl + ss * c.dw;
                if (h < 0 || h >= c.H || ww < 0 || ww >= c.W) continue;
                const int64_t xi = at4(cl, c.C, c.H, c.W, n, k / Kg * Cg + ci, h, ww);
                const int64_t wi = ((k * Cg + ci) * c.R + r) * c.S + ss;
                acc += to_d(x[size_t(xi)]) * to_d(w[size_t(wi)]);
                gx_ref[size_t(xi)] += g * to_d(w[size_t(wi)]);
                gw_ref[size_t(wi)] += g * to_d(x[size_t(xi)]);
              }
          y_ref[size_t(yi)] = acc;
        }
  std::vector<T> y(gy.size(), from_d<T>(NAN)), gx(x.size(), from_d<T>(NAN)),
      gw(w.size(), from_d<T>(NAN)), gb(b.size(), from_d<T>(NAN));
  // The forward sizes its tasks by the workers the loop reports: one, and three.
  std::vector<T> y3(gy.size(), from_d<T>(NAN));
  cpu::conv2d_forward(Conv2dFwdParams{s, x.data(), w.data(), b.data(), y.data()},
                      ParallelFor(thread_for, 1), naive_gemm);
  cpu::conv2d_forward(Conv2dFwdParams{s, x.data(), w.data(), b.data(), y3.data()},
                      ParallelFor(thread_for, 3), naive_gemm);
  cpu::conv2d_backward(
      Conv2dBwdParams{s, gy.data(), x.data(), w.data(), gx.data(), gw.data(), gb.data()},
      thread_for, naive_gemm);
  // NCHW depthwise backward runs through NHWC copies below a size, in place above it: both.
  const bool dw_nchw = !cl && c.groups == c.C && c.C > 1;
  std::vector<T> gx2(x.size(), from_d<T>(NAN)), gw2(w.size(), from_d<T>(NAN));
  if (dw_nchw) {
    setenv("FASTLAYERS_DEPTHWISE_COPY_BYTES", "0", 1);
    cpu::conv2d_backward(
        Conv2dBwdParams{s, gy.data(), x.data(), w.data(), gx2.data(), gw2.data(), nullptr},
        thread_for, naive_gemm);
    unsetenv("FASTLAYERS_DEPTHWISE_COPY_BYTES");
  }
  auto cmp = [&](const std::vector<T>& got, const std::vector<double>& ref, const char* what) {
    double worst = 0;
    for (size_t i = 0; i < ref.size(); ++i) {
      const double e = std::fabs(to_d(got[i]) - ref[i]) / (1.0 + std::fabs(ref[i]));
      if (!(e <= worst)) worst = std::isnan(e) ? INFINITY : e;
    }
    EXPECT(worst <= tol,
           "%s N%ld C%ld %ldx%ld K%ld %ldx%ld s%ld,%ld p%ld,%ld,%ld,%ld d%ld,%ld g%ld %s dtype%d: "
           "error %g > %g",
           what, long(c.N), long(c.C), long(c.H), long(c.W), long(c.K), long(c.R), long(c.S),
           long(c.sh), long(c.sw), long(c.pt), long(c.pb), long(c.pl), long(c.pr), long(c.dh),
           long(c.dw), long(c.groups), cl ? "nhwc" : "nchw", int(dt), worst, tol);
  };
  cmp(y, y_ref, "forward");
  cmp(y3, y_ref, "forward, 3 workers");
  cmp(gx, gx_ref, "grad_input");
  cmp(gw, gw_ref, "grad_weight");
  if (dw_nchw) {
    cmp(gx2, gx_ref, "grad_input (in place)");
    cmp(gw2, gw_ref, "grad_weight (in place)");
  }
  cmp(gb, gb_ref, "grad_bias");
}

}  // namespace

int main() {
  const Case cases[] = {
      {2, 3, 9, 11, 5, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1},  // padded 3x3, odd channels
      {1, 4, 8, 7, 6, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1},   // pointwise
      {1, 4, 8, 7, 6, 1, 1, 2, 1, 0, 0, 0, 0, 1, 1, 2},   // strided 1x1, groups
      {2, 4, 10, 9, 4, 3, 2, 2, 3, 0, 1, 2, 0, 2, 1, 2},  // asymmetric padding, dilation
      {3, 6, 7, 8, 6, 3, 3, 1, 2, 1, 1, 1, 1, 1, 2, 6},   // depthwise
      {2, 3, 7, 6, 9, 5, 5, 2, 1, 2, 2, 1, 3, 1, 1, 3},   // depthwise, multiplier 3
      {1, 5, 6, 13, 7, 1, 7, 1, 1, 0, 0, 3, 3, 1, 1, 1},  // 1x7
      {2, 8, 5, 5, 8, 3, 3, 3, 3, 1, 1, 1, 1, 1, 1, 4},   // stride 3, groups 4
      {1, 2, 3, 3, 2, 3, 3, 1, 1, 0, 0, 0, 0, 1, 1, 1},   // a single output pixel
      // Depthwise wide enough for the vector paths (rows of >= 16 outputs, >= 16 channels)
      // and their tails.
      {2, 20, 6, 41, 20, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 20},
      {1, 18, 7, 45, 18, 3, 5, 2, 2, 1, 0, 2, 1, 1, 2, 18},
      {1, 17, 5, 38, 34, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 17},
      {1, 16, 6, 80, 16, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 16},
      {1, 16, 6, 70, 16, 5, 5, 1, 1, 2, 2, 2, 2, 1, 1, 16},
      // Depthwise NCHW at stride 1 with Q = W and narrow rows (the flattened-plane kernel):
      // rows shorter and longer than a vector, kernel sizes with and without a fixed-size
      // instantiation, dilation, asymmetric padding, P != H, channel multipliers.
      {2, 5, 7, 7, 5, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 5},
      {1, 4, 14, 14, 8, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 4},
      {2, 3, 9, 13, 3, 5, 5, 1, 1, 2, 2, 2, 2, 1, 1, 3},
      {1, 3, 10, 9, 3, 3, 3, 1, 1, 2, 2, 2, 2, 2, 2, 3},
      {1, 3, 6, 5, 3, 3, 3, 1, 1, 0, 2, 0, 2, 1, 1, 3},
      {1, 3, 6, 11, 6, 3, 3, 1, 1, 2, 0, 2, 0, 1, 1, 3},
      {1, 2, 5, 6, 2, 3, 3, 1, 1, 3, 0, 1, 1, 1, 1, 2},
      {1, 4, 5, 13, 4, 1, 7, 1, 1, 0, 0, 3, 3, 1, 1, 4},
      {2, 3, 6, 6, 3, 3, 1, 1, 1, 1, 1, 0, 0, 1, 1, 3},
      {1, 3, 5, 1, 3, 3, 1, 1, 1, 1, 1, 0, 0, 1, 1, 3},
      {1, 2, 40, 3, 2, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 2},
      {3, 2, 9, 31, 2, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 2},
      {1, 3, 16, 16, 3, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 3},
      {2, 3, 9, 40, 3, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 3},
      {1, 2, 11, 48, 4, 5, 5, 1, 1, 2, 2, 2, 2, 1, 1, 2},
      // Depthwise NCHW, channels as lanes (small planes, and strides > 1): a channel tail
      // (37 = 2 x 16 + 5), a multiplier with a tail, planes of exactly 16 inputs and outputs,
      // a kernel size without a fixed-size instantiation, asymmetric padding with dilation,
      // unequal strides, input rows and columns past the last ones read.
      {2, 37, 7, 7, 37, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 37},
      {1, 20, 14, 14, 40, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 20},
      {2, 16, 4, 4, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 16},
      {1, 19, 9, 8, 19, 7, 7, 1, 1, 3, 3, 3, 3, 1, 1, 19},
      {1, 33, 11, 10, 33, 3, 3, 2, 2, 0, 1, 2, 0, 2, 1, 33},
      {1, 17, 20, 20, 17, 3, 3, 3, 2, 1, 1, 1, 1, 1, 1, 17},
      {1, 16, 10, 11, 16, 3, 3, 2, 2, 0, 0, 0, 0, 1, 1, 16},
      // Depthwise NHWC on narrow rows at unit stride (all columns in groups, edges checked).
      {2, 32, 7, 7, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 32},
      {1, 20, 5, 14, 20, 5, 5, 1, 1, 2, 2, 2, 2, 1, 1, 20},
      {1, 16, 6, 6, 16, 3, 3, 1, 1, 0, 2, 0, 2, 1, 1, 16},
      {1, 16, 4, 2, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 16},
      {1, 16, 3, 9, 16, 3, 3, 1, 1, 1, 1, 2, 0, 1, 1, 16},
      // Depthwise whose dilated taps span more than the padded row: one output column, no
      // tap of it in the row's inner range (Q = 1, S = 7, dilation 2 on W = 7).
      {3, 17, 23, 7, 17, 5, 7, 1, 1, 1, 1, 3, 3, 2, 2, 17},
  };
  for (const Case& c : cases)
    for (bool cl : {false, true}) {
      check<float>(c, cl, DType::kFloat32, 2e-5);
      check<double>(c, cl, DType::kFloat64, 1e-12);
      check<bf16>(c, cl, DType::kBFloat16, 3e-2);
    }
  // Large images: NCHW row blocks (the im2col buffer of one image exceeds the budget).
  check<float>({1, 64, 300, 300, 2, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1}, false, DType::kFloat32, 2e-5);
  // Depthwise NHWC past the prefetch threshold (input and output over 8 MiB), at unit stride
  // (output rows in pairs) and stride 2. A weight gradient element sums 2 x 97 x 96 products
  // here (in float32 per output row, in double over the rows), hence 5e-5 for float32.
  for (const Case& c : {Case{2, 64, 97, 96, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 64},
                        Case{2, 48, 141, 140, 48, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 48}}) {
    check<double>(c, true, DType::kFloat64, 1e-12);
    check<float>(c, true, DType::kFloat32, 5e-5);
  }
  std::printf("%s (%d failures)\n", failures ? "FAILED" : "ok", failures);
  return failures ? 1 : 0;
}
