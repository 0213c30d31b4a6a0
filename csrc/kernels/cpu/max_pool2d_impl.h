// 2-D max-pooling on the CPU, forward and backward, NCHW and NHWC.
//
// Included once per instruction set by max_pool2d*.cpp with FL_ISA_NS naming the namespace
// (and a target pragma around it), so one source yields baseline and AVX2/AVX-512 code.
// Every std/fastlayers header must be included before the pragma: inline functions are
// merged across translation units by the linker, and an AVX2 copy must not replace the
// baseline one.
//
// Forward, values only (inference): separable. For one output row of an NCHW plane, take
// the column-wise max of the kh input rows it covers (contiguous, vectorised), then the max
// over kw of that row. In NHWC, the max runs over the window's pixels with channels as the
// contiguous, vectorised inner loop.
// Forward with indices: a row-major scan of the window per output (torch's order, so ties
// pick the same index as torch: the first maximum, or the last NaN).
// Backward: scatter-add of grad_output to grad_input[index], in tasks that own disjoint
// slices of grad_input (an NCHW plane; an (image, channel block) in NHWC), so no two tasks
// write the same element. 16-bit types accumulate in float.

#ifndef FL_ISA_NS
#error "define FL_ISA_NS before including max_pool2d_impl.h"
#endif

