// CUDA's device-side scalar and vector types and intrinsics, for the SIMT emulator: __half and
// __nv_bfloat16 (and their pairs), the vector types (float4, int2, ...), the integer, bit and
// float intrinsics, min/max, and the CUDART_ constants, with CUDA's names, layouts and results,
// as plain C++ that host and emulated device code share. No CUDA or torch header.
//
// Results. Conversions and half/bfloat16 arithmetic are correctly rounded (ties to even,
// subnormals kept), as the hardware's are. A NaN result is CUDA's canonical NaN: 0x7fff for half
// and bfloat16, and 0x7fffffff for a half widened to float (bfloat16 widens by a shift, keeping
// the payload), as CUDA's own host implementations return. __half and __nv_bfloat16 have nvcc's
// implicit conversions and operators (those that torch's extension build removes with
// __CUDA_NO_HALF_CONVERSIONS__ and friends), so that mixed expressions resolve, or are ambiguous
// (h * 2.0f), as under nvcc rather than silently taking another overload.
//
// Not modelled. Approximate hardware paths are computed accurately here, so their last bits can
// differ from the GPU's: the fast-math intrinsics (__expf, __sinf, __fdividef, ...), rsqrtf, and
// hexp, hsqrt, hrsqrt, hrcp, hsin, hcos and __hdiv, which the GPU builds on rcp/ex2/sqrt.approx.
// No flush-to-zero (-ftz=true). Whether a*b+c contracts into an fma is the host compiler's
// choice (-ffp-contract), not nvcc's, including around the _rn intrinsics. Cache-hint loads and
// stores are plain accesses. IEEE semantics are assumed of the host compiler: no -ffast-math.
#pragma once

// The C++ <math.h> rather than <cmath>: it also declares the float overloads (sqrt(float),
// isnan(float), ...) at global scope, where CUDA has them, so unqualified calls in kernels pick
// the float versions as under nvcc.
#include <math.h>

#include <algorithm>
#include <bit>
#include <cstdint>
#include <limits>
#include <type_traits>

// ---------------------------------------------------------------------------------------------
// Vector types: CUDA's members, sizes and alignments (vector_types.h).

struct char1 {
  signed char x;
};
struct alignas(2) char2 {
  signed char x, y;
};
struct char3 {
  signed char x, y, z;
};
struct alignas(4) char4 {
  signed char x, y, z, w;
};
struct uchar1 {
  unsigned char x;
};
struct alignas(2) uchar2 {
  unsigned char x, y;
};
struct uchar3 {
  unsigned char x, y, z;
};
struct alignas(4) uchar4 {
  unsigned char x, y, z, w;
};
struct short1 {
  short x;
};
struct alignas(4) short2 {
  short x, y;
};
struct short3 {
  short x, y, z;
};
struct alignas(8) short4 {
  short x, y, z, w;
};
struct ushort1 {
  unsigned short x;
};
struct alignas(4) ushort2 {
  unsigned short x, y;
};
struct ushort3 {
  unsigned short x, y, z;
};
struct alignas(8) ushort4 {
  unsigned short x, y, z, w;
};
struct int1 {
  int x;
};
struct alignas(8) int2 {
  int x, y;
};
struct int3 {
  int x, y, z;
};
struct alignas(16) int4 {
  int x, y, z, w;
};
struct uint1 {
  unsigned int x;
};
struct alignas(8) uint2 {
  unsigned int x, y;
};
struct uint3 {
  unsigned int x, y, z;
};
struct alignas(16) uint4 {
  unsigned int x, y, z, w;
};
struct longlong1 {
  long long x;
};
struct alignas(16) longlong2 {
  long long x, y;
};
struct longlong3 {
  long long x, y, z;
};
struct alignas(16) longlong4 {
  long long x, y, z, w;
};
struct ulonglong1 {
  unsigned long long x;
};
struct alignas(16) ulonglong2 {
  unsigned long long x, y;
};
struct ulonglong3 {
  unsigned long long x, y, z;
};
struct alignas(16) ulonglong4 {
  unsigned long long x, y, z, w;
};
struct float1 {
  float x;
};
struct alignas(8) float2 {
  float x, y;
};
struct float3 {
  float x, y, z;
};
struct alignas(16) float4 {
  float x, y, z, w;
};
struct double1 {
  double x;
};
struct alignas(16) double2 {
  double x, y;
};
struct double3 {
  double x, y, z;
};
struct alignas(16) double4 {
  double x, y, z, w;
};

constexpr char1 make_char1(signed char x) { return {x}; }
constexpr char2 make_char2(signed char x, signed char y) { return {x, y}; }
constexpr char3 make_char3(signed char x, signed char y, signed char z) { return {x, y, z}; }
constexpr char4 make_char4(signed char x, signed char y, signed char z, signed char w) {
  return {x, y, z, w};
}
constexpr uchar1 make_uchar1(unsigned char x) { return {x}; }
constexpr uchar2 make_uchar2(unsigned char x, unsigned char y) { return {x, y}; }
constexpr uchar3 make_uchar3(unsigned char x, unsigned char y, unsigned char z) {
  return {x, y, z};
}
constexpr uchar4 make_uchar4(unsigned char x, unsigned char y, unsigned char z, unsigned char w) {
  return {x, y, z, w};
}
constexpr short1 make_short1(short x) { return {x}; }
constexpr short2 make_short2(short x, short y) { return {x, y}; }
constexpr short3 make_short3(short x, short y, short z) { return {x, y, z}; }
constexpr short4 make_short4(short x, short y, short z, short w) { return {x, y, z, w}; }
constexpr ushort1 make_ushort1(unsigned short x) { return {x}; }
constexpr ushort2 make_ushort2(unsigned short x, unsigned short y) { return {x, y}; }
constexpr ushort3 make_ushort3(unsigned short x, unsigned short y, unsigned short z) {
  return {x, y, z};
}
constexpr ushort4 make_ushort4(unsigned short x, unsigned short y, unsigned short z,
                               unsigned short w) {
  return {x, y, z, w};
}
constexpr int1 make_int1(int x) { return {x}; }
constexpr int2 make_int2(int x, int y) { return {x, y}; }
constexpr int3 make_int3(int x, int y, int z) { return {x, y, z}; }
constexpr int4 make_int4(int x, int y, int z, int w) { return {x, y, z, w}; }
constexpr uint1 make_uint1(unsigned int x) { return {x}; }
constexpr uint2 make_uint2(unsigned int x, unsigned int y) { return {x, y}; }
constexpr uint3 make_uint3(unsigned int x, unsigned int y, unsigned int z) { return {x, y, z}; }
constexpr uint4 make_uint4(unsigned int x, unsigned int y, unsigned int z, unsigned int w) {
  return {x, y, z, w};
}
constexpr longlong1 make_longlong1(long long x) { return {x}; }
constexpr longlong2 make_longlong2(long long x, long long y) { return {x, y}; }
constexpr longlong3 make_longlong3(long long x, long long y, long long z) { return {x, y, z}; }
constexpr longlong4 make_longlong4(long long x, long long y, long long z, long long w) {
  return {x, y, z, w};
}
constexpr ulonglong1 make_ulonglong1(unsigned long long x) { return {x}; }
constexpr ulonglong2 make_ulonglong2(unsigned long long x, unsigned long long y) { return {x, y}; }
constexpr ulonglong3 make_ulonglong3(unsigned long long x, unsigned long long y,
                                     unsigned long long z) {
  return {x, y, z};
}
constexpr ulonglong4 make_ulonglong4(unsigned long long x, unsigned long long y,
                                     unsigned long long z, unsigned long long w) {
  return {x, y, z, w};
}
constexpr float1 make_float1(float x) { return {x}; }
constexpr float2 make_float2(float x, float y) { return {x, y}; }
constexpr float3 make_float3(float x, float y, float z) { return {x, y, z}; }
constexpr float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
constexpr double1 make_double1(double x) { return {x}; }
constexpr double2 make_double2(double x, double y) { return {x, y}; }
constexpr double3 make_double3(double x, double y, double z) { return {x, y, z}; }
constexpr double4 make_double4(double x, double y, double z, double w) { return {x, y, z, w}; }

// ---------------------------------------------------------------------------------------------
// Rounding machinery for the 16-bit formats.

