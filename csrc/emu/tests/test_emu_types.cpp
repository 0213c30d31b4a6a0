// Checks emu/cuda_types.h against references that share none of its code: GCC's _Float16
// conversions, exact __float128 arithmetic rounded by a binary search over the 16-bit patterns,
// naive loops for the bit intrinsics, and a transcription of PTX prmt. Exits nonzero on failure.
//
// Build: g++ -std=c++20 -O2 -Wall -Wextra -Icsrc csrc/emu/tests/test_emu_types.cpp -o test

#include <algorithm>
#include <bit>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <random>
#include <type_traits>
#include <vector>

#include "emu/cuda_types.h"

namespace {

int64_t g_checks = 0;
int64_t g_failures = 0;

__attribute__((format(printf, 2, 3))) void expect(bool ok, const char* format, ...) {
  ++g_checks;
  if (ok) return;
  if (++g_failures <= 30) {
    std::va_list args;
    va_start(args, format);
    std::fputs("FAIL: ", stderr);
    std::vfprintf(stderr, format, args);
    std::fputc('\n', stderr);
    va_end(args);
  }
}

std::mt19937_64 g_rng(20261130);

uint32_t random32() { return static_cast<uint32_t>(g_rng()); }
uint16_t random16() { return static_cast<uint16_t>(g_rng()); }

__extension__ using Quad = __float128;
__extension__ using U128 = unsigned __int128;

bool quad_signbit(Quad x) { return (std::bit_cast<U128>(x) >> 127) != 0; }

// ---------------------------------------------------------------------------------------------
// Reference rounding to a 16-bit format: the exact value (or, for / and sqrt, one rounded to at
// least 2p+2 bits, where a second rounding to p bits is innocuous), then the nearest pattern,
// found by binary search over the non-negative patterns, which are ordered as their values.

struct Format16 {
  const char* name;
  uint16_t inf;                  // +infinity's bits; every pattern below it is finite
  Quad (*exact)(uint16_t bits);  // the value, from a decoder independent of the header's
};

const Format16 kHalf{"half", 0x7c00,
                     [](uint16_t b) { return Quad(float(std::bit_cast<_Float16>(b))); }};
const Format16 kBf16{"bf16", 0x7f80,
                     [](uint16_t b) { return Quad(std::bit_cast<float>(uint32_t(b) << 16)); }};

enum class Mode { kNearest, kZero, kDown, kUp };

// The values of patterns 0 ..= inf, ascending.
const std::vector<Quad>& values(const Format16& f) {
  static std::vector<Quad> half, bf16;
  std::vector<Quad>& table = f.inf == kHalf.inf ? half : bf16;
  if (table.empty()) {
    for (uint32_t b = 0; b <= f.inf; ++b) table.push_back(f.exact(uint16_t(b)));
  }
  return table;
}

uint16_t ref_round(Quad x, const Format16& f, Mode mode = Mode::kNearest) {
  if (x != x) return 0x7fff;  // CUDA's canonical NaN
  const bool negative = quad_signbit(x);
  const Quad ax = negative ? -x : x;
  const uint16_t sign = negative ? 0x8000 : 0;
  const std::vector<Quad>& v = values(f);
  // The largest pattern whose value is <= ax.
  const uint16_t lo = uint16_t(std::upper_bound(v.begin(), v.end(), ax) - v.begin() - 1);
  if (v[lo] == ax) return sign | lo;
  const uint16_t hi = uint16_t(lo + 1);
  const Quad v_lo = v[lo];
  // Past the largest finite value the next step is one more ulp, as IEEE overflow rounds.
  const Quad v_hi = hi == f.inf ? 2 * v[f.inf - 1] - v[f.inf - 2] : v[hi];
  bool take_hi = false;
  switch (mode) {
    case Mode::kNearest: {
      const Quad below = ax - v_lo, above = v_hi - ax;
      take_hi = above < below || (above == below && (lo & 1) != 0);
      break;
    }
    case Mode::kZero: take_hi = false; break;
    case Mode::kDown: take_hi = negative; break;
    case Mode::kUp: take_hi = !negative; break;
  }
  return sign | (take_hi ? hi : lo);
}

// The classic float -> bfloat16 rounding, NaN aside.
uint16_t ref_bf16(float f) {
  const uint32_t bits = std::bit_cast<uint32_t>(f);
  if (f != f) return 0x7fff;
  return uint16_t((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

uint16_t bits_of(__half h) { return __half_as_ushort(h); }
uint16_t bits_of(__nv_bfloat16 h) { return __bfloat16_as_ushort(h); }

// Floats around every rounding boundary of a format: each tie between neighbours (a float for
// both formats), one float ulp either side of it, and each value itself, both signs.
std::vector<float> boundary_floats(const Format16& f) {
  std::vector<float> out;
  for (uint32_t b = 0; b < f.inf; ++b) {
    const Quad v = f.exact(uint16_t(b));
    // Past the largest finite value, the tie with the next binade (where overflow starts).
    const Quad next = b + 1 == f.inf ? 2 * v - f.exact(uint16_t(b - 1)) : f.exact(uint16_t(b + 1));
    const float tie = float((v + next) / 2);
    for (const float x :
         {float(v), tie, std::nextafter(tie, 0.0f), std::nextafter(tie, HUGE_VALF)}) {
      out.push_back(x);
      out.push_back(-x);
    }
  }
  for (const float x : {HUGE_VALF, -HUGE_VALF, std::numeric_limits<float>::quiet_NaN(),
                        -std::numeric_limits<float>::quiet_NaN(), std::bit_cast<float>(0x7f800001u),
                        std::bit_cast<float>(0xffbfffffu), std::numeric_limits<float>::max(),
                        std::numeric_limits<float>::denorm_min(),
                        -std::numeric_limits<float>::denorm_min(), 65504.0f, 65519.99f, 65520.0f,
                        -65520.0f, 0x1p-24f, 0x1p-25f, 0x1.000002p-25f, 0x1p-14f, 0x1.ff8p-15f})
    out.push_back(x);
  return out;
}

// ---------------------------------------------------------------------------------------------

void test_half_widening() {
  for (uint32_t b = 0; b < 0x10000; ++b) {
    const float got = __half2float(__ushort_as_half(uint16_t(b)));
    const float want = float(std::bit_cast<_Float16>(uint16_t(b)));
    if (want != want) {
      // _Float16 keeps the payload; CUDA returns the canonical NaN.
      expect(std::bit_cast<uint32_t>(got) == 0x7fffffffu, "half2float(%04x) NaN -> %08x", b,
             std::bit_cast<uint32_t>(got));
    } else {
      expect(std::bit_cast<uint32_t>(got) == std::bit_cast<uint32_t>(want),
             "half2float(%04x) = %a, want %a", b, got, want);
    }
    expect(std::bit_cast<uint32_t>(float(__ushort_as_half(uint16_t(b)))) ==
               std::bit_cast<uint32_t>(got),
           "float(__half %04x)", b);
  }
}

void test_bf16_widening() {
  for (uint32_t b = 0; b < 0x10000; ++b) {
    const float got = __bfloat162float(__ushort_as_bfloat16(uint16_t(b)));
    expect(std::bit_cast<uint32_t>(got) == b << 16, "bfloat162float(%04x)", b);
  }
}

void check_float_to_half(float f) {
  const uint16_t got = bits_of(__float2half(f));
  const _Float16 want = _Float16(f);
  if (want != want) {
    expect(got == 0x7fff, "float2half(%08x) NaN -> %04x", std::bit_cast<uint32_t>(f), got);
  } else {
    expect(got == std::bit_cast<uint16_t>(want), "float2half(%a) = %04x, want %04x", f, got,
           std::bit_cast<uint16_t>(want));
  }
  expect(bits_of(__float2half_rn(f)) == got && bits_of(__half(f)) == got, "float2half_rn(%a)", f);
  const Quad q = f;
  expect(got == ref_round(q, kHalf), "float2half(%a) vs quad", f);
  expect(bits_of(__float2half_rz(f)) == ref_round(q, kHalf, Mode::kZero), "float2half_rz(%a)", f);
  expect(bits_of(__float2half_rd(f)) == ref_round(q, kHalf, Mode::kDown), "float2half_rd(%a)", f);
  expect(bits_of(__float2half_ru(f)) == ref_round(q, kHalf, Mode::kUp), "float2half_ru(%a)", f);
}

void check_float_to_bf16(float f) {
  const uint16_t got = bits_of(__float2bfloat16(f));
  expect(got == ref_bf16(f), "float2bfloat16(%a) = %04x, want %04x", f, got, ref_bf16(f));
  expect(bits_of(__float2bfloat16_rn(f)) == got && bits_of(__nv_bfloat16(f)) == got,
         "float2bfloat16_rn(%a)", f);
  const Quad q = f;
  expect(got == ref_round(q, kBf16), "float2bfloat16(%a) vs quad", f);
  expect(bits_of(__float2bfloat16_rz(f)) == ref_round(q, kBf16, Mode::kZero),
         "float2bfloat16_rz(%a)", f);
  expect(bits_of(__float2bfloat16_rd(f)) == ref_round(q, kBf16, Mode::kDown),
         "float2bfloat16_rd(%a)", f);
  expect(bits_of(__float2bfloat16_ru(f)) == ref_round(q, kBf16, Mode::kUp), "float2bfloat16_ru(%a)",
         f);
}

void test_narrowing() {
  for (const float f : boundary_floats(kHalf)) {
    check_float_to_half(f);
    check_float_to_bf16(f);
  }
  for (const float f : boundary_floats(kBf16)) check_float_to_bf16(f);
  for (int i = 0; i < 1 << 19; ++i) {
    const float f = std::bit_cast<float>(random32());
    check_float_to_half(f);
    check_float_to_bf16(f);
  }
  // Floats in half's range, where the mantissa bits below the cut matter.
  for (int i = 0; i < 1 << 19; ++i) {
    const uint32_t exp = 100 + random32() % 45;
    const float f = std::bit_cast<float>((random32() & 0x807fffffu) | exp << 23);
    check_float_to_half(f);
  }
  // Doubles a hair off a half tie, which double -> float -> half would round twice.
  for (uint32_t b = 0; b < 0x7bff; b += 7) {
    const double v = float(std::bit_cast<_Float16>(uint16_t(b)));
    const double next = float(std::bit_cast<_Float16>(uint16_t(b + 1)));
    const double tie = v + (next - v) / 2;
    for (const double d : {tie, std::nextafter(tie, 0.0), std::nextafter(tie, HUGE_VAL), -tie,
                           -std::nextafter(tie, 0.0), -std::nextafter(tie, HUGE_VAL)}) {
      const uint16_t got = bits_of(__double2half(d));
      expect(got == std::bit_cast<uint16_t>(_Float16(d)), "double2half(%a) = %04x", d, got);
      expect(bits_of(__half(d)) == got, "__half(double %a)", d);
      const uint16_t got_bf = bits_of(__double2bfloat16(d));
      expect(got_bf == ref_round(Quad(d), kBf16), "double2bfloat16(%a) = %04x", d, got_bf);
    }
  }
  for (int i = 0; i < 1 << 16; ++i) {
    const double d = std::bit_cast<double>(g_rng());
    const _Float16 want = _Float16(d);
    const uint16_t got = bits_of(__double2half(d));
    expect(want != want ? got == 0x7fff : got == std::bit_cast<uint16_t>(want),
           "double2half(%a) = %04x", d, got);
    expect(bits_of(__double2bfloat16(d)) == ref_round(Quad(d), kBf16), "double2bfloat16(%a)", d);
  }
}

// One binary operation on all formats' random and special operands.
template <class T>
T from_bits(uint16_t b) {
  if constexpr (std::is_same_v<T, __half>) {
    return __ushort_as_half(b);
  } else {
    return __ushort_as_bfloat16(b);
  }
}

template <class T>
void test_arithmetic(const Format16& f) {
  const std::vector<uint16_t> specials = {0x0000, 0x8000, 0x0001, 0x8001, 0x03ff, 0x0400,
                                          0x3c00, 0xbc00, 0x7bff, 0xfbff, 0x7f7f, 0x3f80,
                                          0x7c00, 0xfc00, 0x7f80, 0xff80, 0x7e00, 0x7fff,
                                          0xffff, 0x7c01, 0x5bff, 0x1400, 0x3555, 0x0080};
  std::vector<std::pair<uint16_t, uint16_t>> pairs;
  for (const uint16_t a : specials)
    for (const uint16_t b : specials) pairs.push_back({a, b});
  for (int i = 0; i < 200000; ++i) pairs.push_back({random16(), random16()});
  // Close exponents, where addition cancels and rounds most often.
  for (int i = 0; i < 50000; ++i) {
    const uint16_t a = random16();
    pairs.push_back({a, uint16_t((a ^ (random16() & 0x80ff)))});
  }
  for (const auto& [ab, bb] : pairs) {
    const T a = from_bits<T>(ab), b = from_bits<T>(bb);
    const Quad x = f.exact(ab), y = f.exact(bb);
    expect(bits_of(__hadd(a, b)) == ref_round(x + y, f), "%s %04x + %04x = %04x want %04x", f.name,
           ab, bb, bits_of(__hadd(a, b)), ref_round(x + y, f));
    expect(bits_of(__hsub(a, b)) == ref_round(x - y, f), "%s %04x - %04x", f.name, ab, bb);
    expect(bits_of(__hmul(a, b)) == ref_round(x * y, f), "%s %04x * %04x", f.name, ab, bb);
    expect(bits_of(__hdiv(a, b)) == ref_round(x / y, f), "%s %04x / %04x = %04x want %04x", f.name,
           ab, bb, bits_of(__hdiv(a, b)), ref_round(x / y, f));
    expect(bits_of(__hadd_rn(a, b)) == bits_of(__hadd(a, b)) &&
               bits_of(__hsub_rn(a, b)) == bits_of(__hsub(a, b)) &&
               bits_of(__hmul_rn(a, b)) == bits_of(__hmul(a, b)),
           "%s _rn forms %04x %04x", f.name, ab, bb);
    expect(bits_of(a + b) == bits_of(__hadd(a, b)) && bits_of(a - b) == bits_of(__hsub(a, b)) &&
               bits_of(a * b) == bits_of(__hmul(a, b)) && bits_of(a / b) == bits_of(__hdiv(a, b)),
           "%s operators %04x %04x", f.name, ab, bb);
    T c = a;
    c += b;
    expect(bits_of(c) == bits_of(__hadd(a, b)), "%s += %04x %04x", f.name, ab, bb);
    // Ordered comparisons are false on NaN; != and the ...u forms are true.
    expect((a == b) == (x == y) && (a != b) == !(x == y) && (a < b) == (x < y) &&
               (a <= b) == (x <= y) && (a > b) == (x > y) && (a >= b) == (x >= y),
           "%s comparisons %04x %04x", f.name, ab, bb);
    expect(__heq(a, b) == (x == y) && __hne(a, b) == (x < y || x > y) && __hlt(a, b) == (x < y) &&
               __hle(a, b) == (x <= y) && __hgt(a, b) == (x > y) && __hge(a, b) == (x >= y) &&
               __hneu(a, b) == !(x == y) && __hequ(a, b) == !(x < y || x > y) &&
               __hltu(a, b) == !(x >= y) && __hleu(a, b) == !(x > y) && __hgtu(a, b) == !(x <= y) &&
               __hgeu(a, b) == !(x < y),
           "%s comparison intrinsics %04x %04x", f.name, ab, bb);
    // maximumNumber: a NaN loses to a number; two NaNs give the canonical NaN; +0 > -0.
    const bool a_nan = x != x, b_nan = y != y;
    uint16_t want_max, want_min;
    if (a_nan && b_nan) {
      want_max = want_min = 0x7fff;
    } else if (a_nan || b_nan) {
      want_max = want_min = a_nan ? bb : ab;
    } else if (x == y) {
      want_max = quad_signbit(x) ? bb : ab;
      want_min = quad_signbit(x) ? ab : bb;
    } else {
      want_max = x > y ? ab : bb;
      want_min = x < y ? ab : bb;
    }
    expect(bits_of(__hmax(a, b)) == want_max, "%s hmax(%04x, %04x) = %04x", f.name, ab, bb,
           bits_of(__hmax(a, b)));
    expect(bits_of(__hmin(a, b)) == want_min, "%s hmin(%04x, %04x)", f.name, ab, bb);
    expect(bits_of(__hmax_nan(a, b)) == (a_nan || b_nan ? 0x7fff : want_max) &&
               bits_of(__hmin_nan(a, b)) == (a_nan || b_nan ? 0x7fff : want_min),
           "%s hmax_nan/hmin_nan(%04x, %04x)", f.name, ab, bb);
  }
}

// fma: the exact a*b + c fits a __float128 for any halves (at most 81 bits), and for bfloat16
// values in [2^-20, 2^21) (97 bits), which is where the bfloat16 operands are drawn from.
template <class T>
void check_fma(const Format16& f, uint16_t ab, uint16_t bb, uint16_t cb) {
  const T a = from_bits<T>(ab), b = from_bits<T>(bb), c = from_bits<T>(cb);
  const uint16_t want = ref_round(f.exact(ab) * f.exact(bb) + f.exact(cb), f);
  const uint16_t got = bits_of(__hfma(a, b, c));
  expect(got == want, "%s fma(%04x, %04x, %04x) = %04x want %04x", f.name, ab, bb, cb, got, want);
}

uint16_t random_bf16_in_window() {
  const uint32_t exp = 127 - 20 + random32() % 41;
  return uint16_t((random16() & 0x807f) | exp << 7);
}

void test_fma() {
  for (int i = 0; i < 300000; ++i) check_fma<__half>(kHalf, random16(), random16(), random16());
  for (int i = 0; i < 200000; ++i) {
    check_fma<__nv_bfloat16>(kBf16, random_bf16_in_window(), random_bf16_in_window(),
                             random_bf16_in_window());
  }
  // a*b exactly on a tie, pushed off it by a c too small for a float (2^-20) or a double
  // (2^-50) sum to keep, which would then round the tie: 7 * 37 = 259 lies between the
  // bfloat16 neighbours 258 and 260.
  const uint16_t seven = bits_of(__nv_bfloat16(7.0f)), thirty_seven = bits_of(__nv_bfloat16(37.0f));
  for (const float tiny : {0x1p-20f, -0x1p-20f, 0x1p-50f, -0x1p-50f, 0.0f, -0.0f}) {
    check_fma<__nv_bfloat16>(kBf16, seven, thirty_seven, bits_of(__nv_bfloat16(tiny)));
  }
  expect(__bfloat162float(__hfma(__nv_bfloat16(7.0f), __nv_bfloat16(37.0f),
                                 __nv_bfloat16(-0x1p-50f))) == 258.0f &&
             __bfloat162float(__hfma(__nv_bfloat16(7.0f), __nv_bfloat16(37.0f),
                                     __nv_bfloat16(0x1p-50f))) == 260.0f,
         "bf16 fma 7*37 +- 2^-50");
  // The float trap for half: 1025 * 3 = 3075, a tie between 3074 and 3076, off by 2^-24.
  const __half h1025 = 1025.0f, h3 = 3.0f, tiny = __ushort_as_half(0x0001);
  expect(__half2float(__hfma(h1025, h3, tiny)) == 3076.0f &&
             __half2float(__hfma(h1025, h3, __hneg(tiny))) == 3074.0f,
         "half fma tie");
  // Zero signs: -0 from a product meeting +0 is +0; two -0s stay -0.
  const __half pz = 0.0f, nz = -0.0f, one = 1.0f;
  expect(bits_of(__hfma(nz, one, pz)) == 0x0000 && bits_of(__hfma(nz, one, nz)) == 0x8000 &&
             bits_of(__hfma(one, one, __hneg(one))) == 0x0000,
         "fma zero signs");
}

// Every input of the unary functions, against long double math rounded by the reference.
template <class T>
void test_unary(const Format16& f) {
  struct Case {
    const char* name;
    T (*got)(T);
    long double (*want)(long double);
  };
  const Case cases[] = {
      {"hsqrt", hsqrt, [](long double x) { return std::sqrt(x); }},
      {"hrsqrt", hrsqrt, [](long double x) { return 1 / std::sqrt(x); }},
      {"hrcp", hrcp, [](long double x) { return 1 / x; }},
      {"hexp", hexp, [](long double x) { return std::exp(x); }},
      {"hexp2", hexp2, [](long double x) { return std::exp2(x); }},
      {"hlog", hlog, [](long double x) { return std::log(x); }},
      {"hlog2", hlog2, [](long double x) { return std::log2(x); }},
      {"hsin", hsin, [](long double x) { return std::sin(x); }},
      {"hcos", hcos, [](long double x) { return std::cos(x); }},
      {"htrunc", htrunc, [](long double x) { return std::trunc(x); }},
      {"hceil", hceil, [](long double x) { return std::ceil(x); }},
      {"hfloor", hfloor, [](long double x) { return std::floor(x); }},
      {"hrint", hrint, [](long double x) { return std::nearbyint(x); }},
  };
  for (uint32_t b = 0; b < 0x10000; ++b) {
    const T a = from_bits<T>(uint16_t(b));
    const long double x = static_cast<long double>(f.exact(uint16_t(b)));
    for (const Case& c : cases) {
      const uint16_t want = ref_round(Quad(c.want(x)), f);
      expect(bits_of(c.got(a)) == want, "%s %s(%04x) = %04x want %04x", f.name, c.name, b,
             bits_of(c.got(a)), want);
    }
    const bool nan = x != x;
    expect(bits_of(__hneg(a)) == (nan ? 0x7fff : (b ^ 0x8000)) &&
               bits_of(-a) == bits_of(__hneg(a)) &&
               bits_of(__habs(a)) == (nan ? 0x7fff : (b & 0x7fff)),
           "%s hneg/habs(%04x)", f.name, b);
    expect(__hisnan(a) == nan && __hisinf(a) == (x == HUGE_VALL    ? 1
                                                 : x == -HUGE_VALL ? -1
                                                                   : 0),
           "%s hisnan/hisinf(%04x)", f.name, b);
    expect(bool(a) == (x != 0), "%s bool(%04x)", f.name, b);
  }
}

template <class I>
I ref_to_int(long double v, Mode mode) {
  if (v != v) return sizeof(I) == 8 ? I(uint64_t(1) << 63) : I(0);
  const long double down = std::floor(v), frac = v - down;
  long double r = down;
  switch (mode) {
    case Mode::kNearest:
      r = frac > 0.5L                  ? down + 1
          : frac < 0.5L                ? down
          : std::fmod(down, 2.0L) == 0 ? down
                                       : down + 1;
      break;
    case Mode::kZero: r = v < 0 && frac > 0 ? down + 1 : down; break;
    case Mode::kDown: break;
    case Mode::kUp: r = frac > 0 ? down + 1 : down; break;
  }
  if (r <= static_cast<long double>(std::numeric_limits<I>::min()))
    return std::numeric_limits<I>::min();
  if (r >= static_cast<long double>(std::numeric_limits<I>::max()))
    return std::numeric_limits<I>::max();
  return static_cast<I>(r);
}

void test_integer_conversions() {
  for (uint32_t b = 0; b < 0x10000; ++b) {
    const __half h = __ushort_as_half(uint16_t(b));
    const __nv_bfloat16 g = __ushort_as_bfloat16(uint16_t(b));
    const long double x = static_cast<long double>(kHalf.exact(uint16_t(b)));
    const long double y = static_cast<long double>(kBf16.exact(uint16_t(b)));
    expect(__half2int_rn(h) == ref_to_int<int>(x, Mode::kNearest) &&
               __half2int_rz(h) == ref_to_int<int>(x, Mode::kZero) &&
               __half2int_rd(h) == ref_to_int<int>(x, Mode::kDown) &&
               __half2int_ru(h) == ref_to_int<int>(x, Mode::kUp) &&
               __half2uint_rn(h) == ref_to_int<unsigned>(x, Mode::kNearest) &&
               __half2short_rz(h) == ref_to_int<short>(x, Mode::kZero) &&
               __half2ushort_rn(h) == ref_to_int<unsigned short>(x, Mode::kNearest) &&
               __half2ll_rz(h) == ref_to_int<long long>(x, Mode::kZero) &&
               __half2ull_rn(h) == ref_to_int<unsigned long long>(x, Mode::kNearest) &&
               __half2uint_rz(h) == ref_to_int<unsigned>(x, Mode::kZero) &&
               __half2short_rn(h) == ref_to_int<short>(x, Mode::kNearest) &&
               __half2ushort_rz(h) == ref_to_int<unsigned short>(x, Mode::kZero) &&
               __half2ll_rn(h) == ref_to_int<long long>(x, Mode::kNearest) &&
               __half2ull_rz(h) == ref_to_int<unsigned long long>(x, Mode::kZero),
           "half %04x to integers", b);
    expect(
        int(h) == ref_to_int<int>(x, Mode::kZero) &&
            static_cast<unsigned long long>(h) == ref_to_int<unsigned long long>(x, Mode::kZero) &&
            static_cast<short>(h) == ref_to_int<short>(x, Mode::kZero),
        "half %04x conversion operators", b);
    expect(__bfloat162int_rn(g) == ref_to_int<int>(y, Mode::kNearest) &&
               __bfloat162int_rz(g) == ref_to_int<int>(y, Mode::kZero) &&
               __bfloat162int_rd(g) == ref_to_int<int>(y, Mode::kDown) &&
               __bfloat162int_ru(g) == ref_to_int<int>(y, Mode::kUp) &&
               __bfloat162uint_rz(g) == ref_to_int<unsigned>(y, Mode::kZero) &&
               __bfloat162ll_rn(g) == ref_to_int<long long>(y, Mode::kNearest) &&
               __bfloat162ull_rz(g) == ref_to_int<unsigned long long>(y, Mode::kZero) &&
               __bfloat162uint_rn(g) == ref_to_int<unsigned>(y, Mode::kNearest) &&
               __bfloat162short_rn(g) == ref_to_int<short>(y, Mode::kNearest) &&
               __bfloat162short_rz(g) == ref_to_int<short>(y, Mode::kZero) &&
               __bfloat162ushort_rn(g) == ref_to_int<unsigned short>(y, Mode::kNearest) &&
               __bfloat162ushort_rz(g) == ref_to_int<unsigned short>(y, Mode::kZero) &&
               __bfloat162ll_rz(g) == ref_to_int<long long>(y, Mode::kZero) &&
               __bfloat162ull_rn(g) == ref_to_int<unsigned long long>(y, Mode::kNearest) &&
               int(g) == ref_to_int<int>(y, Mode::kZero) &&
               static_cast<long long>(g) == ref_to_int<long long>(y, Mode::kZero),
           "bf16 %04x to integers", b);
  }

  std::vector<int32_t> ints = {0,     1,      -1,      2047,          2048,      2049,
                               2050,  2051,   4097,    65504,         65519,     65520,
                               65536, -65520, 1 << 24, (1 << 24) + 1, INT32_MAX, INT32_MIN};
  for (int i = 0; i < 100000; ++i) ints.push_back(int32_t(random32()) >> (random32() % 32));
  for (const int32_t i : ints) {
    const Quad q = i;
    expect(bits_of(__int2half_rn(i)) == ref_round(q, kHalf) &&
               bits_of(__int2half_rz(i)) == ref_round(q, kHalf, Mode::kZero) &&
               bits_of(__int2half_rd(i)) == ref_round(q, kHalf, Mode::kDown) &&
               bits_of(__int2half_ru(i)) == ref_round(q, kHalf, Mode::kUp) &&
               bits_of(__half(i)) == ref_round(q, kHalf),
           "int %d to half", i);
    expect(bits_of(__int2bfloat16_rn(i)) == ref_round(q, kBf16) &&
               bits_of(__int2bfloat16_rz(i)) == ref_round(q, kBf16, Mode::kZero) &&
               bits_of(__int2bfloat16_rd(i)) == ref_round(q, kBf16, Mode::kDown) &&
               bits_of(__int2bfloat16_ru(i)) == ref_round(q, kBf16, Mode::kUp) &&
               bits_of(__nv_bfloat16(i)) == ref_round(q, kBf16),
           "int %d to bf16", i);
    const uint32_t u = uint32_t(i);
    expect(bits_of(__uint2half_rn(u)) == ref_round(Quad(u), kHalf) &&
               bits_of(__uint2bfloat16_rn(u)) == ref_round(Quad(u), kBf16),
           "uint %u to half/bf16", u);
    const short sh = short(i);
    const unsigned short ush = static_cast<unsigned short>(i);
    expect(bits_of(__short2half_rn(sh)) == ref_round(Quad(sh), kHalf) &&
               bits_of(__ushort2half_rn(ush)) == ref_round(Quad(ush), kHalf) &&
               bits_of(__short2bfloat16_rn(sh)) == ref_round(Quad(sh), kBf16) &&
               bits_of(__ushort2bfloat16_rn(ush)) == ref_round(Quad(ush), kBf16),
           "16-bit integer %d to half/bf16", i);
    expect(__int2float_rn(i) == float(static_cast<long double>(i)) &&
               __uint2float_rn(u) == float(static_cast<long double>(u)) &&
               __int2double_rn(i) == i && __uint2double_rn(u) == u,
           "int %d to float/double", i);
  }
  // 64-bit integers, where double cannot hold them: 2^62 + 2^54 + 1 is just above the bfloat16
  // tie 2^62 + 2^54, and 2^62 + 2^54 would be where rounding through double lands.
  std::vector<int64_t> longs = {(int64_t(1) << 62) + (int64_t(1) << 54) + 1,
                                -((int64_t(1) << 62) + (int64_t(1) << 54) + 1),
                                (int64_t(1) << 62) + (int64_t(1) << 54),
                                (int64_t(1) << 62) + (int64_t(1) << 54) - 1,
                                INT64_MAX,
                                INT64_MIN,
                                65520,
                                -65519};
  for (int i = 0; i < 100000; ++i) longs.push_back(int64_t(g_rng()) >> (random32() % 64));
  for (const int64_t i : longs) {
    const Quad q = i;
    expect(bits_of(__ll2half_rn(i)) == ref_round(q, kHalf) &&
               bits_of(__ll2bfloat16_rn(i)) == ref_round(q, kBf16) &&
               bits_of(__half(i)) == ref_round(q, kHalf) && __ll2float_rn(i) == float(q) &&
               __ll2double_rn(i) == double(q) && bits_of(__nv_bfloat16(i)) == ref_round(q, kBf16) &&
               bits_of(__nv_bfloat16(static_cast<long long>(i))) == ref_round(q, kBf16),
           "int64 %lld to half/bf16", static_cast<long long>(i));
    const uint64_t u = uint64_t(i);
    expect(bits_of(__ull2bfloat16_rn(u)) == ref_round(Quad(u), kBf16) &&
               bits_of(__ull2half_rn(u)) == ref_round(Quad(u), kHalf) &&
               bits_of(__nv_bfloat16(u)) == ref_round(Quad(u), kBf16) &&
               __ull2float_rn(u) == float(Quad(u)) && __ull2double_rn(u) == double(Quad(u)),
           "uint64 %llu to half/bf16", static_cast<unsigned long long>(u));
  }

  // float -> integer: ties, saturation and NaN, then random bit patterns.
  std::vector<float> floats = {
      0.5f,           1.5f,           2.5f,
      -0.5f,          -1.5f,          -2.5f,
      0.49999997f,    -0.49999997f,   1e10f,
      -1e10f,         2147483520.0f,  2147483648.0f,
      -2147483648.0f, 4294967040.0f,  4294967296.0f,
      9.2233715e18f,  -9.2233720e18f, 1.8446743e19f,
      HUGE_VALF,      -HUGE_VALF,     std::numeric_limits<float>::quiet_NaN(),
      -0.0f};
  for (int i = 0; i < 400000; ++i) floats.push_back(std::bit_cast<float>(random32()));
  for (int i = 0; i < 100000; ++i) floats.push_back(float(int32_t(random32()) >> 8) / 2);
  for (const float f : floats) {
    const long double x = f;
    expect(__float2int_rn(f) == ref_to_int<int>(x, Mode::kNearest) &&
               __float2int_rz(f) == ref_to_int<int>(x, Mode::kZero) &&
               __float2int_rd(f) == ref_to_int<int>(x, Mode::kDown) &&
               __float2int_ru(f) == ref_to_int<int>(x, Mode::kUp),
           "float %a to int: %d %d %d %d", f, __float2int_rn(f), __float2int_rz(f),
           __float2int_rd(f), __float2int_ru(f));
    expect(__float2uint_rn(f) == ref_to_int<unsigned>(x, Mode::kNearest) &&
               __float2uint_rz(f) == ref_to_int<unsigned>(x, Mode::kZero) &&
               __float2uint_rd(f) == ref_to_int<unsigned>(x, Mode::kDown) &&
               __float2uint_ru(f) == ref_to_int<unsigned>(x, Mode::kUp),
           "float %a to uint", f);
    expect(__float2ll_rn(f) == ref_to_int<long long>(x, Mode::kNearest) &&
               __float2ll_rz(f) == ref_to_int<long long>(x, Mode::kZero) &&
               __float2ll_rd(f) == ref_to_int<long long>(x, Mode::kDown) &&
               __float2ll_ru(f) == ref_to_int<long long>(x, Mode::kUp) &&
               __float2ull_rn(f) == ref_to_int<unsigned long long>(x, Mode::kNearest) &&
               __float2ull_rz(f) == ref_to_int<unsigned long long>(x, Mode::kZero),
           "float %a to 64-bit", f);
    const double d = double(f) + (random32() % 2 ? 0x1p-30 : 0.0) * double(f);
    const long double xd = d;
    expect(__double2int_rn(d) == ref_to_int<int>(xd, Mode::kNearest) &&
               __double2int_rz(d) == ref_to_int<int>(xd, Mode::kZero) &&
               __double2int_rd(d) == ref_to_int<int>(xd, Mode::kDown) &&
               __double2int_ru(d) == ref_to_int<int>(xd, Mode::kUp) &&
               __double2uint_rn(d) == ref_to_int<unsigned>(xd, Mode::kNearest) &&
               __double2uint_rz(d) == ref_to_int<unsigned>(xd, Mode::kZero) &&
               __double2ll_rn(d) == ref_to_int<long long>(xd, Mode::kNearest) &&
               __double2ll_rz(d) == ref_to_int<long long>(xd, Mode::kZero) &&
               __double2ull_rn(d) == ref_to_int<unsigned long long>(xd, Mode::kNearest) &&
               __double2ull_rz(d) == ref_to_int<unsigned long long>(xd, Mode::kZero),
           "double %a to integers", d);
    expect(std::bit_cast<uint32_t>(__double2float_rn(d)) ==
               std::bit_cast<uint32_t>(static_cast<float>(d)),
           "double2float_rn(%a)", d);
  }
  expect(__float2int_rn(2.5f) == 2 && __float2int_rn(3.5f) == 4 && __float2int_rn(-2.5f) == -2 &&
             __float2int_rd(-0.5f) == -1 && __float2int_ru(-0.5f) == 0 &&
             __float2int_rz(-1.9f) == -1 && __float2int_rn(NAN) == 0 &&
             __float2ll_rn(NAN) == INT64_MIN && __float2uint_rn(-3.0f) == 0,
         "float to int spot values");
}

// ---------------------------------------------------------------------------------------------

uint32_t ref_byte_perm(uint32_t a, uint32_t b, uint32_t c) {
  // PTX ISA, prmt.b32 default mode: tmp64 = (b << 32) | a; ctl[i] = (c >> 4i) & 0xf; result
  // byte i = ReadByte(ctl[i], tmp64), where the selector's msb asks for the selected byte's sign
  // replicated over all 8 bits instead of the byte.
  uint8_t source[8];
  for (int i = 0; i < 4; ++i) {
    source[i] = uint8_t(a >> (8 * i));
    source[4 + i] = uint8_t(b >> (8 * i));
  }
  uint32_t result = 0;
  for (int i = 0; i < 4; ++i) {
    const uint32_t ctl = (c >> (4 * i)) & 0xf;
    const uint8_t picked = source[ctl % 8];
    const uint8_t byte = ctl >= 8 ? uint8_t(int8_t(picked) < 0 ? 0xff : 0x00) : picked;
    result |= uint32_t(byte) << (8 * i);
  }
  return result;
}

void test_bit_intrinsics() {
  expect(__byte_perm(0x33221100u, 0x77665544u, 0x3210) == 0x33221100u &&
             __byte_perm(0x33221100u, 0x77665544u, 0x7654) == 0x77665544u &&
             __byte_perm(0x33221100u, 0x77665544u, 0x0123) == 0x00112233u &&
             __byte_perm(0x80u, 0, 0x8888) == 0xffffffffu &&
             __byte_perm(0x7fu, 0, 0x8880) == 0x0000007fu,
         "byte_perm spot values");
  for (int i = 0; i < 200000; ++i) {
    const uint32_t x = random32(), y = random32(), s = random32();
    expect(__byte_perm(x, y, s) == ref_byte_perm(x, y, s), "byte_perm(%08x, %08x, %08x)", x, y, s);

    int pop = 0, clz = 32, ffs = 0;
    uint32_t rev = 0;
    for (int bit = 0; bit < 32; ++bit) {
      const bool set = ((x >> bit) & 1) != 0;
      pop += set;
      if (set) clz = 31 - bit;
      if (set && ffs == 0) ffs = bit + 1;
      rev |= uint32_t(set) << (31 - bit);
    }
    expect(__popc(x) == pop && __clz(int(x)) == clz && __ffs(int(x)) == ffs && __brev(x) == rev,
           "bit counts of %08x", x);

    const uint64_t w = g_rng() >> (random32() % 64);
    int pop64 = 0, clz64 = 64, ffs64 = 0;
    uint64_t rev64 = 0;
    for (int bit = 0; bit < 64; ++bit) {
      const bool set = ((w >> bit) & 1) != 0;
      pop64 += set;
      if (set) clz64 = 63 - bit;
      if (set && ffs64 == 0) ffs64 = bit + 1;
      rev64 |= uint64_t(set) << (63 - bit);
    }
    expect(__popcll(w) == pop64 && __clzll((long long)w) == clz64 &&
               __ffsll((long long)w) == ffs64 && __brevll(w) == rev64,
           "64-bit counts of %016llx", (unsigned long long)w);

    const uint32_t shift = random32() % 70;
    const uint32_t n_wrap = shift % 32, n_clamp = shift < 32 ? shift : 32;
    const auto left = [&](uint32_t n) {
      return n == 0 ? y : n == 32 ? x : (y << n) | (x >> (32 - n));
    };
    const auto right = [&](uint32_t n) {
      return n == 0 ? x : n == 32 ? y : (x >> n) | (y << (32 - n));
    };
    expect(__funnelshift_l(x, y, shift) == left(n_wrap) &&
               __funnelshift_lc(x, y, shift) == left(n_clamp) &&
               __funnelshift_r(x, y, shift) == right(n_wrap) &&
               __funnelshift_rc(x, y, shift) == right(n_clamp),
           "funnelshift(%08x, %08x, %u)", x, y, shift);

    const int32_t sx = int32_t(x), sy = int32_t(y);
    expect(__mulhi(sx, sy) == int32_t((int64_t(sx) * sy) >> 32) &&
               __umulhi(x, y) == uint32_t((uint64_t(x) * y) >> 32),
           "mulhi(%08x, %08x)", x, y);
    const int64_t sx24 = int64_t((x & 0xffffffu) ^ 0x800000u) - 0x800000;
    const int64_t sy24 = int64_t((y & 0xffffffu) ^ 0x800000u) - 0x800000;
    expect(__mul24(sx, sy) == int32_t(uint32_t(uint64_t(sx24 * sy24))) &&
               __umul24(x, y) == uint32_t(uint64_t(x & 0xffffffu) * (y & 0xffffffu)),
           "mul24(%08x, %08x)", x, y);

    // 64-bit high products from 32-bit limbs; the signed one corrected from the unsigned.
    const uint64_t a = g_rng(), b = g_rng();
    const uint64_t a0 = uint32_t(a), a1 = a >> 32, b0 = uint32_t(b), b1 = b >> 32;
    const uint64_t mid = (a0 * b0 >> 32) + uint32_t(a1 * b0) + uint32_t(a0 * b1);
    const uint64_t high = a1 * b1 + (a1 * b0 >> 32) + (a0 * b1 >> 32) + (mid >> 32);
    const uint64_t signed_high = high - (int64_t(a) < 0 ? b : 0) - (int64_t(b) < 0 ? a : 0);
    expect(__umul64hi(a, b) == high && __mul64hi(int64_t(a), int64_t(b)) == int64_t(signed_high),
           "mul64hi(%016llx, %016llx)", (unsigned long long)a, (unsigned long long)b);

    const uint32_t z = random32();
    const int64_t diff = int64_t(sx) - sy;
    expect(__sad(sx, sy, z) == uint32_t(uint64_t(diff < 0 ? -diff : diff) + z) &&
               __usad(x, y, z) == uint32_t((x > y ? uint64_t(x) - y : uint64_t(y) - x) + z),
           "sad(%08x, %08x, %08x)", x, y, z);
    const int64_t sum = int64_t(sx) + sy;
    const int64_t floor_half = sum >= 0 ? sum / 2 : -((-sum + 1) / 2);
    const int64_t ceil_half = sum >= 0 ? (sum + 1) / 2 : -(-sum / 2);
    expect(__hadd(sx, sy) == floor_half && __rhadd(sx, sy) == ceil_half &&
               __uhadd(x, y) == uint32_t((uint64_t(x) + y) / 2) &&
               __urhadd(x, y) == uint32_t((uint64_t(x) + y + 1) / 2),
           "halving adds of %08x, %08x", x, y);
  }
  expect(__hadd(INT32_MAX, INT32_MAX) == INT32_MAX && __hadd(INT32_MIN, INT32_MIN) == INT32_MIN &&
             __hadd(-1, 0) == -1 && __rhadd(-1, 0) == 0 && __uhadd(~0u, ~0u) == ~0u,
         "halving add extremes");
  expect(__clz(0) == 32 && __clzll(0) == 64 && __ffs(0) == 0 && __ffsll(0) == 0 &&
             __ffs(INT32_MIN) == 32 && __popc(~0u) == 32,
         "bit intrinsic edges");

  expect(__float_as_int(1.0f) == 0x3f800000 && __int_as_float(0x40000000) == 2.0f &&
             __float_as_uint(-0.0f) == 0x80000000u && __uint_as_float(0x3f800000u) == 1.0f &&
             __double_as_longlong(1.0) == 0x3ff0000000000000ll &&
             __longlong_as_double(0x4000000000000000ll) == 2.0 &&
             __double2hiint(1.0) == 0x3ff00000 && __double2loint(1.0) == 0 &&
             __hiloint2double(0x40000000, 0) == 2.0,
         "bit casts");
}

void test_float_intrinsics() {
  expect(__fdividef(1.0f, 0x1p127f) == 0.0f && std::isnan(__fdividef(HUGE_VALF, 0x1p127f)) &&
             __fdividef(6.0f, 3.0f) == 2.0f && std::signbit(__fdividef(1.0f, -0x1p127f)),
         "fdividef");
  expect(__saturatef(-2.0f) == 0.0f && __saturatef(0.25f) == 0.25f && __saturatef(3.0f) == 1.0f &&
             __saturatef(NAN) == 0.0f,
         "saturatef");
  expect(__frcp_rn(4.0f) == 0.25f && __fsqrt_rn(9.0f) == 3.0f && __frsqrt_rn(0.25f) == 2.0f &&
             __fmaf_rn(0x1.000002p0f, 0x1.000002p0f, -0x1.000004p0f) == 0x1p-46f &&
             __fadd_rn(1.0f, 2.0f) == 3.0f && __fmul_rn(3.0f, 2.0f) == 6.0f &&
             __fdiv_rn(1.0f, 4.0f) == 0.25f && __fsub_rn(1.0f, 4.0f) == -3.0f,
         "_rn intrinsics");
  expect(rsqrtf(4.0f) == 0.5f && rsqrt(16.0) == 0.25 && rsqrt(4.0f) == 0.5f &&
             __expf(0.0f) == 1.0f && __logf(1.0f) == 0.0f && __exp10f(2.0f) == 100.0f &&
             __log2f(8.0f) == 3.0f && __powf(2.0f, 10.0f) == 1024.0f && __sinf(0.0f) == 0.0f &&
             __cosf(0.0f) == 1.0f && __tanf(0.0f) == 0.0f,
         "fast-math intrinsics");
  float s = 1, c = 0;
  __sincosf(0.0f, &s, &c);
  expect(s == 0.0f && c == 1.0f, "sincosf");
  // <math.h> functions unqualified at global scope, float overloads included.
  const float x = 0.5f;
  static_assert(std::is_same_v<decltype(sqrt(x)), float>);
  static_assert(std::is_same_v<decltype(exp(x)), float>);
  expect(!isnan(x) && !isinf(x) && isfinite(x) && !signbit(x) && fabsf(-x) == x &&
             sqrtf(0.25f) == x && exp2f(1.0f) == 2.0f && log2f(4.0f) == 2.0f &&
             fmaf(x, 2.0f, 1.0f) == 2.0f && copysignf(x, -1.0f) == -x && truncf(1.5f) == 1.0f &&
             roundf(2.5f) == 3.0f && rintf(2.5f) == 2.0f && nearbyintf(3.5f) == 4.0f &&
             floorf(-x) == -1.0f && ceilf(x) == 1.0f && tanhf(0.0f) == 0.0f && erff(0.0f) == 0.0f &&
             erfcf(0.0f) == 1.0f && log1pf(0.0f) == 0.0f && expm1f(0.0f) == 0.0f &&
             fminf(NAN, x) == x && isnan(NAN) && isinf(INFINITY),
         "math.h at global scope");
  expect(std::bit_cast<uint32_t>(CUDART_INF_F) == 0x7f800000u &&
             std::bit_cast<uint32_t>(CUDART_NAN_F) == 0x7fffffffu &&
             CUDART_MAX_NORMAL_F == std::numeric_limits<float>::max() &&
             CUDART_MIN_DENORM_F == std::numeric_limits<float>::denorm_min() &&
             std::signbit(CUDART_NEG_ZERO_F) && CUDART_ZERO_F == 0.0f && CUDART_ONE_F == 1.0f &&
             CUDART_INF == HUGE_VAL && std::isnan(CUDART_NAN) && std::signbit(CUDART_NEG_ZERO) &&
             bits_of(CUDART_INF_FP16) == 0x7c00 && bits_of(CUDART_NAN_FP16) == 0x7fff &&
             __half2float(CUDART_MAX_NORMAL_FP16) == 65504.0f &&
             __half2float(CUDART_ONE_FP16) == 1.0f && bits_of(CUDART_INF_BF16) == 0x7f80 &&
             __bfloat162float(CUDART_ONE_BF16) == 1.0f,
         "CUDART constants");
}

// ---------------------------------------------------------------------------------------------

static_assert(sizeof(char1) == 1 && alignof(char1) == 1 && sizeof(char2) == 2 &&
              alignof(char2) == 2 && sizeof(char3) == 3 && alignof(char3) == 1 &&
              sizeof(char4) == 4 && alignof(char4) == 4);
static_assert(sizeof(uchar2) == 2 && alignof(uchar2) == 2 && sizeof(uchar3) == 3 &&
              sizeof(uchar4) == 4 && alignof(uchar4) == 4);
static_assert(sizeof(short1) == 2 && alignof(short2) == 4 && sizeof(short2) == 4 &&
              sizeof(short3) == 6 && alignof(short3) == 2 && sizeof(short4) == 8 &&
              alignof(short4) == 8 && alignof(ushort2) == 4 && alignof(ushort4) == 8);
static_assert(sizeof(int1) == 4 && sizeof(int2) == 8 && alignof(int2) == 8 && sizeof(int3) == 12 &&
              alignof(int3) == 4 && sizeof(int4) == 16 && alignof(int4) == 16 &&
              alignof(uint2) == 8 && sizeof(uint3) == 12 && alignof(uint4) == 16);
static_assert(sizeof(longlong1) == 8 && sizeof(longlong2) == 16 && alignof(longlong2) == 16 &&
              sizeof(longlong3) == 24 && alignof(longlong3) == 8 && sizeof(longlong4) == 32 &&
              alignof(longlong4) == 16 && alignof(ulonglong2) == 16);
static_assert(sizeof(float1) == 4 && sizeof(float2) == 8 && alignof(float2) == 8 &&
              sizeof(float3) == 12 && alignof(float3) == 4 && sizeof(float4) == 16 &&
              alignof(float4) == 16);
static_assert(sizeof(double1) == 8 && sizeof(double2) == 16 && alignof(double2) == 16 &&
              sizeof(double3) == 24 && alignof(double3) == 8 && sizeof(double4) == 32 &&
              alignof(double4) == 16);

template <class T, std::size_t kSize>
constexpr bool kPlainBits =
    sizeof(T) == kSize && alignof(T) == kSize && std::is_trivially_copyable_v<T> &&
    std::is_standard_layout_v<T> && std::is_trivially_default_constructible_v<T>;
static_assert(kPlainBits<__half, 2> && kPlainBits<__nv_bfloat16, 2> && kPlainBits<__half2, 4> &&
              kPlainBits<__nv_bfloat162, 4> && kPlainBits<__half_raw, 2> &&
              kPlainBits<__half2_raw, 4> && kPlainBits<__nv_bfloat16_raw, 2> &&
              kPlainBits<__nv_bfloat162_raw, 4>);
static_assert(std::is_same_v<half, __half> && std::is_same_v<nv_bfloat162, __nv_bfloat162>);

// min/max: CUDA's overloads where it has them, the usual arithmetic conversions elsewhere.
static_assert(std::is_same_v<decltype(min(1, 2)), int>);
static_assert(std::is_same_v<decltype(min(1, 2u)), unsigned>);
static_assert(std::is_same_v<decltype(max(1u, 2)), unsigned>);
static_assert(std::is_same_v<decltype(min(int64_t(1), int64_t(2))), int64_t>);
static_assert(std::is_same_v<decltype(min(int64_t(1), 2)), int64_t>);
static_assert(std::is_same_v<decltype(max(3, int64_t(1))), int64_t>);
static_assert(std::is_same_v<decltype(min(std::size_t(1), 3)), std::size_t>);
static_assert(std::is_same_v<decltype(max(1ll, 2ull)), unsigned long long>);
static_assert(std::is_same_v<decltype(min(1.0f, 2.0f)), float>);
static_assert(std::is_same_v<decltype(min(1.0f, 2.0)), double>);
static_assert(std::is_same_v<decltype(max(1, 2.0f)), float>);
static_assert(std::is_same_v<decltype(min(short(1), short(2))), int>);
static_assert(std::is_same_v<decltype(max(char(1), 2)), int>);

struct Shape {
  int64_t size;
};

void test_min_max() {
  const Shape s{5};
  expect(min(s.size, 3) == 3 && max(s.size, 3) == 5, "min/max of int64_t and int");
  expect(min(-1, 1u) == 1u && max(-1, 1u) == 0xffffffffu, "min/max mixed signedness");
  expect(min(2.0f, NAN) == 2.0f && max(NAN, 2.0f) == 2.0f && min(1.0, 0.5f) == 0.5,
         "min/max of floats: a NaN loses");
  expect(std::min(1, 2) == 1 && std::max(1.0, 2.0) == 2.0, "qualified std::min/max");
  {
    using namespace std;
    static_assert(std::is_same_v<decltype(min(1, 2)), int>);  // CUDA's, not std::min's const&
    static_assert(std::is_same_v<decltype(max(int64_t(1), int64_t(2))), int64_t>);
    expect(min(NAN, 1.0f) == 1.0f && max(1.0f, NAN) == 1.0f && min(int64_t(4), 3) == 3 &&
               max(short(3), short(4)) == 4,
           "min/max under using namespace std");
  }
}

void test_types() {
  const float4 f4 = make_float4(1, 2, 3, 4);
  const int2 i2 = make_int2(-1, 2);
  const uchar4 c4 = make_uchar4(1, 2, 3, 255);
  const double2 d2 = make_double2(0.5, 1.5);
  const longlong2 l2 = make_longlong2(-5, 6);
  expect(f4.w == 4 && i2.x == -1 && c4.w == 255 && d2.y == 1.5 && l2.x == -5 &&
             make_short2(3, 4).y == 4 && make_char4(-1, 0, 0, 0).x == -1 &&
             make_uint4(1, 2, 3, 4).z == 3 && make_ulonglong2(7, 8).y == 8,
         "make_ functions");

  // Constructors and conversions.
  const __half h = 3;
  const __nv_bfloat16 b = 2.5;
  expect(__half2float(h) == 3.0f && __bfloat162float(b) == 2.5f &&
             float(__half(65520.0f)) == HUGE_VALF && bits_of(__half(NAN)) == 0x7fff &&
             bits_of(__half(-NAN)) == 0x7fff && bits_of(__nv_bfloat16(-NAN)) == 0x7fff &&
             int(__half(-2.75f)) == -2 && int(__nv_bfloat16(1e30f)) == INT32_MAX &&
             int(__half(NAN)) == 0 && static_cast<long long>(__half(NAN)) == INT64_MIN,
         "constructors and conversions");
  const __half_raw raw = h;
  expect(raw.x == 0x4200 && bits_of(__half(__half_raw{0x3c00})) == 0x3c00 &&
             __half_as_short(__short_as_half(-1)) == -1 &&
             __bfloat16_as_short(__short_as_bfloat16(-2)) == -2,
         "raw bits");
  volatile __half shared = __half(1.0f);
  shared = __half(2.0f);
  const __half read = shared;
  expect(__half2float(read) == 2.0f, "volatile __half");

  __half counter = 1.0f;
  const __half before = counter++;
  ++counter;
  --counter;
  __nv_bfloat16 bcounter = 1.0f;
  bcounter++;
  expect(__half2float(before) == 1.0f && __half2float(counter) == 2.0f &&
             __bfloat162float(bcounter) == 2.0f,
         "increment and decrement");

  // Pairs: lane-wise, x in the low 16 bits.
  const __half2 p = __floats2half2_rn(1.5f, -2.0f), q = __halves2half2(0.25f, 4.0f);
  const float2 sum = __half22float2(p + q);
  const float2 fused = __half22float2(__hfma2(p, q, p));
  const __half2_raw praw = p;
  expect(sum.x == 1.75f && sum.y == 2.0f && fused.x == 1.875f && fused.y == -10.0f &&
             __low2float(p * q) == 0.375f && __high2float(p - q) == -6.0f &&
             __half2float(__high2half(__lowhigh2highlow(p))) == 1.5f && praw.x == 0x3e00 &&
             std::bit_cast<uint32_t>(p) == 0xc0003e00u &&
             __half2float(__low2half(__hmax2(p, q))) == 1.5f &&
             __half2float(__high2half(__hmin2(p, q))) == -2.0f &&
             __half2float(__low2half(-p)) == -1.5f && __half2float(__high2half(p / q)) == -0.5f &&
             __half2float(__low2half(__float2half2_rn(3.0f))) == 3.0f &&
             __half2float(__high2half(__float22half2_rn(make_float2(1, 7)))) == 7.0f &&
             __half2float(__high2half(__half2half2(h))) == 3.0f &&
             __low2float(__lows2half2(p, q)) == 1.5f && __high2float(__lows2half2(p, q)) == 0.25f &&
             __low2float(__highs2half2(p, q)) == -2.0f && __high2float(__low2half2(p)) == 1.5f &&
             __low2float(__high2half2(p)) == -2.0f && __low2float(__habs2(__hneg2(p))) == 1.5f &&
             __hisnan(__low2half(__hmax2_nan(p, __half2(CUDART_NAN_FP16, 1.0f)))) &&
             __high2float(__hmin2_nan(p, __half2(1.0f, 1.0f))) == -2.0f &&
             __half2float(__low2half(make_half2(h, 0.0f))) == 3.0f,
         "__half2");
  __half2 acc = p;
  acc += q;
  acc -= q;
  acc *= q;
  acc /= q;
  acc = __half2_raw{0x3c00, 0x4000};
  expect(__low2float(acc) == 1.0f && __high2float(acc) == 2.0f && __high2float(+p) == -2.0f,
         "__half2 compound operators");
  const __nv_bfloat162 bp = __floats2bfloat162_rn(1.5f, -2.0f),
                       bq = __halves2bfloat162(0.25f, 4.0f);
  const float2 bsum = __bfloat1622float2(bp + bq);
  expect(bsum.x == 1.75f && bsum.y == 2.0f && __low2float(__hfma2(bp, bq, bp)) == 1.875f &&
             __high2float(bp * bq) == -8.0f &&
             __bfloat162float(__low2bfloat16(__hsub2(bp, bq))) == 1.25f &&
             __bfloat162float(__high2bfloat16(__bfloat162bfloat162(b))) == 2.5f &&
             __bfloat162float(__high2bfloat16(__float22bfloat162_rn(make_float2(1, 7)))) == 7.0f &&
             std::bit_cast<uint32_t>(bp) == 0xc0003fc0u && __high2float(__h2div(bp, bq)) == -0.5f &&
             __low2float(__hmax2(bp, bq)) == 1.5f && __high2float(__hmin2(bp, bq)) == -2.0f &&
             __low2float(__habs2(__hneg2(bp))) == 1.5f && __high2float(-bp) == 2.0f &&
             __hisnan(__high2bfloat16(__hmin2_nan(bp, __nv_bfloat162(1.0f, CUDART_NAN_BF16)))) &&
             __low2float(__hmax2_nan(bp, bq)) == 1.5f &&
             __low2float(__lows2bfloat162(bp, bq)) == 1.5f &&
             __high2float(__highs2bfloat162(bp, bq)) == 4.0f &&
             __low2float(__high2bfloat162(bp)) == -2.0f &&
             __high2float(__low2bfloat162(bp)) == 1.5f &&
             __low2float(__lowhigh2highlow(bp)) == -2.0f &&
             __high2float(__float2bfloat162_rn(3.0f)) == 3.0f &&
             __low2float(make_bfloat162(b, b)) == 2.5f,
         "__nv_bfloat162");
  __nv_bfloat162 bacc = bp;
  bacc += bq;
  bacc -= bq;
  bacc *= bq;
  bacc /= bq;
  expect(__low2float(bacc) == 1.5f && __high2float(+bacc) == -2.0f,
         "__nv_bfloat162 compound operators");

  // Cache-hint loads and stores.
  float cell = 1.5f;
  __stcs(&cell, 2);
  __stwt(&cell, __ldg(&cell) + 1);
  expect(__ldcs(&cell) == 3.0f && __ldcg(&cell) == 3.0f && __ldca(&cell) == 3.0f &&
             __ldlu(&cell) == 3.0f && __ldcv(&cell) == 3.0f,
         "load/store hints");
  __stwb(&cell, 4.0f);
  __stcg(&cell, 5.0f);
  expect(cell == 5.0f, "store hints");
}

}  // namespace

int main() {
  test_half_widening();
  test_bf16_widening();
  test_narrowing();
  test_arithmetic<__half>(kHalf);
  test_arithmetic<__nv_bfloat16>(kBf16);
  test_fma();
  test_unary<__half>(kHalf);
  test_unary<__nv_bfloat16>(kBf16);
  test_integer_conversions();
  test_bit_intrinsics();
  test_float_intrinsics();
  test_min_max();
  test_types();
  if (g_failures != 0) {
    std::fprintf(stderr, "emu types: %lld of %lld checks failed\n",
                 static_cast<long long>(g_failures), static_cast<long long>(g_checks));
    return 1;
  }
  std::printf("emu types: %lld checks passed\n", static_cast<long long>(g_checks));
  return 0;
}
