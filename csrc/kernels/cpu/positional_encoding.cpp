// Sinusoidal positional encoding on the CPU (fastlayers/positional_encoding.h). A task is a
// range of positions: it computes each position's encoding row once, in double, and adds it
// to every (outer, inner) row at that position. Memory-bound, so one variant suffices.
#include "fastlayers/positional_encoding.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace fl {
namespace cpu {
namespace {

template <typename T>
void add_encoding(const PositionalEncodingParams& p, const ParallelFor& pfor) {
  using A = acc_t<T>;
  const T* in = static_cast<const T*>(p.input);
  T* out = static_cast<T*>(p.output);
  const int64_t E = p.E;
  // w_i = 10000^(-2i / E) = exp(2i * (-ln 10000 / E)), as the paper and torch's tutorial.
  std::vector<double> w((E + 1) / 2);
  for (int64_t i = 0; i < int64_t(w.size()); ++i)
    w[i] = std::exp(double(2 * i) * (-std::log(10000.0) / double(E)));
  const int64_t grain = std::max<int64_t>(1, 8192 / std::max<int64_t>(1, p.outer * p.inner * E));
  pfor(0, p.L, grain, [&](int64_t begin, int64_t end) {
    std::vector<A> pe(E);
    for (int64_t pos = begin; pos < end; ++pos) {
      for (int64_t d = 0; d < E; ++d) {
        const double angle = double(pos) * w[d / 2];
        pe[d] = A(d % 2 == 0 ? std::sin(angle) : std::cos(angle));
      }
      for (int64_t o = 0; o < p.outer; ++o)
        for (int64_t c = 0; c < p.inner; ++c) {
          const int64_t base = ((o * p.L + pos) * p.inner + c) * E;
          for (int64_t d = 0; d < E; ++d) store(out + base + d, load(in + base + d) + pe[d]);
        }
    }
  });
}

}  // namespace

void positional_encoding(const PositionalEncodingParams& p, const ParallelFor& pfor) {
  dispatch_cpu_types(p.dtype, [&](auto tag) { add_encoding<decltype(tag)>(p, pfor); });
}

}  // namespace cpu
}  // namespace fl