namespace fl::emu::types_impl {

enum class Round { kNearest, kZero, kDown, kUp };

// The bits of v rounded per `mode` to the format with 1 sign, kExp exponent and kMan mantissa
// bits (IEEE layout: half is <5, 10>, bfloat16 <8, 7>), straight from double, so a double that
// is exact or rounded to odd (below) is rounded once.
template <int kExp, int kMan>
inline uint16_t round_to(double v, Round mode) {
  constexpr int kBias = (1 << (kExp - 1)) - 1;
  constexpr unsigned kInf = ((1u << kExp) - 1) << kMan;
  const uint64_t bits = std::bit_cast<uint64_t>(v);
  const bool negative = (bits >> 63) != 0;
  const unsigned sign = negative ? 0x8000u : 0u;
  const int biased = int(bits >> 52) & 0x7ff;
  const uint64_t frac = bits & ((uint64_t(1) << 52) - 1);
  if (biased == 0x7ff) return frac != 0 ? uint16_t(0x7fff) : uint16_t(sign | kInf);
  // A directed rounding that moves this value away from zero.
  const bool outward = (mode == Round::kUp && !negative) || (mode == Round::kDown && negative);
  if (biased - 1023 > kBias) {  // |v| >= 2^(kBias + 1): past the largest finite value
    return uint16_t(sign | (mode == Round::kNearest || outward ? kInf : kInf - 1));
  }
  // The magnitude in units of the format's ulp at its exponent (the implicit bit included), so
  // that (field << kMan) + kept encodes it, a carry out of the mantissa bumping the exponent.
  unsigned field = 0, kept = 0;
  bool above_half = false, at_half = false, inexact = frac != 0;
  if (biased != 0) {  // else zero or a double subnormal, far below the format's smallest value
    const int exp = biased - 1023;
    const uint64_t m = frac | (uint64_t(1) << 52);
    const int shift = 52 - kMan + std::max(0, 1 - kBias - exp);
    if (shift < 64) {
      kept = unsigned(m >> shift);
      const uint64_t rest = m & ((uint64_t(1) << shift) - 1);
      const uint64_t half = uint64_t(1) << (shift - 1);
      above_half = rest > half;
      at_half = rest == half;
      inexact = rest != 0;
    } else {
      inexact = true;
    }
    field = unsigned(std::max(exp, 1 - kBias) + kBias - 1);
  }
  bool up = false;
  switch (mode) {
    case Round::kNearest: up = above_half || (at_half && (kept & 1) != 0); break;
    case Round::kZero: break;
    case Round::kDown:
    case Round::kUp: up = inexact && outward; break;
  }
  return uint16_t(sign | ((field << kMan) + kept + unsigned(up)));
}

inline uint16_t half_bits(double v, Round mode = Round::kNearest) {
  return round_to<5, 10>(v, mode);
}
inline uint16_t bf16_bits(double v, Round mode = Round::kNearest) {
  return round_to<8, 7>(v, mode);
}

inline float half_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
  if (exp == 0x1f) return std::bit_cast<float>(man != 0 ? 0x7fffffffu : sign | 0x7f800000u);
  if (exp == 0) return std::bit_cast<float>(sign | std::bit_cast<uint32_t>(float(man) * 0x1p-24f));
  return std::bit_cast<float>(sign | ((exp + 112) << 23) | (man << 13));
}
inline float bf16_to_float(uint16_t b) { return std::bit_cast<float>(uint32_t(b) << 16); }

// Round to odd: r = RN(exact) with err = exact - r (only its sign matters). The odd last bit
// records inexactness, so rounding the result again to a format with at least two bits fewer
// (half, bfloat16: at most 11 of 53) is the correctly rounded exact value (Boldo & Melquiond).
inline double to_odd(double r, double err) {
  if (err == 0 || (std::bit_cast<uint64_t>(r) & 1) != 0) return r;
  return std::nextafter(r, err > 0 ? HUGE_VAL : -HUGE_VAL);
}
// x + y rounded to odd, for an fma whose exact sum can need more than double's 53 bits.
inline double sum_odd(double x, double y) {
  const double s = x + y;
  if (!std::isfinite(s)) return s;
  const double y_part = s - x;  // TwoSum: s + err == x + y exactly
  return to_odd(s, (x - (s - y_part)) + (y - y_part));
}

// A 64-bit integer rounded to odd in double: the exact value when it fits in 53 bits.
template <class I>
inline double integer_odd(I i) {
  const double d = static_cast<double>(i);
  __extension__ using Wide = __int128;
  const Wide err = Wide(i) - Wide(d);
  return to_odd(d, err > 0 ? 1.0 : err < 0 ? -1.0 : 0.0);
}

// CUDA's float-to-integer conversion: saturating; NaN gives 0, or 0x8000000000000000 for 64-bit
// results, as the hardware does.
template <class I>
inline I to_integer(double v, Round mode) {
  if (std::isnan(v)) return sizeof(I) == 8 ? I(uint64_t(1) << 63) : I(0);
  const double r = mode == Round::kNearest ? __builtin_roundeven(v)
                   : mode == Round::kZero  ? std::trunc(v)
                   : mode == Round::kDown  ? std::floor(v)
                                           : std::ceil(v);
  constexpr double kEnd = 2.0 * double(uint64_t(1) << (std::numeric_limits<I>::digits - 1));
  if (r < double(std::numeric_limits<I>::min())) return std::numeric_limits<I>::min();
  if (r >= kEnd) return std::numeric_limits<I>::max();
  return static_cast<I>(r);
}

}  // namespace fl::emu::types_impl

// ---------------------------------------------------------------------------------------------
// __half and __nv_bfloat16. The bits are the public member __x (protected in CUDA).

struct alignas(2) __half_raw {
  unsigned short x;
};
struct alignas(4) __half2_raw {
  unsigned short x, y;
};
struct alignas(2) __nv_bfloat16_raw {
  unsigned short x;
};
struct alignas(4) __nv_bfloat162_raw {
  unsigned short x, y;
};

struct alignas(2) __half {
  unsigned short __x;

  __half() = default;
  constexpr __half(const __half_raw& r) : __x(r.x) {}
  __half& operator=(const __half_raw& r) {
    __x = r.x;
    return *this;
  }
  // So that volatile (shared-memory) halves can be read and written, as in CUDA. CUDA's return
  // volatile __half&, which GCC warns about in every such assignment statement.
  void operator=(const __half_raw& r) volatile { __x = r.x; }
  void operator=(const volatile __half_raw& r) volatile { __x = r.x; }
  constexpr operator __half_raw() const { return {__x}; }
  operator __half_raw() const volatile { return {__x}; }

  __half(float f) : __x(fl::emu::types_impl::half_bits(f)) {}
  __half(double d) : __x(fl::emu::types_impl::half_bits(d)) {}
  __half(short i) : __x(fl::emu::types_impl::half_bits(i)) {}
  __half(unsigned short i) : __x(fl::emu::types_impl::half_bits(i)) {}
  __half(int i) : __x(fl::emu::types_impl::half_bits(i)) {}
  __half(unsigned int i) : __x(fl::emu::types_impl::half_bits(i)) {}
  __half(long i) : __x(fl::emu::types_impl::half_bits(fl::emu::types_impl::integer_odd(i))) {}
  __half(unsigned long i)
      : __x(fl::emu::types_impl::half_bits(fl::emu::types_impl::integer_odd(i))) {}
  __half(long long i) : __x(fl::emu::types_impl::half_bits(fl::emu::types_impl::integer_odd(i))) {}
  __half(unsigned long long i)
      : __x(fl::emu::types_impl::half_bits(fl::emu::types_impl::integer_odd(i))) {}

  operator float() const { return fl::emu::types_impl::half_to_float(__x); }
  operator short() const { return to<short>(); }
  operator unsigned short() const { return to<unsigned short>(); }
  operator int() const { return to<int>(); }
  operator unsigned int() const { return to<unsigned int>(); }
  operator long() const { return to<long>(); }
  operator unsigned long() const { return to<unsigned long>(); }
  operator long long() const { return to<long long>(); }
  operator unsigned long long() const { return to<unsigned long long>(); }
  operator bool() const { return (__x & 0x7fffu) != 0; }

 private:
  template <class I>
  I to() const {
    return fl::emu::types_impl::to_integer<I>(fl::emu::types_impl::half_to_float(__x),
                                              fl::emu::types_impl::Round::kZero);
  }
};

struct alignas(2) __nv_bfloat16 {
  unsigned short __x;

  __nv_bfloat16() = default;
  constexpr __nv_bfloat16(const __nv_bfloat16_raw& r) : __x(r.x) {}
  __nv_bfloat16& operator=(const __nv_bfloat16_raw& r) {
    __x = r.x;
    return *this;
  }
  void operator=(const __nv_bfloat16_raw& r) volatile { __x = r.x; }
  void operator=(const volatile __nv_bfloat16_raw& r) volatile { __x = r.x; }
  constexpr operator __nv_bfloat16_raw() const { return {__x}; }
  operator __nv_bfloat16_raw() const volatile { return {__x}; }

  __nv_bfloat16(float f) : __x(fl::emu::types_impl::bf16_bits(f)) {}
  __nv_bfloat16(double d) : __x(fl::emu::types_impl::bf16_bits(d)) {}
  __nv_bfloat16(short i) : __x(fl::emu::types_impl::bf16_bits(i)) {}
  __nv_bfloat16(unsigned short i) : __x(fl::emu::types_impl::bf16_bits(i)) {}
  __nv_bfloat16(int i) : __x(fl::emu::types_impl::bf16_bits(i)) {}
  __nv_bfloat16(unsigned int i) : __x(fl::emu::types_impl::bf16_bits(i)) {}
  __nv_bfloat16(long i)
      : __x(fl::emu::types_impl::bf16_bits(fl::emu::types_impl::integer_odd(i))) {}
  __nv_bfloat16(unsigned long i)
      : __x(fl::emu::types_impl::bf16_bits(fl::emu::types_impl::integer_odd(i))) {}
  __nv_bfloat16(long long i)
      : __x(fl::emu::types_impl::bf16_bits(fl::emu::types_impl::integer_odd(i))) {}
  __nv_bfloat16(unsigned long long i)
      : __x(fl::emu::types_impl::bf16_bits(fl::emu::types_impl::integer_odd(i))) {}

  operator float() const { return fl::emu::types_impl::bf16_to_float(__x); }
  operator short() const { return to<short>(); }
  operator unsigned short() const { return to<unsigned short>(); }
  operator int() const { return to<int>(); }
  operator unsigned int() const { return to<unsigned int>(); }
  operator long() const { return to<long>(); }
  operator unsigned long() const { return to<unsigned long>(); }
  operator long long() const { return to<long long>(); }
  operator unsigned long long() const { return to<unsigned long long>(); }
  operator bool() const { return (__x & 0x7fffu) != 0; }

 private:
  template <class I>
  I to() const {
    return fl::emu::types_impl::to_integer<I>(fl::emu::types_impl::bf16_to_float(__x),
                                              fl::emu::types_impl::Round::kZero);
  }
};

struct alignas(4) __half2 {
  __half x, y;

  __half2() = default;
  constexpr __half2(const __half& a, const __half& b) : x(a), y(b) {}
  constexpr __half2(const __half2_raw& r) : x(__half_raw{r.x}), y(__half_raw{r.y}) {}
  __half2& operator=(const __half2_raw& r) { return *this = __half2(r); }
  constexpr operator __half2_raw() const { return {x.__x, y.__x}; }
};

struct alignas(4) __nv_bfloat162 {
  __nv_bfloat16 x, y;

