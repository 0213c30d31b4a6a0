// The CPU max_pool2d kernels, torch-free, against a direct reference written from torch's
// definition: random configurations, both layouts, float/double/bfloat16, NaN and -inf,
// serial and with a std::thread parallel_for.
#include <cmath>
#include <cstdio>
#include <random>
#include <thread>
#include <vector>

#include "fastlayers/max_pool2d.h"
#include "tests/test_util.h"

using namespace fl;

namespace {

using fl_test::failures;
using fl_test::thread_for;

int64_t out_size(int64_t in, int64_t k, int64_t p, int64_t s, int64_t d, bool ceil) {
  int64_t span = in + 2 * p - d * (k - 1) - 1 + (ceil ? s - 1 : 0);
  int64_t o = span / s + 1;
  if (ceil && (o - 1) * s >= in + p) --o;
  return o;
}

template <typename T>
float get(const T& v) {
  return float(v);
}
template <>
float get<bf16>(const bf16& v) {
  return to_float(v);
}
template <typename T>
T put(float v) {
  return T(v);
}
template <>
bf16 put<bf16>(float v) {
  return to_bf16(v);
}

bool same(float a, float b) { return (std::isnan(a) && std::isnan(b)) || a == b; }

template <typename T>
void run_case(std::mt19937& rng, bool channels_last, const ParallelFor& pfor) {
  std::uniform_int_distribution<int> small(1, 4), dim(1, 13);
  MaxPool2dShape s{};
  s.N = small(rng);
  s.C = channels_last ? std::uniform_int_distribution<int>(1, 70)(rng) : small(rng);
  s.H = dim(rng);
  s.W = dim(rng);
  s.kh = small(rng);
  s.kw = small(rng);
  s.sh = small(rng);
  s.sw = small(rng);
  s.dh = std::uniform_int_distribution<int>(1, 2)(rng);
  s.dw = std::uniform_int_distribution<int>(1, 2)(rng);
  s.ph = std::uniform_int_distribution<int>(0, int(s.kh / 2))(rng);
  s.pw = std::uniform_int_distribution<int>(0, int(s.kw / 2))(rng);
  const bool ceil = rng() % 2;
  s.OH = out_size(s.H, s.kh, s.ph, s.sh, s.dh, ceil);
  s.OW = out_size(s.W, s.kw, s.pw, s.sw, s.dw, ceil);
  if (s.OH < 1 || s.OW < 1) return;
  s.channels_last = channels_last;
  s.dtype = std::is_same<T, float>::value    ? DType::kFloat32
            : std::is_same<T, double>::value ? DType::kFloat64
                                             : DType::kBFloat16;
  const int64_t in_n = s.N * s.C * s.H * s.W, out_n = s.N * s.C * s.OH * s.OW;
  std::vector<T> in(in_n), out(out_n, put<T>(NAN)), out2(out_n, put<T>(NAN));
  std::vector<int64_t> idx(out_n, -7);
  std::normal_distribution<float> normal;
  for (auto& v : in) {
    const float u = normal(rng);
    v = put<T>(u > 2.2f ? NAN : u < -2.2f ? -INFINITY : u);
  }
  // Offsets of (n, c, h, w) in either layout.
  auto at_in = [&](int64_t n, int64_t c, int64_t h, int64_t w) {
    return channels_last ? ((n * s.H + h) * s.W + w) * s.C + c
                         : ((n * s.C + c) * s.H + h) * s.W + w;
  };
  auto at_out = [&](int64_t n, int64_t c, int64_t h, int64_t w) {
    return channels_last ? ((n * s.OH + h) * s.OW + w) * s.C + c
                         : ((n * s.C + c) * s.OH + h) * s.OW + w;
  };
  cpu::max_pool2d_forward({s, in.data(), out.data(), idx.data()}, pfor);
  cpu::max_pool2d_forward({s, in.data(), out2.data(), nullptr}, pfor);
  std::vector<double> grad_ref(in_n, 0.0);
  std::vector<T> go(out_n), gi(in_n, put<T>(NAN));
  for (auto& v : go) v = put<T>(normal(rng));
  for (int64_t n = 0; n < s.N; ++n)
    for (int64_t c = 0; c < s.C; ++c)
      for (int64_t oh = 0; oh < s.OH; ++oh)
        for (int64_t ow = 0; ow < s.OW; ++ow) {
          // torch's definition: scan valid taps row-major; NaN or strictly greater wins.
          int64_t h0 = oh * s.sh - s.ph, w0 = ow * s.sw - s.pw;
          const int64_t h1 = std::min(h0 + (s.kh - 1) * s.dh + 1, s.H);
          const int64_t w1 = std::min(w0 + (s.kw - 1) * s.dw + 1, s.W);
          while (h0 < 0) h0 += s.dh;
          while (w0 < 0) w0 += s.dw;
          float m = -INFINITY;
          int64_t mi = h0 * s.W + w0;
          for (int64_t h = h0; h < h1; h += s.dh)
            for (int64_t w = w0; w < w1; w += s.dw) {
              const float v = get(in[at_in(n, c, h, w)]);
              if (v > m || std::isnan(v)) {
                m = v;
                mi = h * s.W + w;
              }
            }
          const int64_t o = at_out(n, c, oh, ow);
          EXPECT(same(get(out[o]), m), "value at %lld: %f vs %f", (long long)o, get(out[o]), m);
          EXPECT(same(get(out2[o]), m), "values-only at %lld", (long long)o);
          EXPECT(idx[o] == mi, "index at %lld: %lld vs %lld", (long long)o, (long long)idx[o],
                 (long long)mi);
          // A window with no valid tap returns torch's index of its first (invalid) tap,
          // which may lie outside the plane; backward ignores those, as torch's CPU does not
          // write them either.
          if (mi < s.H * s.W) grad_ref[at_in(n, c, mi / s.W, mi % s.W)] += get(go[o]);
        }
  cpu::max_pool2d_backward({s, go.data(), idx.data(), gi.data()}, pfor);
  const double tol = std::is_same<T, bf16>::value ? 1e-2 : 1e-5;
  for (int64_t i = 0; i < in_n; ++i)
    EXPECT(std::fabs(get(gi[i]) - grad_ref[i]) <= tol * (1 + std::fabs(grad_ref[i])),
           "grad at %lld: %f vs %f", (long long)i, get(gi[i]), grad_ref[i]);
}

}  // namespace

int main() {
  std::mt19937 rng(7);
  for (int rep = 0; rep < 60; ++rep) {
    for (bool cl : {false, true}) {
      const ParallelFor pfor = rep % 2 ? ParallelFor(thread_for) : ParallelFor(serial_for);
      run_case<float>(rng, cl, pfor);
      run_case<double>(rng, cl, pfor);
      run_case<bf16>(rng, cl, pfor);
    }
  }
  std::printf("max_pool2d CPU kernels (%s): %s\n", cpu::max_pool2d_isa(),
              failures ? "FAILED" : "passed");
  return failures ? 1 : 0;
}
