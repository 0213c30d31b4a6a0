// The CPU int8 GEMM, torch-free, bit-exact against an int64 reference on random int8 data
// that includes -128 and 127, over every shape of {1, 7, 16, 33, 64, 257} cubed plus some
// larger ones, with a row stride beyond K; the fused epilogue against a double computation
// of the same formula; the per-row quantiser. ctest runs it once per instruction-set cap
// (FASTLAYERS_CPU_ISA), so the VNNI, AVX2 and portable paths are each checked where the
// CPU has them.
#include <cmath>
#include <cstdio>
#include <random>
#include <thread>
#include <vector>

#include "fastlayers/int8_gemm.h"
#include "tests/test_util.h"

using namespace fl;

namespace {

using fl_test::failures;
using fl_test::thread_for;

std::mt19937 rng(7);

std::vector<int8_t> random_int8(int64_t n) {
  std::uniform_int_distribution<int> d(-128, 127);
  std::vector<int8_t> v(static_cast<size_t>(n));
  for (auto& x : v) x = int8_t(d(rng));
  if (n > 1) {
    v[0] = -128;
    v[size_t(n - 1)] = 127;
  }
  return v;
}

void check_gemm(int64_t M, int64_t N, int64_t K, int64_t pad, bool extreme) {
  const int64_t lda = K + pad, ldb = K + 2 * pad;
  std::vector<int8_t> a = random_int8(M * lda), b = random_int8(N * ldb);
  if (extreme) {  // every product -128 * -128: the largest sums
    std::fill(a.begin(), a.end(), int8_t(-128));
    std::fill(b.begin(), b.end(), int8_t(-128));
  }
  std::vector<int32_t> c(size_t(M * N), 12345);
  Int8GemmParams p{M,       N,       K,       a.data(),        lda,     b.data(), ldb,
                   nullptr, nullptr, nullptr, DType::kFloat32, c.data()};
  cpu::int8_gemm(p, thread_for);
  int bad = 0;
  for (int64_t m = 0; m < M && bad < 3; ++m)
    for (int64_t n = 0; n < N && bad < 3; ++n) {
      int64_t ref = 0;
      for (int64_t k = 0; k < K; ++k) ref += int64_t(a[m * lda + k]) * b[n * ldb + k];
      if (ref != c[m * N + n]) {
        ++bad;
        EXPECT(false, "int8_gemm M%lld N%lld K%lld [%lld, %lld]: %d != %lld", (long long)M,
               (long long)N, (long long)K, (long long)m, (long long)n, c[m * N + n],
               (long long)ref);
      }
    }
}

void check_epilogue(DType out) {
  const int64_t M = 19, N = 37, K = 70;
  std::vector<int8_t> a = random_int8(M * K), b = random_int8(N * K);
  std::vector<float> as(M), bs(N), bias(N);
  std::uniform_real_distribution<float> u(0.001f, 0.05f);
  for (auto& x : as) x = u(rng);
  for (auto& x : bs) x = u(rng);
  for (auto& x : bias) x = u(rng) * 100 - 2.5f;
  std::vector<float> of(size_t(M * N));
  std::vector<bf16> ob(size_t(M * N));
  std::vector<_Float16> oh(size_t(M * N));
  void* o = out == DType::kBFloat16  ? static_cast<void*>(ob.data())
            : out == DType::kFloat16 ? static_cast<void*>(oh.data())
                                     : of.data();
  Int8GemmParams p{M, N, K, a.data(), K, b.data(), K, as.data(), bs.data(), bias.data(), out, o};
  cpu::int8_gemm(p, serial_for);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      int64_t c = 0;
      for (int64_t k = 0; k < K; ++k) c += int64_t(a[m * K + k]) * b[n * K + k];
      const double ref = double(c) * as[m] * bs[n] + bias[n];
      const double got = out == DType::kBFloat16  ? to_float(ob[m * N + n])
                         : out == DType::kFloat16 ? double(oh[m * N + n])
                                                  : of[m * N + n];
      const double rel = out == DType::kBFloat16 ? 4e-3 : out == DType::kFloat16 ? 5e-4 : 2e-7;
      const double tol = rel * std::fabs(ref) + 1e-6;
      EXPECT(std::fabs(got - ref) <= tol, "epilogue [%lld, %lld]: %g vs %g", (long long)m,
             (long long)n, got, ref);
    }
}

void check_quantize() {
  const int64_t rows = 5, n = 33;
  std::vector<float> x(static_cast<size_t>(rows * n));
  std::normal_distribution<float> g;
  for (auto& v : x) v = g(rng);
  for (int64_t j = 0; j < n; ++j) x[size_t(3 * n + j)] = 0.f;  // an all-zero row
  std::vector<int8_t> q(static_cast<size_t>(rows * n));
  std::vector<float> scale(rows);
  QuantizeRowsParams p{rows, n, DType::kFloat32, x.data(), n, q.data(), scale.data()};
  cpu::quantize_rows(p, thread_for);
  for (int64_t r = 0; r < rows; ++r) {
    float amax = 0;
    for (int64_t j = 0; j < n; ++j) amax = std::max(amax, std::fabs(x[size_t(r * n + j)]));
    const float s = amax == 0 ? 1.f : amax / 127.f;
    EXPECT(scale[r] == s, "quantize scale row %lld: %g vs %g", (long long)r, scale[r], s);
    for (int64_t j = 0; j < n; ++j) {
      const float want = std::nearbyint(x[size_t(r * n + j)] / s);
      EXPECT(q[size_t(r * n + j)] == int8_t(want), "quantize [%lld, %lld]", (long long)r,
             (long long)j);
    }
  }
}

}  // namespace

int main() {
  std::printf("int8_gemm path: %s\n", cpu::int8_gemm_path());
  const int64_t sizes[] = {1, 7, 16, 33, 64, 257};
  for (int64_t M : sizes)
    for (int64_t N : sizes)
      for (int64_t K : sizes) check_gemm(M, N, K, (M + N + K) % 3 == 0 ? 5 : 0, false);
  check_gemm(1000, 33, 1000, 0, false);
  check_gemm(70, 1000, 257, 3, false);
  check_gemm(9, 40, 3000, 0, true);  // 3000 * 16384: past 2^25, the biased VNNI sums wrap
  check_gemm(3, 5, 0, 0, false);     // K = 0: zeros
  check_epilogue(DType::kFloat32);
  check_epilogue(DType::kBFloat16);
  check_epilogue(DType::kFloat16);
  check_quantize();
  std::printf("%s (%d failures)\n", failures ? "FAILED" : "ok", failures);
  return failures ? 1 : 0;
}