  __nv_bfloat162() = default;
  constexpr __nv_bfloat162(const __nv_bfloat16& a, const __nv_bfloat16& b) : x(a), y(b) {}
  constexpr __nv_bfloat162(const __nv_bfloat162_raw& r)
      : x(__nv_bfloat16_raw{r.x}), y(__nv_bfloat16_raw{r.y}) {}
  __nv_bfloat162& operator=(const __nv_bfloat162_raw& r) { return *this = __nv_bfloat162(r); }
  constexpr operator __nv_bfloat162_raw() const { return {x.__x, y.__x}; }
};

using half = __half;
using half2 = __half2;
using nv_half = __half;
using nv_half2 = __half2;
using __nv_half = __half;
using __nv_half2 = __half2;
using __nv_half_raw = __half_raw;
using __nv_half2_raw = __half2_raw;
using nv_bfloat16 = __nv_bfloat16;
using nv_bfloat162 = __nv_bfloat162;

namespace fl::emu::types_impl {

// What distinguishes the two formats; everything else is shared.
template <class T>
struct Format;
template <>
struct Format<__half> {
  static constexpr int kExp = 5, kMan = 10;
  static float widen(uint16_t b) { return half_to_float(b); }
};
template <>
struct Format<__nv_bfloat16> {
  static constexpr int kExp = 8, kMan = 7;
  static float widen(uint16_t b) { return bf16_to_float(b); }
};

template <class T>
inline T from_bits(unsigned bits) {
  T t;
  t.__x = static_cast<unsigned short>(bits);
  return t;
}
template <class T>
inline double value(T a) {
  return Format<T>::widen(a.__x);
}
template <class T>
inline T rounded(double v, Round mode = Round::kNearest) {
  return from_bits<T>(round_to<Format<T>::kExp, Format<T>::kMan>(v, mode));
}
template <class T>
inline bool is_nan(T a) {
  return (a.__x & 0x7fffu) > (((1u << Format<T>::kExp) - 1) << Format<T>::kMan);
}
template <class T>
inline T canonical_nan() {
  return from_bits<T>(0x7fff);
}

// One rounding, to the format. A product of two 16-bit values is exact in double. A sum,
// quotient or square root is rounded to double first, but with p <= 11 significant bits in the
// format, double's 53 >= 2p + 2 make that rounding innocuous (Figueroa, 1995). Not so for fma,
// whose bfloat16 sum can span hundreds of bits: that sum is rounded to odd instead.
template <class T>
inline T add(T a, T b) {
  return rounded<T>(value(a) + value(b));
}
template <class T>
inline T sub(T a, T b) {
  return rounded<T>(value(a) - value(b));
}
template <class T>
inline T mul(T a, T b) {
  return rounded<T>(value(a) * value(b));
}
template <class T>
inline T div(T a, T b) {
  return rounded<T>(value(a) / value(b));
}
template <class T>
inline T fma(T a, T b, T c) {
  return rounded<T>(sum_odd(value(a) * value(b), value(c)));
}
template <class T>
inline T neg(T a) {
  return is_nan(a) ? canonical_nan<T>() : from_bits<T>(a.__x ^ 0x8000u);
}
template <class T>
inline T abs(T a) {
  return is_nan(a) ? canonical_nan<T>() : from_bits<T>(a.__x & 0x7fffu);
}
// IEEE maximumNumber: a NaN loses to a number, and +0 > -0.
template <class T>
inline T maximum(T a, T b) {
  if (is_nan(a)) return is_nan(b) ? canonical_nan<T>() : b;
  if (is_nan(b)) return a;
  const double x = value(a), y = value(b);
  if (x == y) return std::signbit(x) ? b : a;
  return x > y ? a : b;
}
template <class T>
inline T minimum(T a, T b) {
  if (is_nan(a)) return is_nan(b) ? canonical_nan<T>() : b;
  if (is_nan(b)) return a;
  const double x = value(a), y = value(b);
  if (x == y) return std::signbit(x) ? a : b;
  return x < y ? a : b;
}
template <class T>
inline T max_nan(T a, T b) {
  return is_nan(a) || is_nan(b) ? canonical_nan<T>() : maximum(a, b);
}
template <class T>
inline T min_nan(T a, T b) {
  return is_nan(a) || is_nan(b) ? canonical_nan<T>() : minimum(a, b);
}
template <class T>
inline int is_inf(T a) {
  constexpr unsigned kInf = ((1u << Format<T>::kExp) - 1) << Format<T>::kMan;
  return a.__x == kInf ? 1 : a.__x == (kInf | 0x8000u) ? -1 : 0;
}
template <class I, class T>
inline I to_int(T a, Round mode) {
  return to_integer<I>(value(a), mode);
}

}  // namespace fl::emu::types_impl

// Bit reinterpretation.
inline unsigned short __half_as_ushort(__half h) { return h.__x; }
inline short __half_as_short(__half h) { return static_cast<short>(h.__x); }
inline __half __ushort_as_half(unsigned short i) { return __half_raw{i}; }
inline __half __short_as_half(short i) { return __half_raw{static_cast<unsigned short>(i)}; }
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h) { return h.__x; }
inline short __bfloat16_as_short(__nv_bfloat16 h) { return static_cast<short>(h.__x); }
inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short i) { return __nv_bfloat16_raw{i}; }
inline __nv_bfloat16 __short_as_bfloat16(short i) {
  return __nv_bfloat16_raw{static_cast<unsigned short>(i)};
}

// Conversions to and from float and double.
inline float __half2float(__half h) { return fl::emu::types_impl::half_to_float(h.__x); }
inline float __bfloat162float(__nv_bfloat16 h) { return fl::emu::types_impl::bf16_to_float(h.__x); }
inline __half __float2half(float f) { return __half(f); }
inline __half __float2half_rn(float f) { return __half(f); }
inline __half __float2half_rz(float f) {
  return fl::emu::types_impl::rounded<__half>(f, fl::emu::types_impl::Round::kZero);
}
inline __half __float2half_rd(float f) {
  return fl::emu::types_impl::rounded<__half>(f, fl::emu::types_impl::Round::kDown);
}
inline __half __float2half_ru(float f) {
  return fl::emu::types_impl::rounded<__half>(f, fl::emu::types_impl::Round::kUp);
}
inline __half __double2half(double d) { return __half(d); }
inline __nv_bfloat16 __float2bfloat16(float f) { return __nv_bfloat16(f); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __nv_bfloat16(f); }
inline __nv_bfloat16 __float2bfloat16_rz(float f) {
  return fl::emu::types_impl::rounded<__nv_bfloat16>(f, fl::emu::types_impl::Round::kZero);
}
inline __nv_bfloat16 __float2bfloat16_rd(float f) {
  return fl::emu::types_impl::rounded<__nv_bfloat16>(f, fl::emu::types_impl::Round::kDown);
}
inline __nv_bfloat16 __float2bfloat16_ru(float f) {
  return fl::emu::types_impl::rounded<__nv_bfloat16>(f, fl::emu::types_impl::Round::kUp);
}
inline __nv_bfloat16 __double2bfloat16(double d) { return __nv_bfloat16(d); }

// Conversions to and from integers.
inline __half __int2half_rn(int i) { return __half(i); }
inline __half __int2half_rz(int i) {
  return fl::emu::types_impl::rounded<__half>(i, fl::emu::types_impl::Round::kZero);
}
inline __half __int2half_rd(int i) {
  return fl::emu::types_impl::rounded<__half>(i, fl::emu::types_impl::Round::kDown);
}
inline __half __int2half_ru(int i) {
  return fl::emu::types_impl::rounded<__half>(i, fl::emu::types_impl::Round::kUp);
}
inline __half __uint2half_rn(unsigned int i) { return __half(i); }
inline __half __short2half_rn(short i) { return __half(i); }
inline __half __ushort2half_rn(unsigned short i) { return __half(i); }
inline __half __ll2half_rn(long long i) { return __half(i); }
inline __half __ull2half_rn(unsigned long long i) { return __half(i); }
inline __nv_bfloat16 __int2bfloat16_rn(int i) { return __nv_bfloat16(i); }
inline __nv_bfloat16 __int2bfloat16_rz(int i) {
  return fl::emu::types_impl::rounded<__nv_bfloat16>(i, fl::emu::types_impl::Round::kZero);
}
inline __nv_bfloat16 __int2bfloat16_rd(int i) {
  return fl::emu::types_impl::rounded<__nv_bfloat16>(i, fl::emu::types_impl::Round::kDown);
}
inline __nv_bfloat16 __int2bfloat16_ru(int i) {
  return fl::emu::types_impl::rounded<__nv_bfloat16>(i, fl::emu::types_impl::Round::kUp);
}
inline __nv_bfloat16 __uint2bfloat16_rn(unsigned int i) { return __nv_bfloat16(i); }
inline __nv_bfloat16 __short2bfloat16_rn(short i) { return __nv_bfloat16(i); }
inline __nv_bfloat16 __ushort2bfloat16_rn(unsigned short i) { return __nv_bfloat16(i); }
inline __nv_bfloat16 __ll2bfloat16_rn(long long i) { return __nv_bfloat16(i); }
inline __nv_bfloat16 __ull2bfloat16_rn(unsigned long long i) { return __nv_bfloat16(i); }