namespace fl {
namespace cpu {
namespace FL_ISA_NS {

namespace {

// First and one-past-last valid tap of a window, in input coordinates, following torch:
// start skips the taps in the top/left padding; end is clipped to the input.
struct Taps {
  int64_t start, end;  // iterate start, start + d, ... < end
};

inline Taps window(int64_t o, int64_t stride, int64_t pad, int64_t k, int64_t d, int64_t size) {
  int64_t start = o * stride - pad;
  int64_t end = std::min(start + (k - 1) * d + 1, size);
  while (start < 0) start += d;
  return {start, end};
}

// ---------------------------------------------------------------------------------------
// NCHW. A row of the input is first copied (or reduced) into a buffer padded with -inf on
// both sides, long enough for every window including ceil mode's last, so the horizontal
// pass is a branch-free loop over ow with a compile-time stride for the common strides
// 1 and 2 (then the compiler vectorises it). -inf taps never win (the comparison is strict),
// so padding changes neither values nor indices.

// The horizontal pass runs over whole blocks of kOB outputs, so it has no scalar remainder
// (whose data-dependent branches cost more than the vector body); the extra outputs read
// -inf padding and are never stored.
constexpr int64_t kOB = 16;

inline int64_t padded_outputs(const MaxPool2dShape& s) { return (s.OW + kOB - 1) / kOB * kOB; }

// Length of the padded row buffer: the last (padded) window's last tap, plus one.
inline int64_t padded_width(const MaxPool2dShape& s) {
  return std::max<int64_t>((padded_outputs(s) - 1) * s.sw + (s.kw - 1) * s.dw + 1, s.pw + s.W);
}

// One input row's taps, all kw of them in order, into the running max m[ow] (and its index
// mi[ow]) for all ow < OW (a multiple of kOB): m[ow] = max_j row[ow * stride + j * dw], and
// the index of the winning tap is base + ow * stride + j * dw. SW > 0 is the stride known at
// compile time.
#if FL_CPU_VECTOR_EXT
// The vectors never cross a non-inline call, so GCC's note that passing them changes the
// ABI without AVX-512 does not apply.
#pragma GCC diagnostic ignored "-Wpsabi"
// kOB lanes of T as one GCC vector, and the integer vector a comparison of them yields.
template <typename T>
struct Vec;
template <>
struct Vec<float> {
  typedef float type __attribute__((vector_size(kOB * 4)));
  typedef int32_t mask __attribute__((vector_size(kOB * 4)));
};
template <>
struct Vec<double> {
  typedef double type __attribute__((vector_size(kOB * 8)));
  typedef int64_t mask __attribute__((vector_size(kOB * 8)));
};
template <>
struct Vec<int64_t> {
  typedef int64_t type __attribute__((vector_size(kOB * 8)));
};
#endif

template <int SW, bool kIdx, typename A>
inline void hmax(const A* __restrict__ row, int64_t kw, int64_t dw, int64_t stride_rt, int64_t OW,
                 A* __restrict__ m, int64_t* __restrict__ mi, int64_t base) {
  const int64_t stride = SW > 0 ? SW : stride_rt;
#if FL_CPU_VECTOR_EXT
  if constexpr (SW == 1 || SW == 2) {
    // GCC vector extensions: strided taps become two loads and one permute (vpermt2ps),
    // and the NaN-aware max a compare-and-blend, which the auto-vectoriser does not find.
    using V = typename Vec<A>::type;
    using M = typename Vec<A>::mask;  // a comparison's lane mask
    using I = typename Vec<int64_t>::type;
    auto loadu = [](const A* q) {
      V x;
      std::memcpy(&x, q, sizeof x);
      return x;
    };
    I lane{};
    for (int64_t v = 0; v < kOB; ++v) lane[v] = v * SW;
    for (int64_t o0 = 0; o0 < OW; o0 += kOB) {
      V acc = loadu(m + o0);
      I at{};
      if (kIdx) std::memcpy(&at, mi + o0, sizeof at);
      const A* r = row + o0 * SW;
      for (int64_t j = 0; j < kw; ++j) {
        V x;
        if constexpr (SW == 1) {
          x = loadu(r + j * dw);
        } else {
          M even{};
          for (int64_t v = 0; v < kOB; ++v) even[v] = 2 * v;
          x = __builtin_shuffle(loadu(r + j * dw), loadu(r + j * dw + kOB), even);
        }
        const M take = (x > acc) | (x != x);
        acc = take ? x : acc;
        if (kIdx) at = __builtin_convertvector(take, I) ? lane + (base + o0 * SW + j * dw) : at;
      }
      std::memcpy(m + o0, &acc, sizeof acc);
      if (kIdx) std::memcpy(mi + o0, &at, sizeof at);
    }
    return;
  }
#endif
  for (int64_t o0 = 0; o0 < OW; o0 += kOB) {
    for (int64_t j = 0; j < kw; ++j) {
      for (int64_t v = 0; v < kOB; ++v) {
        const int64_t ow = o0 + v;
        const A x = row[ow * stride + j * dw];
        const bool take = max_takes(x, m[ow]);
        m[ow] = take ? x : m[ow];
        if (kIdx) mi[ow] = take ? base + ow * stride + j * dw : mi[ow];
      }
    }
  }
}

template <bool kIdx, typename A>
inline void hmax_any(const A* row, int64_t kw, int64_t dw, int64_t stride, int64_t OW, A* m,
                     int64_t* mi, int64_t base) {
  if (stride == 1)
    hmax<1, kIdx>(row, kw, dw, 1, OW, m, mi, base);
  else if (stride == 2)
    hmax<2, kIdx>(row, kw, dw, 2, OW, m, mi, base);
  else
    hmax<0, kIdx>(row, kw, dw, stride, OW, m, mi, base);
}

// Values only: the column-wise max over the covered rows (separable: max is associative
// and NaN-propagating either way), then one horizontal pass.
template <typename T, bool kIdx>
void fwd_nchw(const MaxPool2dFwdParams& p, const ParallelFor& pfor) {
  using A = acc_t<T>;
  constexpr A kNegInf = -std::numeric_limits<A>::infinity();
  const MaxPool2dShape& s = p.s;
  const T* in = static_cast<const T*>(p.input);
  T* out = static_cast<T*>(p.output);
  const int64_t rows = s.N * s.C * s.OH;
  const int64_t PW = padded_width(s), OWP = padded_outputs(s);
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, s.W * s.kh));
  pfor(0, rows, grain, [&](int64_t begin, int64_t end) {
    std::vector<A> buf(PW, kNegInf), m(OWP);
    std::vector<int64_t> mi(kIdx ? OWP : 0), first_w(kIdx ? s.OW : 0);
    if (kIdx)  // first valid column of each window: the same for every row
      for (int64_t ow = 0; ow < s.OW; ++ow)
        first_w[ow] = window(ow, s.sw, s.pw, s.kw, s.dw, s.W).start;
    A* c = buf.data() + s.pw;  // c[w] for w in [-pw, PW - pw)
    for (int64_t r = begin; r < end; ++r) {
      const int64_t plane = r / s.OH, oh = r % s.OH;
      const T* src = in + plane * s.H * s.W;
      const Taps th = window(oh, s.sh, s.ph, s.kh, s.dh, s.H);
      std::fill(m.begin(), m.end(), kNegInf);
      if (kIdx) {
        // Rows in order, taps in order: torch's row-major scan, per output.
        for (int64_t ow = 0; ow < s.OW; ++ow) mi[ow] = th.start * s.W + first_w[ow];
        for (int64_t h = th.start; h < th.end; h += s.dh) {
          const T* row = src + h * s.W;
          for (int64_t w = 0; w < s.W; ++w) c[w] = load(row + w);
          hmax_any<true>(buf.data(), s.kw, s.dw, s.sw, OWP, m.data(), mi.data(), h * s.W - s.pw);
        }
      } else {
        // Two rows per pass: half the passes over c.
        int64_t h = th.start;
        if (h < th.end) {
          const T* row = src + h * s.W;
          for (int64_t w = 0; w < s.W; ++w) c[w] = load(row + w);
          h += s.dh;
        } else {
          std::fill(c, c + s.W, kNegInf);
        }
        for (; h + s.dh < th.end; h += 2 * s.dh) {
          const T* r0 = src + h * s.W;
          const T* r1 = r0 + s.dh * s.W;
          for (int64_t w = 0; w < s.W; ++w) {
            const A v0 = load(r0 + w), v1 = load(r1 + w);
            const A a = max_takes(v0, c[w]) ? v0 : c[w];
            c[w] = max_takes(v1, a) ? v1 : a;
          }
        }
        for (; h < th.end; h += s.dh) {
          const T* row = src + h * s.W;
          for (int64_t w = 0; w < s.W; ++w) {
            const A v = load(row + w);
            c[w] = max_takes(v, c[w]) ? v : c[w];
          }
        }
        hmax_any<false>(buf.data(), s.kw, s.dw, s.sw, OWP, m.data(), nullptr, 0);
      }
      T* dst = out + r * s.OW;
      for (int64_t ow = 0; ow < s.OW; ++ow) store(dst + ow, m[ow]);
      if (kIdx) std::copy(mi.begin(), mi.begin() + s.OW, p.indices + r * s.OW);
    }
  });
}

// ---------------------------------------------------------------------------------------
// NHWC: a task is a range of output pixels; per pixel, channels go in blocks of kVB with
// the window's taps as the inner loop, so the block's running max (and index) is a
// fixed-size array the compiler keeps in vector registers. A runtime-length tail block
// covers C % kVB.
template <typename T, bool kIdx, int64_t kVB, bool kFull>
inline void nhwc_block(const T* px0, int64_t C, int64_t W, const Taps& th, const Taps& tw,
                       int64_t dh, int64_t dw, int64_t cn, T* dst, int64_t* di) {
  using A = acc_t<T>;
  A m[kVB];
  int64_t mi[kVB];
  const int64_t n = kFull ? kVB : cn;  // compile-time for full blocks
  for (int64_t c = 0; c < n; ++c) m[c] = -std::numeric_limits<A>::infinity();
  if (kIdx)
    for (int64_t c = 0; c < n; ++c) mi[c] = th.start * W + tw.start;
  for (int64_t h = th.start; h < th.end; h += dh) {
    for (int64_t w = tw.start; w < tw.end; w += dw) {
      const T* px = px0 + (h * W + w) * C;
      const int64_t pos = h * W + w;
      for (int64_t c = 0; c < n; ++c) {
        const A v = load(px + c);
        const bool take = max_takes(v, m[c]);
        m[c] = take ? v : m[c];
        if (kIdx) mi[c] = take ? pos : mi[c];
      }
    }
  }
  for (int64_t c = 0; c < n; ++c) store(dst + c, m[c]);
  if (kIdx)
    for (int64_t c = 0; c < n; ++c) di[c] = mi[c];
}

template <typename T, bool kIdx>
void fwd_nhwc(const MaxPool2dFwdParams& p, const ParallelFor& pfor) {
  // Two 64-byte vectors of accumulators: enough independent chains to hide latency.
  constexpr int64_t kVB = 128 / sizeof(acc_t<T>);
  const MaxPool2dShape& s = p.s;
  const T* in = static_cast<const T*>(p.input);
  T* out = static_cast<T*>(p.output);
  const int64_t pixels = s.N * s.OH * s.OW;
  const int64_t C = s.C;
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, C * s.kh * s.kw));
  pfor(0, pixels, grain, [&](int64_t begin, int64_t end) {
    for (int64_t q = begin; q < end; ++q) {
      const int64_t n = q / (s.OH * s.OW);
      const int64_t oh = (q / s.OW) % s.OH, ow = q % s.OW;
      const Taps th = window(oh, s.sh, s.ph, s.kh, s.dh, s.H);
      const Taps tw = window(ow, s.sw, s.pw, s.kw, s.dw, s.W);
      const T* img = in + n * s.H * s.W * C;
      int64_t c0 = 0;
      for (; c0 + kVB <= C; c0 += kVB)
        nhwc_block<T, kIdx, kVB, true>(img + c0, C, s.W, th, tw, s.dh, s.dw, kVB, out + q * C + c0,
                                       kIdx ? p.indices + q * C + c0 : nullptr);
      if (c0 < C)
        nhwc_block<T, kIdx, kVB, false>(img + c0, C, s.W, th, tw, s.dh, s.dw, C - c0,
                                        out + q * C + c0, kIdx ? p.indices + q * C + c0 : nullptr);
    }
  });
}

