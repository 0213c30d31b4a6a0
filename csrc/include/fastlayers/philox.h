// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11): a
// counter-based generator, so any element's random number is a pure function of (seed,
// counter). Attention dropout uses it on every device, so backward regenerates forward's
// mask and the CPU and CUDA kernels drop the same elements for the same seed.
#pragma once

#include <cstdint>

#include "fastlayers/types.h"

namespace fl {

struct Philox4x32 {
  uint32_t x[4];
};

FL_HOST_DEVICE inline void philox_mulhilo(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
  const uint64_t p = uint64_t(a) * b;
  hi = uint32_t(p >> 32);
  lo = uint32_t(p);
}

// Ten rounds on counter (c0..c3) with key (k0, k1).
FL_HOST_DEVICE inline Philox4x32 philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3,
                                               uint32_t k0, uint32_t k1) {
  constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u, kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
  for (int r = 0; r < 10; ++r) {
    uint32_t hi0, lo0, hi1, lo1;
    philox_mulhilo(kM0, c0, hi0, lo0);
    philox_mulhilo(kM1, c2, hi1, lo1);
    const uint32_t n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
    k0 += kW0;
    k1 += kW1;
  }
  return {{c0, c1, c2, c3}};
}

// Dropout keep decisions for four consecutive elements 4n .. 4n + 3 of a stream: element e
// of the stream (seed, offset) is kept when its 24-bit uniform u in [0, 1) is < keep_prob.
struct DropoutStream {
  uint64_t seed, offset;
  // Bit i of the result: element 4 * group + i is kept.
  FL_HOST_DEVICE unsigned keep4(uint64_t group, float keep_prob) const {
    const uint64_t n = offset + group;
    const Philox4x32 r =
        philox4x32_10(uint32_t(n), uint32_t(n >> 32), 0u, 0u, uint32_t(seed), uint32_t(seed >> 32));
    unsigned bits = 0;
    for (int i = 0; i < 4; ++i)
      if (float(r.x[i] >> 8) * (1.0f / 16777216.0f) < keep_prob) bits |= 1u << i;
    return bits;
  }
  FL_HOST_DEVICE bool keep(uint64_t element, float keep_prob) const {
    return (keep4(element >> 2, keep_prob) >> (element & 3)) & 1u;
  }
};

}  // namespace fl