inline int __half2int_rn(__half h) {
  return fl::emu::types_impl::to_int<int>(h, fl::emu::types_impl::Round::kNearest);
}
inline int __half2int_rz(__half h) {
  return fl::emu::types_impl::to_int<int>(h, fl::emu::types_impl::Round::kZero);
}
inline int __half2int_rd(__half h) {
  return fl::emu::types_impl::to_int<int>(h, fl::emu::types_impl::Round::kDown);
}
inline int __half2int_ru(__half h) {
  return fl::emu::types_impl::to_int<int>(h, fl::emu::types_impl::Round::kUp);
}
inline unsigned int __half2uint_rn(__half h) {
  return fl::emu::types_impl::to_int<unsigned int>(h, fl::emu::types_impl::Round::kNearest);
}
inline unsigned int __half2uint_rz(__half h) {
  return fl::emu::types_impl::to_int<unsigned int>(h, fl::emu::types_impl::Round::kZero);
}
inline short __half2short_rn(__half h) {
  return fl::emu::types_impl::to_int<short>(h, fl::emu::types_impl::Round::kNearest);
}
inline short __half2short_rz(__half h) {
  return fl::emu::types_impl::to_int<short>(h, fl::emu::types_impl::Round::kZero);
}
inline unsigned short __half2ushort_rn(__half h) {
  return fl::emu::types_impl::to_int<unsigned short>(h, fl::emu::types_impl::Round::kNearest);
}
inline unsigned short __half2ushort_rz(__half h) {
  return fl::emu::types_impl::to_int<unsigned short>(h, fl::emu::types_impl::Round::kZero);
}
inline long long __half2ll_rn(__half h) {
  return fl::emu::types_impl::to_int<long long>(h, fl::emu::types_impl::Round::kNearest);
}
inline long long __half2ll_rz(__half h) {
  return fl::emu::types_impl::to_int<long long>(h, fl::emu::types_impl::Round::kZero);
}
inline unsigned long long __half2ull_rn(__half h) {
  return fl::emu::types_impl::to_int<unsigned long long>(h, fl::emu::types_impl::Round::kNearest);
}
inline unsigned long long __half2ull_rz(__half h) {
  return fl::emu::types_impl::to_int<unsigned long long>(h, fl::emu::types_impl::Round::kZero);
}
inline int __bfloat162int_rn(__nv_bfloat16 h) {
  return fl::emu::types_impl::to_int<int>(h, fl::emu::types_impl::Round::kNearest);
}
inline int __bfloat162int_rz(__nv_bfloat16 h) {
  return fl::emu::types_impl::to_int<int>(h, fl::emu::types_impl::Round::kZero);
}
inline int __bfloat162int_rd(__nv_bfloat16 h) {
  return fl::emu::types_impl::to_int<int>(h, fl::emu::types_impl::Round::kDown);
}
inline int __bfloat162int_ru(__nv_bfloat16 h) {
  return fl::emu::types_impl::to_int<int>(h, fl::emu::types_impl::Round::kUp);
}
inline unsigned int __bfloat162uint_rn(__nv_bfloat16 h) {
  return fl::emu::types_impl::to_int<unsigned int>(h, fl::emu::types_impl::Round::kNearest);
}
inline unsigned int __bfloat162uint_rz(__nv_bfloat16 h) {
  return fl::emu::types_impl::to_int<unsigned int>(h, fl::emu::types_impl::Round::kZero);
}
inline short __bfloat162short_rn(__nv_bfloat16 h) {
  return fl::emu::types_impl::to_int<short>(h, fl::emu::types_impl::Round::kNearest);
}
inline short __bfloat162short_rz(__nv_bfloat16 h) {
  return fl::emu::types_impl::to_int<short>(h, fl::emu::types_impl::Round::kZero);
}
inline unsigned short __bfloat162ushort_rn(__nv_bfloat16 h) {
  return fl::emu::types_impl::to_int<unsigned short>(h, fl::emu::types_impl::Round::kNearest);
}
inline unsigned short __bfloat162ushort_rz(__nv_bfloat16 h) {
  return fl::emu::types_impl::to_int<unsigned short>(h, fl::emu::types_impl::Round::kZero);
}
inline long long __bfloat162ll_rn(__nv_bfloat16 h) {
  return fl::emu::types_impl::to_int<long long>(h, fl::emu::types_impl::Round::kNearest);
}
inline long long __bfloat162ll_rz(__nv_bfloat16 h) {
  return fl::emu::types_impl::to_int<long long>(h, fl::emu::types_impl::Round::kZero);
}
inline unsigned long long __bfloat162ull_rn(__nv_bfloat16 h) {
  return fl::emu::types_impl::to_int<unsigned long long>(h, fl::emu::types_impl::Round::kNearest);
}
inline unsigned long long __bfloat162ull_rz(__nv_bfloat16 h) {
  return fl::emu::types_impl::to_int<unsigned long long>(h, fl::emu::types_impl::Round::kZero);
}

// Arithmetic. The same names serve both types, as in CUDA; the _rn forms exist in CUDA to keep
// nvcc from contracting them into an fma, which the host compiler does not do across calls.
inline __half __hadd(__half a, __half b) { return fl::emu::types_impl::add(a, b); }
inline __half __hsub(__half a, __half b) { return fl::emu::types_impl::sub(a, b); }
inline __half __hmul(__half a, __half b) { return fl::emu::types_impl::mul(a, b); }
inline __half __hdiv(__half a, __half b) { return fl::emu::types_impl::div(a, b); }
inline __half __hadd_rn(__half a, __half b) { return fl::emu::types_impl::add(a, b); }
inline __half __hsub_rn(__half a, __half b) { return fl::emu::types_impl::sub(a, b); }
inline __half __hmul_rn(__half a, __half b) { return fl::emu::types_impl::mul(a, b); }
inline __half __hfma(__half a, __half b, __half c) { return fl::emu::types_impl::fma(a, b, c); }
inline __half __hneg(__half a) { return fl::emu::types_impl::neg(a); }
inline __half __habs(__half a) { return fl::emu::types_impl::abs(a); }
inline __half __hmax(__half a, __half b) { return fl::emu::types_impl::maximum(a, b); }
inline __half __hmin(__half a, __half b) { return fl::emu::types_impl::minimum(a, b); }
inline __half __hmax_nan(__half a, __half b) { return fl::emu::types_impl::max_nan(a, b); }
inline __half __hmin_nan(__half a, __half b) { return fl::emu::types_impl::min_nan(a, b); }
inline __nv_bfloat16 __hadd(__nv_bfloat16 a, __nv_bfloat16 b) {
  return fl::emu::types_impl::add(a, b);
}
inline __nv_bfloat16 __hsub(__nv_bfloat16 a, __nv_bfloat16 b) {
  return fl::emu::types_impl::sub(a, b);
}
inline __nv_bfloat16 __hmul(__nv_bfloat16 a, __nv_bfloat16 b) {
  return fl::emu::types_impl::mul(a, b);
}
inline __nv_bfloat16 __hdiv(__nv_bfloat16 a, __nv_bfloat16 b) {
  return fl::emu::types_impl::div(a, b);
}
inline __nv_bfloat16 __hadd_rn(__nv_bfloat16 a, __nv_bfloat16 b) {
  return fl::emu::types_impl::add(a, b);
}
inline __nv_bfloat16 __hsub_rn(__nv_bfloat16 a, __nv_bfloat16 b) {
  return fl::emu::types_impl::sub(a, b);
}
inline __nv_bfloat16 __hmul_rn(__nv_bfloat16 a, __nv_bfloat16 b) {
  return fl::emu::types_impl::mul(a, b);
}
inline __nv_bfloat16 __hfma(__nv_bfloat16 a, __nv_bfloat16 b, __nv_bfloat16 c) {
  return fl::emu::types_impl::fma(a, b, c);
}
inline __nv_bfloat16 __hneg(__nv_bfloat16 a) { return fl::emu::types_impl::neg(a); }
inline __nv_bfloat16 __habs(__nv_bfloat16 a) { return fl::emu::types_impl::abs(a); }
inline __nv_bfloat16 __hmax(__nv_bfloat16 a, __nv_bfloat16 b) {
  return fl::emu::types_impl::maximum(a, b);
}
inline __nv_bfloat16 __hmin(__nv_bfloat16 a, __nv_bfloat16 b) {
  return fl::emu::types_impl::minimum(a, b);
}
inline __nv_bfloat16 __hmax_nan(__nv_bfloat16 a, __nv_bfloat16 b) {
  return fl::emu::types_impl::max_nan(a, b);
}
inline __nv_bfloat16 __hmin_nan(__nv_bfloat16 a, __nv_bfloat16 b) {
  return fl::emu::types_impl::min_nan(a, b);
}

// Comparisons: ordered (false on NaN), and the unordered ...u forms (true on NaN).
inline bool __heq(__half a, __half b) { return __half2float(a) == __half2float(b); }
inline bool __hne(__half a, __half b) {
  return __half2float(a) < __half2float(b) || __half2float(a) > __half2float(b);
}
inline bool __hlt(__half a, __half b) { return __half2float(a) < __half2float(b); }
inline bool __hle(__half a, __half b) { return __half2float(a) <= __half2float(b); }
inline bool __hgt(__half a, __half b) { return __half2float(a) > __half2float(b); }
inline bool __hge(__half a, __half b) { return __half2float(a) >= __half2float(b); }
inline bool __hequ(__half a, __half b) { return !__hne(a, b); }
inline bool __hneu(__half a, __half b) { return !__heq(a, b); }
inline bool __hltu(__half a, __half b) { return !__hge(a, b); }
inline bool __hleu(__half a, __half b) { return !__hgt(a, b); }
inline bool __hgtu(__half a, __half b) { return !__hle(a, b); }
inline bool __hgeu(__half a, __half b) { return !__hlt(a, b); }
inline bool __hisnan(__half a) { return fl::emu::types_impl::is_nan(a); }
inline int __hisinf(__half a) { return fl::emu::types_impl::is_inf(a); }
inline bool __heq(__nv_bfloat16 a, __nv_bfloat16 b) {
  return __bfloat162float(a) == __bfloat162float(b);
}
inline bool __hne(__nv_bfloat16 a, __nv_bfloat16 b) {
  return __bfloat162float(a) < __bfloat162float(b) || __bfloat162float(a) > __bfloat162float(b);
}
inline bool __hlt(__nv_bfloat16 a, __nv_bfloat16 b) {
  return __bfloat162float(a) < __bfloat162float(b);
}
inline bool __hle(__nv_bfloat16 a, __nv_bfloat16 b) {
  return __bfloat162float(a) <= __bfloat162float(b);
}
inline bool __hgt(__nv_bfloat16 a, __nv_bfloat16 b) {
  return __bfloat162float(a) > __bfloat162float(b);
}
inline bool __hge(__nv_bfloat16 a, __nv_bfloat16 b) {
  return __bfloat162float(a) >= __bfloat162float(b);
}
inline bool __hequ(__nv_bfloat16 a, __nv_bfloat16 b) { return !__hne(a, b); }
inline bool __hneu(__nv_bfloat16 a, __nv_bfloat16 b) { return !__heq(a, b); }
inline bool __hltu(__nv_bfloat16 a, __nv_bfloat16 b) { return !__hge(a, b); }
inline bool __hleu(__nv_bfloat16 a, __nv_bfloat16 b) { return !__hgt(a, b); }
inline bool __hgtu(__nv_bfloat16 a, __nv_bfloat16 b) { return !__hle(a, b); }
inline bool __hgeu(__nv_bfloat16 a, __nv_bfloat16 b) { return !__hlt(a, b); }
inline bool __hisnan(__nv_bfloat16 a) { return fl::emu::types_impl::is_nan(a); }
inline int __hisinf(__nv_bfloat16 a) { return fl::emu::types_impl::is_inf(a); }