// ---------------------------------------------------------------------------------------
// Backward. Each task owns disjoint grad_input elements, so the scatter needs no atomics
// and the result does not depend on the thread count. Indices outside the plane are
// skipped, never written: torch's forward itself returns such indices for windows with no
// valid tap (e.g. H = 1, kernel 2, dilation 2, padding 1), and the CUDA gather ignores them
// the same way.
template <typename T>
void bwd_nchw(const MaxPool2dBwdParams& p, const ParallelFor& pfor) {
  using A = acc_t<T>;
  const MaxPool2dShape& s = p.s;
  const T* go = static_cast<const T*>(p.grad_output);
  T* gi = static_cast<T*>(p.grad_input);
  const int64_t HW = s.H * s.W, OHW = s.OH * s.OW;
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, HW + OHW));
  pfor(0, s.N * s.C, grain, [&](int64_t begin, int64_t end) {
    std::vector<A> acc(std::is_same<T, A>::value ? 0 : HW);
    for (int64_t plane = begin; plane < end; ++plane) {
      const T* g = go + plane * OHW;
      const int64_t* ix = p.indices + plane * OHW;
      T* dst = gi + plane * HW;
      A* a = std::is_same<T, A>::value ? reinterpret_cast<A*>(dst) : acc.data();
      std::fill(a, a + HW, A(0));
      for (int64_t o = 0; o < OHW; ++o) {
        const int64_t i = ix[o];
        if (static_cast<uint64_t>(i) < static_cast<uint64_t>(HW)) a[i] += load(g + o);
      }
      if (!std::is_same<T, A>::value)
        for (int64_t i = 0; i < HW; ++i) store(dst + i, a[i]);
    }
  });
}

