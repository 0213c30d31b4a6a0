// Dropout on the CPU (fastlayers/dropout.h). A task is a range of groups of 4 elements (one
// Philox call each), so the mask is the same for any thread count. Within a task, blocks of
// kBlock groups: first each element's factor (1 / (1 - p) or 0) into a small buffer, then
// out = in * factor over the block, a plain loop the compiler vectorises when the tensors
// are dense. Memory-bound apart from Philox, so one variant suffices.
#include "fastlayers/dropout.h"

#include <algorithm>
#include <bit>

#include "fastlayers/dropout_cursor.h"
#include "fastlayers/philox.h"

namespace fl {
namespace cpu {
namespace {

// IEEE binary16 as stored by torch (c10::Half has the same layout), converted in software:
// types.h covers only the types of the other CPU kernels.
struct f16 {
  uint16_t bits;
};

// Both conversions are branch-free (every case computed, one selected by masks), so the
// loops that use them vectorise.

// Exact. A subnormal renormalises through one float subtraction of a power of two.
inline float to_float(f16 h) {
  constexpr uint32_t kExp = 0x7c00u << 13;
  const uint32_t mag = uint32_t(h.bits & 0x7fffu) << 13;  // exponent and fraction, float-aligned
  const uint32_t exp = mag & kExp;
  const uint32_t normal = mag + (uint32_t(127 - 15) << 23);
  const uint32_t inf_nan = normal + (uint32_t(128 - 16) << 23);
  const uint32_t subnormal =
      std::bit_cast<uint32_t>(std::bit_cast<float>(normal + (1u << 23)) - 6.103515625e-05f);
  const uint32_t is_inf_nan = 0u - uint32_t(exp == kExp), is_subnormal = 0u - uint32_t(exp == 0);
  const uint32_t u =
      (inf_nan & is_inf_nan) | (subnormal & is_subnormal) | (normal & ~(is_inf_nan | is_subnormal));
  return std::bit_cast<float>(u | uint32_t(h.bits & 0x8000u) << 16);
}

// Round to nearest even; NaN becomes a quiet NaN, overflow Inf (as c10::Half).
inline f16 to_f16(float f) {
  const uint32_t sign = std::bit_cast<uint32_t>(f) & 0x80000000u;
  const uint32_t u = std::bit_cast<uint32_t>(f) ^ sign;
  const uint32_t inf_nan = u > 0x7f800000u ? 0x7e00u : 0x7c00u;
  // |f| < 2^-14, a subnormal half or zero: adding 0.5 aligns the half's 10 fraction bits at
  // the bottom of the float's, and the float addition rounds them to nearest even.
  const uint32_t subnormal = std::bit_cast<uint32_t>(std::bit_cast<float>(u) + 0.5f) - 0x3f000000u;
  // Normal: rebias the exponent and round half to even on the 13 dropped bits.
  const uint32_t normal = (u + (uint32_t(15 - 127) << 23) + 0xfffu + ((u >> 13) & 1u)) >> 13;
  const uint32_t is_inf_nan = 0u - uint32_t(u >= 0x47800000u);
  const uint32_t is_subnormal = 0u - uint32_t(u < 0x38800000u);
  const uint32_t h =
      (inf_nan & is_inf_nan) | (subnormal & is_subnormal) | (normal & ~(is_inf_nan | is_subnormal));
  return f16{uint16_t(h | sign >> 16)};
}

// Compute type and conversions: double for double, else float.
template <typename T>
struct Compute {
  using type = acc_t<T>;
  static type load(const T* p) { return fl::load(p); }
  static void store(T* p, type v) { fl::store(p, v); }
};
template <>
struct Compute<f16> {
  using type = float;
  static float load(const f16* p) { return to_float(*p); }
  static void store(f16* p, float v) { *p = to_f16(v); }
};

constexpr int64_t kBlock = 256;  // groups per block: the factor buffer stays in L1

template <typename T>
void dropout_typed(const DropoutParams& p, const ParallelFor& pfor) {
  using C = Compute<T>;
  using A = typename C::type;
  const T* in = static_cast<const T*>(p.input);
  T* out = static_cast<T*>(p.output);
  const DropoutStream ds{p.seed, p.offset};
  const A scale = A(p.scale);
  const int64_t groups = (p.n + 3) / 4;
  pfor(0, groups, 4096, [&](int64_t gb, int64_t ge) {
    A factor[4 * kBlock];
    DropoutCursor cur{};
    if (!p.dense) cur.seek(p, 4 * gb);
    for (int64_t g0 = gb; g0 < ge; g0 += kBlock) {
      const int64_t ng = std::min(kBlock, ge - g0);
      for (int64_t j = 0; j < ng; ++j) {
        const unsigned bits = ds.keep4(uint64_t(g0 + j), p.keep_prob);
        // A product, not a select: this way GCC vectorises the loop, Philox included.
        for (int i = 0; i < 4; ++i) factor[4 * j + i] = scale * A((bits >> i) & 1u);
      }
      const int64_t e0 = 4 * g0, ne = std::min(4 * ng, p.n - e0);
      if (p.dense) {
        const T* x = in + e0;
        T* y = out + e0;
        for (int64_t k = 0; k < ne; ++k) C::store(y + k, C::load(x + k) * factor[k]);
      } else {
        for (int64_t k = 0; k < ne; ++k, cur.next(p))
          C::store(out + cur.out_off, C::load(in + cur.in_off) * factor[k]);
      }
    }
  });
}

}  // namespace

void dropout(const DropoutParams& p, const ParallelFor& pfor) {
  switch (p.dtype) {
    case DType::kFloat32: return dropout_typed<float>(p, pfor);
    case DType::kFloat64: return dropout_typed<double>(p, pfor);
    case DType::kFloat16: return dropout_typed<f16>(p, pfor);
    case DType::kBFloat16: return dropout_typed<bf16>(p, pfor);
  }
}

}  // namespace cpu
}  // namespace fl