// Math functions, rounded once from double (see the header comment on the GPU's approximations).
namespace fl::emu::types_impl {
template <class T, class F>
inline T apply(T a, F f) {
  return rounded<T>(f(value(a)));
}
}  // namespace fl::emu::types_impl
inline __half hexp(__half a) {
  return fl::emu::types_impl::apply(a, [](double x) { return std::exp(x); });
}
inline __half hexp2(__half a) {
  return fl::emu::types_impl::apply(a, [](double x) { return std::exp2(x); });
}
inline __half hexp10(__half a) {
  return fl::emu::types_impl::apply(a, [](double x) { return std::pow(10.0, x); });
}
inline __half hlog(__half a) {
  return fl::emu::types_impl::apply(a, [](double x) { return std::log(x); });
}
inline __half hlog2(__half a) {
  return fl::emu::types_impl::apply(a, [](double x) { return std::log2(x); });
}
inline __half hlog10(__half a) {
  return fl::emu::types_impl::apply(a, [](double x) { return std::log10(x); });
}
inline __half hsqrt(__half a) {
  return fl::emu::types_impl::apply(a, [](double x) { return std::sqrt(x); });
}
inline __half hrsqrt(__half a) {
  return fl::emu::types_impl::apply(a, [](double x) { return 1.0 / std::sqrt(x); });
}
inline __half hrcp(__half a) {
  return fl::emu::types_impl::apply(a, [](double x) { return 1.0 / x; });
}
inline __half hsin(__half a) {
  return fl::emu::types_impl::apply(a, [](double x) { return std::sin(x); });
}
inline __half hcos(__half a) {
  return fl::emu::types_impl::apply(a, [](double x) { return std::cos(x); });
}
inline __half htrunc(__half a) {
  return fl::emu::types_impl::apply(a, [](double x) { return std::trunc(x); });
}
inline __half hceil(__half a) {
  return fl::emu::types_impl::apply(a, [](double x) { return std::ceil(x); });
}
inline __half hfloor(__half a) {
  return fl::emu::types_impl::apply(a, [](double x) { return std::floor(x); });
}
inline __half hrint(__half a) {
  return fl::emu::types_impl::apply(a, [](double x) { return __builtin_roundeven(x); });
}
inline __nv_bfloat16 hexp(__nv_bfloat16 a) {
  return fl::emu::types_impl::apply(a, [](double x) { return std::exp(x); });
}
inline __nv_bfloat16 hexp2(__nv_bfloat16 a) {
  return fl::emu::types_impl::apply(a, [](double x) { return std::exp2(x); });
}
inline __nv_bfloat16 hexp10(__nv_bfloat16 a) {
  return fl::emu::types_impl::apply(a, [](double x) { return std::pow(10.0, x); });
}
inline __nv_bfloat16 hlog(__nv_bfloat16 a) {
  return fl::emu::types_impl::apply(a, [](double x) { return std::log(x); });
}
inline __nv_bfloat16 hlog2(__nv_bfloat16 a) {
  return fl::emu::types_impl::apply(a, [](double x) { return std::log2(x); });
}
inline __nv_bfloat16 hlog10(__nv_bfloat16 a) {
  return fl::emu::types_impl::apply(a, [](double x) { return std::log10(x); });
}
inline __nv_bfloat16 hsqrt(__nv_bfloat16 a) {
  return fl::emu::types_impl::apply(a, [](double x) { return std::sqrt(x); });
}
inline __nv_bfloat16 hrsqrt(__nv_bfloat16 a) {
  return fl::emu::types_impl::apply(a, [](double x) { return 1.0 / std::sqrt(x); });
}
inline __nv_bfloat16 hrcp(__nv_bfloat16 a) {
  return fl::emu::types_impl::apply(a, [](double x) { return 1.0 / x; });
}
inline __nv_bfloat16 hsin(__nv_bfloat16 a) {
  return fl::emu::types_impl::apply(a, [](double x) { return std::sin(x); });
}
inline __nv_bfloat16 hcos(__nv_bfloat16 a) {
  return fl::emu::types_impl::apply(a, [](double x) { return std::cos(x); });
}
inline __nv_bfloat16 htrunc(__nv_bfloat16 a) {
  return fl::emu::types_impl::apply(a, [](double x) { return std::trunc(x); });
}
inline __nv_bfloat16 hceil(__nv_bfloat16 a) {
  return fl::emu::types_impl::apply(a, [](double x) { return std::ceil(x); });
}
inline __nv_bfloat16 hfloor(__nv_bfloat16 a) {
  return fl::emu::types_impl::apply(a, [](double x) { return std::floor(x); });
}
inline __nv_bfloat16 hrint(__nv_bfloat16 a) {
  return fl::emu::types_impl::apply(a, [](double x) { return __builtin_roundeven(x); });
}

// Operators. != is the unordered __hneu, as in CUDA, so that it is !(a == b).
inline __half operator+(const __half& a, const __half& b) { return __hadd(a, b); }
inline __half operator-(const __half& a, const __half& b) { return __hsub(a, b); }
inline __half operator*(const __half& a, const __half& b) { return __hmul(a, b); }
inline __half operator/(const __half& a, const __half& b) { return __hdiv(a, b); }
inline __half& operator+=(__half& a, const __half& b) { return a = __hadd(a, b); }
inline __half& operator-=(__half& a, const __half& b) { return a = __hsub(a, b); }
inline __half& operator*=(__half& a, const __half& b) { return a = __hmul(a, b); }
inline __half& operator/=(__half& a, const __half& b) { return a = __hdiv(a, b); }
inline __half operator+(const __half& a) { return a; }
inline __half operator-(const __half& a) { return __hneg(a); }
inline __half& operator++(__half& a) { return a = __hadd(a, __ushort_as_half(0x3c00)); }
inline __half& operator--(__half& a) { return a = __hsub(a, __ushort_as_half(0x3c00)); }
inline __half operator++(__half& a, int) {
  const __half old = a;
  ++a;
  return old;
}
inline __half operator--(__half& a, int) {
  const __half old = a;
  --a;
  return old;
}
inline bool operator==(const __half& a, const __half& b) { return __heq(a, b); }
inline bool operator!=(const __half& a, const __half& b) { return __hneu(a, b); }
inline bool operator<(const __half& a, const __half& b) { return __hlt(a, b); }
inline bool operator<=(const __half& a, const __half& b) { return __hle(a, b); }
inline bool operator>(const __half& a, const __half& b) { return __hgt(a, b); }
inline bool operator>=(const __half& a, const __half& b) { return __hge(a, b); }

inline __nv_bfloat16 operator+(const __nv_bfloat16& a, const __nv_bfloat16& b) {
  return __hadd(a, b);
}
inline __nv_bfloat16 operator-(const __nv_bfloat16& a, const __nv_bfloat16& b) {
  return __hsub(a, b);
}
inline __nv_bfloat16 operator*(const __nv_bfloat16& a, const __nv_bfloat16& b) {
  return __hmul(a, b);
}
inline __nv_bfloat16 operator/(const __nv_bfloat16& a, const __nv_bfloat16& b) {
  return __hdiv(a, b);
}
inline __nv_bfloat16& operator+=(__nv_bfloat16& a, const __nv_bfloat16& b) {
  return a = __hadd(a, b);
}
inline __nv_bfloat16& operator-=(__nv_bfloat16& a, const __nv_bfloat16& b) {
  return a = __hsub(a, b);
}
inline __nv_bfloat16& operator*=(__nv_bfloat16& a, const __nv_bfloat16& b) {
  return a = __hmul(a, b);
}
inline __nv_bfloat16& operator/=(__nv_bfloat16& a, const __nv_bfloat16& b) {
  return a = __hdiv(a, b);
}
inline __nv_bfloat16 operator+(const __nv_bfloat16& a) { return a; }
inline __nv_bfloat16 operator-(const __nv_bfloat16& a) { return __hneg(a); }
inline __nv_bfloat16& operator++(__nv_bfloat16& a) {
  return a = __hadd(a, __ushort_as_bfloat16(0x3f80));
}
inline __nv_bfloat16& operator--(__nv_bfloat16& a) {
  return a = __hsub(a, __ushort_as_bfloat16(0x3f80));
}
inline __nv_bfloat16 operator++(__nv_bfloat16& a, int) {
  const __nv_bfloat16 old = a;
  ++a;
  return old;
}
inline __nv_bfloat16 operator--(__nv_bfloat16& a, int) {
  const __nv_bfloat16 old = a;
  --a;
  return old;
}
inline bool operator==(const __nv_bfloat16& a, const __nv_bfloat16& b) { return __heq(a, b); }
inline bool operator!=(const __nv_bfloat16& a, const __nv_bfloat16& b) { return __hneu(a, b); }
inline bool operator<(const __nv_bfloat16& a, const __nv_bfloat16& b) { return __hlt(a, b); }
inline bool operator<=(const __nv_bfloat16& a, const __nv_bfloat16& b) { return __hle(a, b); }
inline bool operator>(const __nv_bfloat16& a, const __nv_bfloat16& b) { return __hgt(a, b); }
inline bool operator>=(const __nv_bfloat16& a, const __nv_bfloat16& b) { return __hge(a, b); }