constexpr int64_t kCB = 64;  // channels per backward task in NHWC

template <typename T>
void bwd_nhwc(const MaxPool2dBwdParams& p, const ParallelFor& pfor) {
  using A = acc_t<T>;
  const MaxPool2dShape& s = p.s;
  const T* go = static_cast<const T*>(p.grad_output);
  T* gi = static_cast<T*>(p.grad_input);
  const int64_t HW = s.H * s.W, OHW = s.OH * s.OW, C = s.C;
  const int64_t blocks = (C + kCB - 1) / kCB;
  pfor(0, s.N * blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<A> acc;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / blocks, c0 = (task % blocks) * kCB;
      const int64_t cn = std::min(kCB, C - c0);
      acc.assign(HW * cn, A(0));
      const T* g = go + n * OHW * C + c0;
      const int64_t* ix = p.indices + n * OHW * C + c0;
      for (int64_t o = 0; o < OHW; ++o) {
        for (int64_t c = 0; c < cn; ++c) {
          const int64_t i = ix[o * C + c];
          if (static_cast<uint64_t>(i) < static_cast<uint64_t>(HW))
            acc[i * cn + c] += load(g + o * C + c);
        }
      }
      T* dst = gi + n * HW * C + c0;
      for (int64_t i = 0; i < HW; ++i)
        for (int64_t c = 0; c < cn; ++c) store(dst + i * C + c, acc[i * cn + c]);
    }
  });
}

template <typename T>
void forward_t(const MaxPool2dFwdParams& p, const ParallelFor& pfor) {
  if (p.s.channels_last) {
    if (p.indices)
      fwd_nhwc<T, true>(p, pfor);
    else
      fwd_nhwc<T, false>(p, pfor);
  } else if (p.indices) {
    fwd_nchw<T, true>(p, pfor);
  } else {
    fwd_nchw<T, false>(p, pfor);
  }
}

template <typename T>
void backward_t(const MaxPool2dBwdParams& p, const ParallelFor& pfor) {
  if (p.s.channels_last)
    bwd_nhwc<T>(p, pfor);
  else
    bwd_nchw<T>(p, pfor);
}

}  // namespace

void max_pool2d_forward(const MaxPool2dFwdParams& p, const ParallelFor& pfor) {
  dispatch_cpu_types(p.s.dtype, [&](auto tag) { forward_t<decltype(tag)>(p, pfor); });
}

void max_pool2d_backward(const MaxPool2dBwdParams& p, const ParallelFor& pfor) {
  dispatch_cpu_types(p.s.dtype, [&](auto tag) { backward_t<decltype(tag)>(p, pfor); });
}

}  // namespace FL_ISA_NS
}  // namespace cpu
}  // namespace fl
