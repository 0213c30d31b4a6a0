// Philox4x32-10 against the known-answer vectors of Random123 (kat_vectors, philox4x32 10
// rounds), and the dropout stream's keep rate.
#include <cstdio>

#include "fastlayers/philox.h"

int main() {
  struct Kat {
    uint32_t c[4], k[2], out[4];
  };
  const Kat kats[] = {
      {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}},
      {{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu},
       {0xffffffffu, 0xffffffffu},
       {0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}},
      {{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u},
       {0xa4093822u, 0x299f31d0u},
       {0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}},
  };
  int failures = 0;
  for (const Kat& t : kats) {
    const fl::Philox4x32 r = fl::philox4x32_10(t.c[0], t.c[1], t.c[2], t.c[3], t.k[0], t.k[1]);
    for (int i = 0; i < 4; ++i)
      if (r.x[i] != t.out[i]) {
        std::printf("philox KAT word %d: got %08x, expected %08x\n", i, r.x[i], t.out[i]);
        ++failures;
      }
  }
  const fl::DropoutStream s{1234567, 89};
  const int n = 1 << 20;
  int kept = 0;
  for (int e = 0; e < n; ++e) kept += s.keep(uint64_t(e), 0.7f);
  const double rate = double(kept) / n;  // binomial sd ~ 0.00045
  if (rate < 0.697 || rate > 0.703) {
    std::printf("dropout keep rate %.4f, expected 0.7\n", rate);
    ++failures;
  }
  std::printf("philox: %s\n", failures ? "FAILED" : "passed");
  return failures ? 1 : 0;
}