// ---------------------------------------------------------------------------------------------
// __half2 and __nv_bfloat162: x is the low half of the 32-bit word.

inline __half2 make_half2(__half x, __half y) { return {x, y}; }
inline __half2 __halves2half2(__half a, __half b) { return {a, b}; }
inline __half2 __half2half2(__half a) { return {a, a}; }
inline __half2 __float2half2_rn(float f) { return {__half(f), __half(f)}; }
inline __half2 __floats2half2_rn(float a, float b) { return {__half(a), __half(b)}; }
inline __half2 __float22half2_rn(float2 f) { return {__half(f.x), __half(f.y)}; }
inline float2 __half22float2(__half2 h) { return {__half2float(h.x), __half2float(h.y)}; }
inline __half __low2half(__half2 h) { return h.x; }
inline __half __high2half(__half2 h) { return h.y; }
inline float __low2float(__half2 h) { return __half2float(h.x); }
inline float __high2float(__half2 h) { return __half2float(h.y); }
inline __half2 __low2half2(__half2 h) { return {h.x, h.x}; }
inline __half2 __high2half2(__half2 h) { return {h.y, h.y}; }
inline __half2 __lows2half2(__half2 a, __half2 b) { return {a.x, b.x}; }
inline __half2 __highs2half2(__half2 a, __half2 b) { return {a.y, b.y}; }
inline __half2 __lowhigh2highlow(__half2 h) { return {h.y, h.x}; }

inline __nv_bfloat162 make_bfloat162(__nv_bfloat16 x, __nv_bfloat16 y) { return {x, y}; }
inline __nv_bfloat162 __halves2bfloat162(__nv_bfloat16 a, __nv_bfloat16 b) { return {a, b}; }
inline __nv_bfloat162 __bfloat162bfloat162(__nv_bfloat16 a) { return {a, a}; }
inline __nv_bfloat162 __float2bfloat162_rn(float f) { return {__nv_bfloat16(f), __nv_bfloat16(f)}; }
inline __nv_bfloat162 __floats2bfloat162_rn(float a, float b) {
  return {__nv_bfloat16(a), __nv_bfloat16(b)};
}
inline __nv_bfloat162 __float22bfloat162_rn(float2 f) {
  return {__nv_bfloat16(f.x), __nv_bfloat16(f.y)};
}
inline float2 __bfloat1622float2(__nv_bfloat162 h) {
  return {__bfloat162float(h.x), __bfloat162float(h.y)};
}
inline __nv_bfloat16 __low2bfloat16(__nv_bfloat162 h) { return h.x; }
inline __nv_bfloat16 __high2bfloat16(__nv_bfloat162 h) { return h.y; }
inline float __low2float(__nv_bfloat162 h) { return __bfloat162float(h.x); }
inline float __high2float(__nv_bfloat162 h) { return __bfloat162float(h.y); }
inline __nv_bfloat162 __low2bfloat162(__nv_bfloat162 h) { return {h.x, h.x}; }
inline __nv_bfloat162 __high2bfloat162(__nv_bfloat162 h) { return {h.y, h.y}; }
inline __nv_bfloat162 __lows2bfloat162(__nv_bfloat162 a, __nv_bfloat162 b) { return {a.x, b.x}; }
inline __nv_bfloat162 __highs2bfloat162(__nv_bfloat162 a, __nv_bfloat162 b) { return {a.y, b.y}; }
inline __nv_bfloat162 __lowhigh2highlow(__nv_bfloat162 h) { return {h.y, h.x}; }

inline __half2 __hadd2(__half2 a, __half2 b) { return {__hadd(a.x, b.x), __hadd(a.y, b.y)}; }
inline __half2 __hsub2(__half2 a, __half2 b) { return {__hsub(a.x, b.x), __hsub(a.y, b.y)}; }
inline __half2 __hmul2(__half2 a, __half2 b) { return {__hmul(a.x, b.x), __hmul(a.y, b.y)}; }
inline __half2 __h2div(__half2 a, __half2 b) { return {__hdiv(a.x, b.x), __hdiv(a.y, b.y)}; }
inline __half2 __hfma2(__half2 a, __half2 b, __half2 c) {
  return {__hfma(a.x, b.x, c.x), __hfma(a.y, b.y, c.y)};
}
inline __half2 __hmax2(__half2 a, __half2 b) { return {__hmax(a.x, b.x), __hmax(a.y, b.y)}; }
inline __half2 __hmin2(__half2 a, __half2 b) { return {__hmin(a.x, b.x), __hmin(a.y, b.y)}; }
inline __half2 __hmax2_nan(__half2 a, __half2 b) {
  return {__hmax_nan(a.x, b.x), __hmax_nan(a.y, b.y)};
}
inline __half2 __hmin2_nan(__half2 a, __half2 b) {
  return {__hmin_nan(a.x, b.x), __hmin_nan(a.y, b.y)};
}
inline __half2 __hneg2(__half2 a) { return {__hneg(a.x), __hneg(a.y)}; }
inline __half2 __habs2(__half2 a) { return {__habs(a.x), __habs(a.y)}; }

inline __nv_bfloat162 __hadd2(__nv_bfloat162 a, __nv_bfloat162 b) {
  return {__hadd(a.x, b.x), __hadd(a.y, b.y)};
}
inline __nv_bfloat162 __hsub2(__nv_bfloat162 a, __nv_bfloat162 b) {
  return {__hsub(a.x, b.x), __hsub(a.y, b.y)};
}
inline __nv_bfloat162 __hmul2(__nv_bfloat162 a, __nv_bfloat162 b) {
  return {__hmul(a.x, b.x), __hmul(a.y, b.y)};
}
inline __nv_bfloat162 __h2div(__nv_bfloat162 a, __nv_bfloat162 b) {
  return {__hdiv(a.x, b.x), __hdiv(a.y, b.y)};
}
inline __nv_bfloat162 __hfma2(__nv_bfloat162 a, __nv_bfloat162 b, __nv_bfloat162 c) {
  return {__hfma(a.x, b.x, c.x), __hfma(a.y, b.y, c.y)};
}
inline __nv_bfloat162 __hmax2(__nv_bfloat162 a, __nv_bfloat162 b) {
  return {__hmax(a.x, b.x), __hmax(a.y, b.y)};
}
inline __nv_bfloat162 __hmin2(__nv_bfloat162 a, __nv_bfloat162 b) {
  return {__hmin(a.x, b.x), __hmin(a.y, b.y)};
}
inline __nv_bfloat162 __hmax2_nan(__nv_bfloat162 a, __nv_bfloat162 b) {
  return {__hmax_nan(a.x, b.x), __hmax_nan(a.y, b.y)};
}
inline __nv_bfloat162 __hmin2_nan(__nv_bfloat162 a, __nv_bfloat162 b) {
  return {__hmin_nan(a.x, b.x), __hmin_nan(a.y, b.y)};
}
inline __nv_bfloat162 __hneg2(__nv_bfloat162 a) { return {__hneg(a.x), __hneg(a.y)}; }
inline __nv_bfloat162 __habs2(__nv_bfloat162 a) { return {__habs(a.x), __habs(a.y)}; }

inline __half2 operator+(const __half2& a, const __half2& b) { return __hadd2(a, b); }
inline __half2 operator-(const __half2& a, const __half2& b) { return __hsub2(a, b); }
inline __half2 operator*(const __half2& a, const __half2& b) { return __hmul2(a, b); }
inline __half2 operator/(const __half2& a, const __half2& b) { return __h2div(a, b); }
inline __half2& operator+=(__half2& a, const __half2& b) { return a = __hadd2(a, b); }
inline __half2& operator-=(__half2& a, const __half2& b) { return a = __hsub2(a, b); }
inline __half2& operator*=(__half2& a, const __half2& b) { return a = __hmul2(a, b); }
inline __half2& operator/=(__half2& a, const __half2& b) { return a = __h2div(a, b); }
inline __half2 operator+(const __half2& a) { return a; }
inline __half2 operator-(const __half2& a) { return __hneg2(a); }

inline __nv_bfloat162 operator+(const __nv_bfloat162& a, const __nv_bfloat162& b) {
  return __hadd2(a, b);
}
inline __nv_bfloat162 operator-(const __nv_bfloat162& a, const __nv_bfloat162& b) {
  return __hsub2(a, b);
}
inline __nv_bfloat162 operator*(const __nv_bfloat162& a, const __nv_bfloat162& b) {
  return __hmul2(a, b);
}
inline __nv_bfloat162 operator/(const __nv_bfloat162& a, const __nv_bfloat162& b) {
  return __h2div(a, b);
}
inline __nv_bfloat162& operator+=(__nv_bfloat162& a, const __nv_bfloat162& b) {
  return a = __hadd2(a, b);
}
inline __nv_bfloat162& operator-=(__nv_bfloat162& a, const __nv_bfloat162& b) {
  return a = __hsub2(a, b);
}
inline __nv_bfloat162& operator*=(__nv_bfloat162& a, const __nv_bfloat162& b) {
  return a = __hmul2(a, b);
}
inline __nv_bfloat162& operator/=(__nv_bfloat162& a, const __nv_bfloat162& b) {
  return a = __h2div(a, b);
}
inline __nv_bfloat162 operator+(const __nv_bfloat162& a) { return a; }
inline __nv_bfloat162 operator-(const __nv_bfloat162& a) { return __hneg2(a); }

