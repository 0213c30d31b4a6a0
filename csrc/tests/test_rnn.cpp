// The CPU RNN recurrence against a float64 reference (forward), and its backward against
// central differences of the forward in float64: packed sequences of mixed lengths, both
// directions, tanh and relu, hidden sizes around the vector width, three dtypes.
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "fastlayers/rnn.h"
#include "test_util.h"

using fl_test::failures;

namespace {

struct Case {
  std::vector<int64_t> batch_sizes;
  int64_t H;
  bool relu, reverse;
};

int64_t rows_of(const Case& c) {
  int64_t n = 0;
  for (auto b : c.batch_sizes) n += b;
  return n;
}

// Plain float64 recurrence (the header's definition).
void reference(const Case& c, const std::vector<double>& xw, const std::vector<double>& h0,
               const std::vector<double>& w, const std::vector<double>& bias,
               std::vector<double>& out, std::vector<double>& hn) {
  const int64_t T = c.batch_sizes.size(), B = c.batch_sizes[0], H = c.H;
  std::vector<int64_t> off(T + 1, 0);
  for (int64_t t = 0; t < T; ++t) off[t + 1] = off[t] + c.batch_sizes[t];
  out.assign(off[T] * H, 0);
  hn.assign(B * H, 0);
  std::vector<double> h = h0;
  for (int64_t i = 0; i < T; ++i) {
    const int64_t t = c.reverse ? T - 1 - i : i;
    const int64_t n = c.batch_sizes[t], later = t + 1 < T ? c.batch_sizes[t + 1] : 0;
    if (c.reverse)
      for (int64_t b = later; b < n; ++b)
        for (int64_t j = 0; j < H; ++j) h[b * H + j] = h0[b * H + j];
    std::vector<double> next(n * H);
    for (int64_t b = 0; b < n; ++b)
      for (int64_t j = 0; j < H; ++j) {
        double z = xw[(off[t] + b) * H + j] + bias[j];
        for (int64_t k = 0; k < H; ++k) z += w[j * H + k] * h[b * H + k];
        next[b * H + j] = c.relu ? (z > 0 ? z : 0) : std::tanh(z);
      }
    for (int64_t b = 0; b < n; ++b)
      for (int64_t j = 0; j < H; ++j) {
        h[b * H + j] = next[b * H + j];
        out[(off[t] + b) * H + j] = next[b * H + j];
        if (c.reverse ? t == 0 : b >= later) hn[b * H + j] = next[b * H + j];
      }
  }
}

template <typename T>
std::vector<T> cast(const std::vector<double>& v) {
  std::vector<T> o(v.size());
  for (size_t i = 0; i < v.size(); ++i) fl::store(&o[i], static_cast<fl::acc_t<T>>(v[i]));
  return o;
}

template <typename T>
std::vector<double> widen(const std::vector<T>& v) {
  std::vector<double> o(v.size());
  for (size_t i = 0; i < v.size(); ++i) o[i] = fl::load(&v[i]);
  return o;
}

template <typename T>
constexpr fl::DType dtype_of() {
  if constexpr (std::is_same_v<T, float>) return fl::DType::kFloat32;
  if constexpr (std::is_same_v<T, double>) return fl::DType::kFloat64;
  return fl::DType::kBFloat16;
}

template <typename T>
void run_forward(const Case& c, const std::vector<double>& xw, const std::vector<double>& h0,
                 const std::vector<double>& w, const std::vector<double>& bias,
                 std::vector<double>& out, std::vector<double>& hn) {
  const int64_t T_ = c.batch_sizes.size(), B = c.batch_sizes[0], rows = rows_of(c);
  auto xs = cast<T>(xw), hs = cast<T>(h0), ws = cast<T>(w), bs = cast<T>(bias);
  std::vector<T> o(rows * c.H), n(B * c.H);
  fl::RnnFwdParams p{{T_, B, c.H, rows, c.relu, c.reverse, dtype_of<T>()},
                     c.batch_sizes.data(),
                     xs.data(),
                     hs.data(),
                     ws.data(),
                     bs.data(),
                     o.data(),
                     n.data()};
  fl::cpu::rnn_forward(p, fl_test::thread_for);
  out = widen(o);
  hn = widen(n);
}

double max_err(const std::vector<double>& a, const std::vector<double>& b) {
  double e = 0;
  for (size_t i = 0; i < a.size(); ++i) e = std::max(e, std::fabs(a[i] - b[i]));
  return a.size() == b.size() ? e : 1e30;
}

std::vector<double> randn(std::mt19937& g, int64_t n, double scale) {
  std::normal_distribution<double> d(0, scale);
  std::vector<double> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

template <typename T>
void check(const Case& c, double tol, const char* name) {
  std::mt19937 g(c.H * 7 + c.batch_sizes.size());
  const int64_t B = c.batch_sizes[0], H = c.H, rows = rows_of(c);
  const auto xw = randn(g, rows * H, 1.0), h0 = randn(g, B * H, 1.0);
  const auto w = randn(g, H * H, 1.0 / std::sqrt(double(H))), bias = randn(g, H, 0.5);
  std::vector<double> out, hn, rout, rhn;
  reference(c, widen(cast<T>(xw)), widen(cast<T>(h0)), widen(cast<T>(w)), widen(cast<T>(bias)),
            rout, rhn);
  run_forward<T>(c, xw, h0, w, bias, out, hn);
  EXPECT(max_err(out, rout) <= tol && max_err(hn, rhn) <= tol,
         "%s forward H=%lld T=%zu relu=%d reverse=%d: err %g / %g", name, (long long)H,
         c.batch_sizes.size(), c.relu, c.reverse, max_err(out, rout), max_err(hn, rhn));
  if constexpr (!std::is_same_v<T, double>) return;
  // Backward: <dL/dxw, v> and <dL/dh0, u> against central differences of L(xw, h0) =
  // <grad_out, out> + <grad_hn, h_n>.
  const auto go = randn(g, rows * H, 1.0), ghn = randn(g, B * H, 1.0);
  const auto v = randn(g, rows * H, 1.0), u = randn(g, B * H, 1.0);
  std::vector<double> gz(rows * H), gh0(B * H);
  const int64_t T_ = c.batch_sizes.size();
  fl::RnnBwdParams p{{T_, B, H, rows, c.relu, c.reverse, fl::DType::kFloat64},
                     c.batch_sizes.data(),
                     go.data(),
                     ghn.data(),
                     out.data(),
                     w.data(),
                     gz.data(),
                     gh0.data()};
  fl::cpu::rnn_backward(p, fl_test::thread_for);
  auto loss = [&](const std::vector<double>& x, const std::vector<double>& h) {
    std::vector<double> o, n;
    reference(c, x, h, w, bias, o, n);
    double l = 0;
    for (size_t i = 0; i < o.size(); ++i) l += go[i] * o[i];
    for (size_t i = 0; i < n.size(); ++i) l += ghn[i] * n[i];
    return l;
  };
  const double eps = 1e-6;
  auto shifted = [](const std::vector<double>& a, const std::vector<double>& d, double s) {
    std::vector<double> r = a;
    for (size_t i = 0; i < r.size(); ++i) r[i] += s * d[i];
    return r;
  };
  const double fd_x = (loss(shifted(xw, v, eps), h0) - loss(shifted(xw, v, -eps), h0)) / (2 * eps);
  const double fd_h = (loss(xw, shifted(h0, u, eps)) - loss(xw, shifted(h0, u, -eps))) / (2 * eps);
  double an_x = 0, an_h = 0;
  for (size_t i = 0; i < v.size(); ++i) an_x += gz[i] * v[i];
  for (size_t i = 0; i < u.size(); ++i) an_h += gh0[i] * u[i];
  const double sx = 1e-6 * std::max(1.0, std::fabs(fd_x)),
               sh = 1e-6 * std::max(1.0, std::fabs(fd_h));
  EXPECT(std::fabs(an_x - fd_x) <= sx && std::fabs(an_h - fd_h) <= sh,
         "backward H=%lld relu=%d reverse=%d: <gz, v> %.10g vs %.10g, <gh0, u> %.10g vs %.10g",
         (long long)H, c.relu, c.reverse, an_x, fd_x, an_h, fd_h);
}

// W = 0, bias = 0: the output is act(xw); tanh within 2 ulp of std::tanh in float.
void check_tanh() {
  const int64_t H = 1000;
  std::vector<float> x(H), w(H * H, 0.f), h0(H, 0.f), out(H), hn(H);
  for (int64_t j = 0; j < H; ++j) x[j] = -12.f + 24.f * float(j) / float(H - 1);
  x[1] = std::nanf("");
  x[2] = INFINITY;
  x[3] = -INFINITY;
  x[4] = 1e-7f;
  const std::vector<int64_t> bs = {1};
  fl::RnnFwdParams p{{1, 1, H, 1, false, false, fl::DType::kFloat32},
                     bs.data(),
                     x.data(),
                     h0.data(),
                     w.data(),
                     nullptr,
                     out.data(),
                     hn.data()};
  fl::cpu::rnn_forward(p, fl_test::thread_for);
  float worst = 0;
  for (int64_t j = 0; j < H; ++j) {
    const float want = std::tanh(x[j]);
    if (std::isnan(want)) {
      EXPECT(std::isnan(out[j]), "tanh(nan) = %g", out[j]);
      continue;
    }
    const float ulp = std::fabs(std::nextafter(want, 2.f) - want);
    worst = std::max(worst, std::fabs(out[j] - want) / ulp);
  }
  EXPECT(worst <= 2.f, "tanh: %g ulp from std::tanh", worst);
}

}  // namespace

int main() {
  check_tanh();
  const std::vector<Case> cases = {
      {{3, 3, 3, 3}, 16, false, false},
      {{3, 3, 3, 3}, 16, true, true},
      {{4, 3, 3, 1, 1}, 7, false, false},
      {{4, 3, 3, 1, 1}, 7, false, true},
      {{5, 5, 2}, 33, true, false},
      {{6, 4, 4, 2, 1}, 70, false, true},
      {{1}, 1, false, false},
      {{2, 1}, 1, true, true},
  };
  for (const auto& c : cases) {
    check<double>(c, 1e-12, "float64");
    check<float>(c, 2e-5, "float32");
    check<fl::bf16>(c, 3e-2, "bfloat16");
  }
  if (failures) std::printf("%d failures\n", failures);
  return failures ? 1 : 0;
}