// ---------------------------------------------------------------------------------------------
// Integer and bit intrinsics.

inline int __popc(unsigned int x) { return std::popcount(x); }
inline int __popcll(unsigned long long x) { return std::popcount(x); }
inline int __clz(int x) { return std::countl_zero(static_cast<unsigned int>(x)); }
inline int __clzll(long long x) { return std::countl_zero(static_cast<unsigned long long>(x)); }
inline int __ffs(int x) { return x == 0 ? 0 : std::countr_zero(static_cast<unsigned int>(x)) + 1; }
inline int __ffsll(long long x) {
  return x == 0 ? 0 : std::countr_zero(static_cast<unsigned long long>(x)) + 1;
}
inline unsigned int __brev(unsigned int x) {
  x = ((x >> 1) & 0x55555555u) | ((x & 0x55555555u) << 1);
  x = ((x >> 2) & 0x33333333u) | ((x & 0x33333333u) << 2);
  x = ((x >> 4) & 0x0f0f0f0fu) | ((x & 0x0f0f0f0fu) << 4);
  return __builtin_bswap32(x);
}
inline unsigned long long __brevll(unsigned long long x) {
  return (static_cast<unsigned long long>(__brev(static_cast<unsigned int>(x))) << 32) |
         __brev(static_cast<unsigned int>(x >> 32));
}

// PTX prmt, default mode: selector nibble i picks byte (nibble & 7) of y:x for result byte i;
// its top bit replaces the byte by copies of the picked byte's sign bit.
inline unsigned int __byte_perm(unsigned int x, unsigned int y, unsigned int s) {
  const uint64_t bytes = (uint64_t(y) << 32) | x;
  unsigned int result = 0;
  for (int i = 0; i < 4; ++i) {
    const unsigned int sel = (s >> (4 * i)) & 0xfu;
    unsigned int byte = unsigned(bytes >> (8 * (sel & 7u))) & 0xffu;
    if ((sel & 8u) != 0) byte = (byte & 0x80u) != 0 ? 0xffu : 0u;
    result |= byte << (8 * i);
  }
  return result;
}

// hi:lo shifted; the plain forms wrap the shift mod 32, the c forms clamp it to 32.
inline unsigned int __funnelshift_l(unsigned int lo, unsigned int hi, unsigned int shift) {
  return unsigned(((uint64_t(hi) << 32 | lo) << (shift & 31u)) >> 32);
}
inline unsigned int __funnelshift_lc(unsigned int lo, unsigned int hi, unsigned int shift) {
  return unsigned(((uint64_t(hi) << 32 | lo) << std::min(shift, 32u)) >> 32);
}
inline unsigned int __funnelshift_r(unsigned int lo, unsigned int hi, unsigned int shift) {
  return unsigned((uint64_t(hi) << 32 | lo) >> (shift & 31u));
}
inline unsigned int __funnelshift_rc(unsigned int lo, unsigned int hi, unsigned int shift) {
  return unsigned((uint64_t(hi) << 32 | lo) >> std::min(shift, 32u));
}

inline int __mulhi(int a, int b) { return int((int64_t(a) * b) >> 32); }
inline unsigned int __umulhi(unsigned int a, unsigned int b) {
  return unsigned((uint64_t(a) * b) >> 32);
}
inline long long __mul64hi(long long a, long long b) {
  __extension__ using Wide = __int128;
  return static_cast<long long>((Wide(a) * b) >> 64);
}
inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
  __extension__ using Wide = unsigned __int128;
  return static_cast<unsigned long long>((Wide(a) * b) >> 64);
}
// The low 32 bits of the product of the low 24 bits, signed for __mul24.
inline int __mul24(int a, int b) {
  const int64_t a24 = int64_t(uint64_t(a) << 40) >> 40, b24 = int64_t(uint64_t(b) << 40) >> 40;
  return static_cast<int>(static_cast<uint32_t>(a24 * b24));
}
inline unsigned int __umul24(unsigned int a, unsigned int b) {
  return (a & 0xffffffu) * (b & 0xffffffu);
}
inline unsigned int __sad(int x, int y, unsigned int z) {
  return unsigned(x > y ? int64_t(x) - y : int64_t(y) - x) + z;
}
inline unsigned int __usad(unsigned int x, unsigned int y, unsigned int z) {
  return (x > y ? x - y : y - x) + z;
}
// Halving adds, without overflow in the intermediate sum; the signed ones round down.
inline int __hadd(int a, int b) { return int((int64_t(a) + b) >> 1); }
inline int __rhadd(int a, int b) { return int((int64_t(a) + b + 1) >> 1); }
inline unsigned int __uhadd(unsigned int a, unsigned int b) {
  return unsigned((uint64_t(a) + b) >> 1);
}
inline unsigned int __urhadd(unsigned int a, unsigned int b) {
  return unsigned((uint64_t(a) + b + 1) >> 1);
}

constexpr int __float_as_int(float x) { return std::bit_cast<int>(x); }
constexpr float __int_as_float(int x) { return std::bit_cast<float>(x); }
constexpr unsigned int __float_as_uint(float x) { return std::bit_cast<unsigned int>(x); }
constexpr float __uint_as_float(unsigned int x) { return std::bit_cast<float>(x); }
constexpr long long __double_as_longlong(double x) { return std::bit_cast<long long>(x); }
constexpr double __longlong_as_double(long long x) { return std::bit_cast<double>(x); }
constexpr int __double2hiint(double x) { return int(std::bit_cast<uint64_t>(x) >> 32); }
constexpr int __double2loint(double x) { return int(uint32_t(std::bit_cast<uint64_t>(x))); }
constexpr double __hiloint2double(int hi, int lo) {
  return std::bit_cast<double>(uint64_t(uint32_t(hi)) << 32 | uint32_t(lo));
}

// ---------------------------------------------------------------------------------------------
// __dp4a(a, b, c): the four signed bytes of a times those of b, summed, plus c (int32 wraps).

inline int __dp4a(int a, int b, int c) {
  uint32_t sum = uint32_t(c);
  for (int i = 0; i < 4; ++i)
    sum +=
        uint32_t(int32_t(int8_t(uint32_t(a) >> (8 * i))) * int32_t(int8_t(uint32_t(b) >> (8 * i))));
  return int(sum);
}

// ---------------------------------------------------------------------------------------------
// CUDA math functions that C++ lacks: sin(pi x) and cos(pi x), the argument reduced exactly
// (x minus the nearest even integer) before the multiplication by pi.

inline double sinpi(double x) {
  return std::sin(3.141592653589793 * (x - 2.0 * std::nearbyint(0.5 * x)));
}
inline double cospi(double x) {
  return std::cos(3.141592653589793 * (x - 2.0 * std::nearbyint(0.5 * x)));
}
inline float sinpif(float x) { return float(sinpi(double(x))); }
inline float cospif(float x) { return float(cospi(double(x))); }

// ---------------------------------------------------------------------------------------------
// Float intrinsics and conversions.

// glibc's <math.h> declares (without defining) __expf, __sinf and the like as extern "C"
// noexcept functions, so CUDA's fast-math intrinsics of those names are defined with that
// linkage to match.
extern "C" {
inline float __expf(float x) noexcept { return std::exp(x); }
inline float __exp10f(float x) noexcept { return std::pow(10.0f, x); }
inline float __logf(float x) noexcept { return std::log(x); }
inline float __log2f(float x) noexcept { return std::log2(x); }
inline float __log10f(float x) noexcept { return std::log10(x); }
inline float __sinf(float x) noexcept { return std::sin(x); }
inline float __cosf(float x) noexcept { return std::cos(x); }
inline float __tanf(float x) noexcept { return std::tan(x); }
inline void __sincosf(float x, float* s, float* c) noexcept {
  *s = std::sin(x);
  *c = std::cos(x);
}
inline float __powf(float x, float y) noexcept { return std::pow(x, y); }
inline float rsqrtf(float x) noexcept { return float(1.0 / std::sqrt(double(x))); }
inline double rsqrt(double x) noexcept { return 1.0 / std::sqrt(x); }
}
inline float rsqrt(float x) { return rsqrtf(x); }

// The GPU's x * rcp(y) gives 0 (NaN for an infinite x) once |y| > 2^126, where rcp flushes.
inline float __fdividef(float x, float y) {
  return std::fabs(y) > 0x1p126f ? x * std::copysign(0.0f, y) : x / y;
}
inline float __saturatef(float x) { return x >= 1.0f ? 1.0f : x > 0.0f ? x : 0.0f; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fsqrt_rn(float x) { return std::sqrt(x); }
// Rounded twice, via long double's 64 bits: wrong only if 1/sqrt(x) lies within 2^-63
// (relative) of a float tie.
inline float __frsqrt_rn(float x) { return float(1.0L / std::sqrt(static_cast<long double>(x))); }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline double __fma_rn(double a, double b, double c) { return std::fma(a, b, c); }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dsub_rn(double a, double b) { return a - b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __ddiv_rn(double a, double b) { return a / b; }
inline double __drcp_rn(double x) { return 1.0 / x; }
inline double __dsqrt_rn(double x) { return std::sqrt(x); }

// Float to integer in the four rounding modes, saturating (types_impl::to_integer).
#define FL_EMU_TO_INTEGER(name, From, To)                                                \
  inline To name##_rn(From x) {                                                          \
    return fl::emu::types_impl::to_integer<To>(x, fl::emu::types_impl::Round::kNearest); \
  }                                                                                      \
  inline To name##_rz(From x) {                                                          \
    return fl::emu::types_impl::to_integer<To>(x, fl::emu::types_impl::Round::kZero);    \
  }                                                                                      \
  inline To name##_rd(From x) {                                                          \
    return fl::emu::types_impl::to_integer<To>(x, fl::emu::types_impl::Round::kDown);    \
  }                                                                                      \
  inline To name##_ru(From x) {                                                          \
    return fl::emu::types_impl::to_integer<To>(x, fl::emu::types_impl::Round::kUp);      \
  }
FL_EMU_TO_INTEGER(__float2int, float, int)
FL_EMU_TO_INTEGER(__float2uint, float, unsigned int)
FL_EMU_TO_INTEGER(__float2ll, float, long long)
FL_EMU_TO_INTEGER(__float2ull, float, unsigned long long)
FL_EMU_TO_INTEGER(__double2int, double, int)
FL_EMU_TO_INTEGER(__double2uint, double, unsigned int)
FL_EMU_TO_INTEGER(__double2ll, double, long long)
FL_EMU_TO_INTEGER(__double2ull, double, unsigned long long)
#undef FL_EMU_TO_INTEGER
inline float __int2float_rn(int i) { return static_cast<float>(i); }
inline float __uint2float_rn(unsigned int i) { return static_cast<float>(i); }
inline float __ll2float_rn(long long i) { return static_cast<float>(i); }
inline float __ull2float_rn(unsigned long long i) { return static_cast<float>(i); }
inline double __int2double_rn(int i) { return i; }
inline double __uint2double_rn(unsigned int i) { return i; }
inline double __ll2double_rn(long long i) { return static_cast<double>(i); }
inline double __ull2double_rn(unsigned long long i) { return static_cast<double>(i); }
inline float __double2float_rn(double x) { return static_cast<float>(x); }

// ---------------------------------------------------------------------------------------------
// Cache-hint loads and stores: plain accesses here.

template <class T>
inline T __ldg(const T* p) {
  return *p;
}
template <class T>
inline T __ldcg(const T* p) {
  return *p;
}
template <class T>
inline T __ldca(const T* p) {
  return *p;
}
template <class T>
inline T __ldcs(const T* p) {
  return *p;
}
template <class T>
inline T __ldlu(const T* p) {
  return *p;
}
template <class T>
inline T __ldcv(const T* p) {
  return *p;
}
template <class T>
inline void __stwb(T* p, std::type_identity_t<T> v) {
  *p = v;
}
template <class T>
inline void __stcg(T* p, std::type_identity_t<T> v) {
  *p = v;
}
template <class T>
inline void __stcs(T* p, std::type_identity_t<T> v) {
  *p = v;
}
template <class T>
inline void __stwt(T* p, std::type_identity_t<T> v) {
  *p = v;
}

// ---------------------------------------------------------------------------------------------
// min and max at global scope. The non-template overloads are CUDA's set (math_functions.hpp):
// a mixed signed/unsigned pair compares as unsigned, and floats are fminf/fmaxf (a NaN loses).
// Being non-templates they win over std::min/std::max under `using namespace std`, as CUDA's
// do. The template takes every other arithmetic pair, in the usual arithmetic conversions.

namespace fl::emu::types_impl {
template <class R>
inline R lesser(R a, R b) {
  if constexpr (std::is_floating_point_v<R>) {
    return std::fmin(a, b);
  } else {
    return b < a ? b : a;
  }
}
template <class R>
inline R greater(R a, R b) {
  if constexpr (std::is_floating_point_v<R>) {
    return std::fmax(a, b);
  } else {
    return a < b ? b : a;
  }
}
}  // namespace fl::emu::types_impl

inline int min(int a, int b) { return fl::emu::types_impl::lesser<int>(a, b); }
inline unsigned int min(unsigned int a, unsigned int b) {
  return fl::emu::types_impl::lesser<unsigned int>(a, b);
}
inline unsigned int min(int a, unsigned int b) {
  return fl::emu::types_impl::lesser<unsigned int>(a, b);
}
inline unsigned int min(unsigned int a, int b) {
  return fl::emu::types_impl::lesser<unsigned int>(a, b);
}
inline long min(long a, long b) { return fl::emu::types_impl::lesser<long>(a, b); }
inline unsigned long min(unsigned long a, unsigned long b) {
  return fl::emu::types_impl::lesser<unsigned long>(a, b);
}
inline unsigned long min(long a, unsigned long b) {
  return fl::emu::types_impl::lesser<unsigned long>(a, b);
}
inline unsigned long min(unsigned long a, long b) {
  return fl::emu::types_impl::lesser<unsigned long>(a, b);
}
inline long long min(long long a, long long b) {
  return fl::emu::types_impl::lesser<long long>(a, b);
}
inline unsigned long long min(unsigned long long a, unsigned long long b) {
  return fl::emu::types_impl::lesser<unsigned long long>(a, b);
}
inline unsigned long long min(long long a, unsigned long long b) {
  return fl::emu::types_impl::lesser<unsigned long long>(a, b);
}
inline unsigned long long min(unsigned long long a, long long b) {
  return fl::emu::types_impl::lesser<unsigned long long>(a, b);
}
inline float min(float a, float b) { return fl::emu::types_impl::lesser<float>(a, b); }
inline double min(double a, double b) { return fl::emu::types_impl::lesser<double>(a, b); }
inline double min(float a, double b) { return fl::emu::types_impl::lesser<double>(a, b); }
inline double min(double a, float b) { return fl::emu::types_impl::lesser<double>(a, b); }
template <class A, class B>
  requires std::is_arithmetic_v<A> && std::is_arithmetic_v<B>
inline auto min(A a, B b) {
  using R = decltype(a + b);
  return fl::emu::types_impl::lesser<R>(static_cast<R>(a), static_cast<R>(b));
}

inline int max(int a, int b) { return fl::emu::types_impl::greater<int>(a, b); }
inline unsigned int max(unsigned int a, unsigned int b) {
  return fl::emu::types_impl::greater<unsigned int>(a, b);
}
inline unsigned int max(int a, unsigned int b) {
  return fl::emu::types_impl::greater<unsigned int>(a, b);
}
inline unsigned int max(unsigned int a, int b) {
  return fl::emu::types_impl::greater<unsigned int>(a, b);
}
inline long max(long a, long b) { return fl::emu::types_impl::greater<long>(a, b); }
inline unsigned long max(unsigned long a, unsigned long b) {
  return fl::emu::types_impl::greater<unsigned long>(a, b);
}
inline unsigned long max(long a, unsigned long b) {
  return fl::emu::types_impl::greater<unsigned long>(a, b);
}
inline unsigned long max(unsigned long a, long b) {
  return fl::emu::types_impl::greater<unsigned long>(a, b);
}
inline long long max(long long a, long long b) {
  return fl::emu::types_impl::greater<long long>(a, b);
}
inline unsigned long long max(unsigned long long a, unsigned long long b) {
  return fl::emu::types_impl::greater<unsigned long long>(a, b);
}
inline unsigned long long max(long long a, unsigned long long b) {
  return fl::emu::types_impl::greater<unsigned long long>(a, b);
}
inline unsigned long long max(unsigned long long a, long long b) {
  return fl::emu::types_impl::greater<unsigned long long>(a, b);
}
inline float max(float a, float b) { return fl::emu::types_impl::greater<float>(a, b); }
inline double max(double a, double b) { return fl::emu::types_impl::greater<double>(a, b); }
inline double max(float a, double b) { return fl::emu::types_impl::greater<double>(a, b); }
inline double max(double a, float b) { return fl::emu::types_impl::greater<double>(a, b); }
template <class A, class B>
  requires std::is_arithmetic_v<A> && std::is_arithmetic_v<B>
inline auto max(A a, B b) {
  using R = decltype(a + b);
  return fl::emu::types_impl::greater<R>(static_cast<R>(a), static_cast<R>(b));
}

// ---------------------------------------------------------------------------------------------
// math_constants.h, and the half/bfloat16 constants of cuda_fp16.h and cuda_bf16.h.

#define CUDART_INF_F __uint_as_float(0x7f800000u)
#define CUDART_NAN_F __uint_as_float(0x7fffffffu)
#define CUDART_MIN_DENORM_F __uint_as_float(0x00000001u)
#define CUDART_MAX_NORMAL_F __uint_as_float(0x7f7fffffu)
#define CUDART_NEG_ZERO_F __uint_as_float(0x80000000u)
#define CUDART_ZERO_F 0.0f
#define CUDART_ONE_F 1.0f
#define CUDART_PI_F 3.141592654f
#define CUDART_INF __longlong_as_double(0x7ff0000000000000ll)
#define CUDART_NAN __longlong_as_double(static_cast<long long>(0xfff8000000000000ull))
#define CUDART_MIN_DENORM __longlong_as_double(0x0000000000000001ll)
#define CUDART_NEG_ZERO __longlong_as_double(static_cast<long long>(0x8000000000000000ull))
#define CUDART_ZERO 0.0
#define CUDART_ONE 1.0
#define CUDART_PI 3.1415926535897931e+0
#define CUDART_INF_FP16 __ushort_as_half(0x7c00)
#define CUDART_NAN_FP16 __ushort_as_half(0x7fff)
#define CUDART_MIN_DENORM_FP16 __ushort_as_half(0x0001)
#define CUDART_MAX_NORMAL_FP16 __ushort_as_half(0x7bff)
#define CUDART_NEG_ZERO_FP16 __ushort_as_half(0x8000)
#define CUDART_ZERO_FP16 __ushort_as_half(0x0000)
#define CUDART_ONE_FP16 __ushort_as_half(0x3c00)
#define CUDART_INF_BF16 __ushort_as_bfloat16(0x7f80)
#define CUDART_NAN_BF16 __ushort_as_bfloat16(0x7fff)
#define CUDART_MIN_DENORM_BF16 __ushort_as_bfloat16(0x0001)
#define CUDART_MAX_NORMAL_BF16 __ushort_as_bfloat16(0x7f7f)
#define CUDART_NEG_ZERO_BF16 __ushort_as_bfloat16(0x8000)
#define CUDART_ZERO_BF16 __ushort_as_bfloat16(0x0000)
#define CUDART_ONE_BF16 __ushort_as_bfloat16(0x3f80)
