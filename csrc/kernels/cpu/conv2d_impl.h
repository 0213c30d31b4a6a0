// Conv2d on the CPU (fastlayers/conv2d.h): forward, data gradient, weight gradient.
//
// General convolutions are GEMMs over an im2col buffer, in chunks that bound the buffer:
// - NCHW: the columns of a chunk are output pixels (several images when an image is small,
//   or a block of output rows of one image when it is large); per group
//     y_g[K', cols] = w_g[K', C' R S] col[C' R S, cols]
//     col[C' R S, cols] = w_g^T gy_g                     (then col2im adds it into gx)
//     gw_g[K', C' R S] += gy_g[K', cols] col^T
// - NHWC: the rows of a chunk are output pixels, the weight is reordered to [K, R, S, C']:
//     y[rows, K'] = col[rows, R S C'] w'_g^T,  col = gy_g w'_g,  gw'_g += gy_g^T col
// A 1x1, stride-1, unpadded convolution reads x in place (no im2col). The matrix products
// go through the `gemm` the glue supplies (ATen's in the extension). Sums run in float32
// (float64 for float64); bfloat16 is converted to float32 in the buffers.
//
// Depthwise convolutions (groups = C, any channel multiplier K / C) run a direct kernel:
// NCHW along output rows (16 outputs of a row per vector), NHWC along channels (16
// channels per vector). Gradients are gathers or per-plane scatters, so every output
// element has one writer and the results do not depend on the thread count.
//
// Included once per instruction set by conv2d*.cpp with FL_ISA_NS naming the namespace (see
// max_pool2d_impl.h): the fixed-width inner loops become AVX2 or AVX-512 code.

#ifndef FL_ISA_NS
#error "define FL_ISA_NS before including conv2d_impl.h"
#endif

// The kVec-lane vectors passed between the helpers below never cross a translation unit
// (all are internal), so GCC's note that their ABI differs without AVX-512 is moot.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

#include <cstdlib>
#include <memory>
#include <utility>

namespace fl {
namespace cpu {
namespace FL_ISA_NS {
namespace {

template <typename T>
using A = acc_t<T>;

template <typename T>
constexpr DType gemm_dtype() {
  return std::is_same_v<A<T>, double> ? DType::kFloat64 : DType::kFloat32;
}

// Bytes an im2col buffer of the backward may take (its chunks run one after another, each
// parallel inside); chunks are sized to stay under it.
constexpr int64_t kColBudget = int64_t(8) << 20;
// The forward runs tasks in parallel, each with an im2col buffer of at most this many
// bytes, and makes at least kMinTasks tasks where the output allows.
constexpr int64_t kTaskColBytes = int64_t(1) << 20;
constexpr int64_t kMinTasks = 8;

int64_t ceil_div(int64_t a, int64_t b) { return a >= 0 ? (a + b - 1) / b : -((-a) / b); }
int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

// A buffer that grows without zero-filling, for the forward's im2col and GEMM outputs (each
// filled in whole before it is read: zero-filling a task's few MB cost ~5% at res5).
template <typename U>
class Scratch {
 public:
  U* get(int64_t n) {
    if (n > cap_) {
      buf_.reset(new U[size_t(n)]);
      cap_ = n;
    }
    return buf_.get();
  }

 private:
  std::unique_ptr<U[]> buf_;
  int64_t cap_ = 0;
};

// [lo, hi): the outputs o in [0, out) whose tap o * stride + offset lies in [0, in).
struct Range {
  int64_t lo, hi;
};
Range valid(int64_t out, int64_t stride, int64_t offset, int64_t in) {
  // lo is clamped to out too: an empty range lies inside [0, out], so callers may run
  // [0, lo) and [hi, out) as the outside parts (the taps of a wide dilated kernel can have no
  // output all of whose columns are inside).
  const int64_t lo = std::min(out, std::max<int64_t>(0, ceil_div(-offset, stride)));
  const int64_t hi = std::min<int64_t>(out, floor_div(in - 1 - offset, stride) + 1);
  return {lo, std::max(lo, hi)};
}

// Loads n elements of T into A (a copy, or a widening for bfloat16).
template <typename T>
inline void load_n(const T* src, A<T>* dst, int64_t n) {
  if constexpr (std::is_same_v<T, A<T>>)
    std::memcpy(dst, src, sizeof(T) * size_t(n));
  else
    for (int64_t i = 0; i < n; ++i) dst[i] = load(src + i);
}

template <typename T>
std::vector<A<T>> to_acc(const T* src, int64_t n) {
  std::vector<A<T>> v(size_t(std::max<int64_t>(n, 0)));
  load_n(src, v.data(), n);
  return v;
}

// The bias in A, K long (zeros without one).
template <typename T>
std::vector<A<T>> bias_acc(const Conv2dFwdParams& p) {
  if (!p.bias) return std::vector<A<T>>(size_t(p.s.K), A<T>(0));
  return to_acc(static_cast<const T*>(p.bias), p.s.K);
}

// A depthwise weight [K, 1, R, S] as [R S][ld] in A (ld >= K, zeros past K): each tap's
// weights over the channels are contiguous, for the channel-vectorised kernels.
template <typename T>
std::vector<A<T>> taps_by_channel(const Conv2dShape& s, const T* w, int64_t ld = 0) {
  const int64_t rs_n = s.R * s.S;
  ld = std::max(ld, s.K);
  std::vector<A<T>> wt(size_t(rs_n * ld), A<T>(0));
  for (int64_t k = 0; k < s.K; ++k)
    for (int64_t rs = 0; rs < rs_n; ++rs) wt[size_t(rs * ld + k)] = load(w + k * rs_n + rs);
  return wt;
}

template <typename T>
void gemm_call(const Gemm& gemm, bool ta, bool tb, int64_t M, int64_t N, int64_t K, const A<T>* a,
               int64_t lda, const A<T>* b, int64_t ldb, A<T>* c, int64_t ldc, bool accumulate) {
  gemm(GemmCall{ta, tb, M, N, K, a, lda, b, ldb, c, ldc, accumulate, gemm_dtype<T>()});
}

struct Geo {
  int64_t Cg, Kg, HW, PQ, RS, CRS;  // C', K', H W, P Q, R S, C' R S
  explicit Geo(const Conv2dShape& s)
      : Cg(s.C / s.groups),
        Kg(s.K / s.groups),
        HW(s.H * s.W),
        PQ(s.P * s.Q),
        RS(s.R * s.S),
        CRS(s.C / s.groups * s.R * s.S) {}
};

bool pointwise(const Conv2dShape& s) {
  return s.R == 1 && s.S == 1 && s.sh == 1 && s.sw == 1 && s.pt == 0 && s.pl == 0 && s.P == s.H &&
         s.Q == s.W;
}

// ---------------------------------------------------------------------------------------
// NCHW, general.

// A chunk of NCHW columns: images n0 .. n0 + nb, output rows p0 .. p1 of each (nb = 1 when
// the rows are a block of one image).
struct Chunk {
  int64_t n0, nb, p0, p1;
  int64_t cols(const Conv2dShape& s) const { return nb * (p1 - p0) * s.Q; }
};

// Chunks covering N x P whose im2col buffer stays within the budget.
std::vector<Chunk> nchw_chunks(const Conv2dShape& s, const Geo& g, size_t elem) {
  std::vector<Chunk> out;
  const int64_t col_bytes = std::max<int64_t>(1, g.CRS) * int64_t(elem);  // per column
  const int64_t max_cols = std::max<int64_t>(s.Q, kColBudget / col_bytes);
  if (g.PQ <= max_cols) {
    // Whole images, enough of them for a wide GEMM (>= 1024 columns) within the budget.
    const int64_t nb = std::clamp<int64_t>(std::min((1024 + g.PQ - 1) / g.PQ, max_cols / g.PQ), 1,
                                           std::max<int64_t>(s.N, 1));
    for (int64_t n = 0; n < s.N; n += nb) out.push_back({n, std::min(nb, s.N - n), 0, s.P});
  } else {
    const int64_t pb = std::max<int64_t>(1, max_cols / s.Q);
    for (int64_t n = 0; n < s.N; ++n)
      for (int64_t p = 0; p < s.P; p += pb) out.push_back({n, 1, p, std::min(s.P, p + pb)});
  }
  return out;
}

// col[(c R + r) S + s][(b, p, q)] = x[n0 + b, g C' + c, p sh - pt + r dh, q sw - pl + s dw].
template <typename T>
void im2col_nchw(const Conv2dShape& s, const Geo& g, const T* x, int64_t grp, const Chunk& ch,
                 A<T>* col, const ParallelFor& pfor) {
  const int64_t ld = ch.cols(s), rows_per_img = (ch.p1 - ch.p0) * s.Q;
  pfor(0, g.CRS, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t row = b0; row < b1; ++row) {
      const int64_t c = row / g.RS, r = row / s.S % s.R, ss = row % s.S;
      const int64_t off = ss * s.dw - s.pl;
      const Range qr = valid(s.Q, s.sw, off, s.W);
      for (int64_t b = 0; b < ch.nb; ++b) {
        const T* xp = x + ((ch.n0 + b) * s.C + grp * g.Cg + c) * g.HW;
        A<T>* dst = col + row * ld + b * rows_per_img;
        for (int64_t p = ch.p0; p < ch.p1; ++p, dst += s.Q) {
          const int64_t h = p * s.sh - s.pt + r * s.dh;
          if (h < 0 || h >= s.H || qr.lo >= qr.hi) {
            std::fill(dst, dst + s.Q, A<T>(0));
            continue;
          }
          const T* xr = xp + h * s.W + off;
          std::fill(dst, dst + qr.lo, A<T>(0));
          if (s.sw == 1)
            load_n(xr + qr.lo, dst + qr.lo, qr.hi - qr.lo);
          else
            for (int64_t q = qr.lo; q < qr.hi; ++q) dst[q] = load(xr + q * s.sw);
          std::fill(dst + qr.hi, dst + s.Q, A<T>(0));
        }
      }
    }
  });
}

// gx[n0 + b, c] (an A buffer of whole images [nb, C, H, W]) += the columns of col.
template <typename T>
void col2im_nchw(const Conv2dShape& s, const Geo& g, const A<T>* col, int64_t grp, const Chunk& ch,
                 A<T>* gx, const ParallelFor& pfor) {
  const int64_t ld = ch.cols(s), rows_per_img = (ch.p1 - ch.p0) * s.Q;
  pfor(0, g.Cg, 1, [&](int64_t c0, int64_t c1) {  // a channel's planes have one writer
    for (int64_t c = c0; c < c1; ++c)
      for (int64_t r = 0; r < s.R; ++r)
        for (int64_t ss = 0; ss < s.S; ++ss) {
          const int64_t row = (c * s.R + r) * s.S + ss, off = ss * s.dw - s.pl;
          const Range qr = valid(s.Q, s.sw, off, s.W);
          for (int64_t b = 0; b < ch.nb; ++b) {
            A<T>* gp = gx + (b * s.C + grp * g.Cg + c) * g.HW;
            const A<T>* src = col + row * ld + b * rows_per_img;
            for (int64_t p = ch.p0; p < ch.p1; ++p, src += s.Q) {
              const int64_t h = p * s.sh - s.pt + r * s.dh;
              if (h < 0 || h >= s.H) continue;
              A<T>* gr = gp + h * s.W + off;
              for (int64_t q = qr.lo; q < qr.hi; ++q) gr[q * s.sw] += src[q];
            }
          }
        }
  });
}

// gy of a chunk as [K, cols] in A.
template <typename T>
void gather_gy_nchw(const Conv2dShape& s, const Geo& g, const T* gy, const Chunk& ch, A<T>* dst,
                    const ParallelFor& pfor) {
  const int64_t ld = ch.cols(s), len = (ch.p1 - ch.p0) * s.Q;
  pfor(0, s.K, 1, [&](int64_t k0, int64_t k1) {
    for (int64_t k = k0; k < k1; ++k)
      for (int64_t b = 0; b < ch.nb; ++b)
        load_n(gy + ((ch.n0 + b) * s.K + k) * g.PQ + ch.p0 * s.Q, dst + k * ld + b * len, len);
  });
}

template <typename T>
void forward_nchw(const Conv2dFwdParams& p, const ParallelFor& pfor, const Gemm& gemm) {
  const Conv2dShape& s = p.s;
  const Geo g(s);
  const T* x = static_cast<const T*>(p.x);
  T* y = static_cast<T*>(p.y);
  const auto w = to_acc(static_cast<const T*>(p.w), s.K * g.CRS);
  const auto bias = bias_acc<T>(p);
  // Tasks, each with its own im2col buffer (within the task budget, so it stays in the
  // core's cache while the GEMM reads it): blocks of pb output rows of one image, enough
  // of them for the threads; or, for small images (a GEMM a few dozen columns wide runs
  // slowly), groups of nb whole images, one group per thread (up to 512 columns and
  // kColBudget bytes).
  std::vector<Chunk> tasks;
  const int64_t nb =
      g.PQ >= 128
          ? 1
          : std::clamp<int64_t>(std::min({(512 + g.PQ - 1) / g.PQ, ceil_div(s.N, pfor.workers()),
                                          kColBudget / (std::max<int64_t>(1, g.CRS * g.PQ) *
                                                        int64_t(sizeof(A<T>)))}),
                                1, std::max<int64_t>(s.N, 1));
  if (nb > 1) {
    for (int64_t n = 0; n < s.N; n += nb) tasks.push_back({n, std::min(nb, s.N - n), 0, s.P});
  } else {
    const int64_t pb = std::clamp<int64_t>(
        std::min<int64_t>(
            kTaskColBytes / (std::max<int64_t>(1, g.CRS) * int64_t(sizeof(A<T>)) * s.Q),
            (s.N * s.P + kMinTasks - 1) / kMinTasks),
        1, s.P);
    for (int64_t n = 0; n < s.N; ++n)
      for (int64_t p0 = 0; p0 < s.P; p0 += pb) tasks.push_back({n, 1, p0, std::min(s.P, p0 + pb)});
  }
  pfor(0, int64_t(tasks.size()), 1, [&](int64_t t0, int64_t t1) {
    Scratch<A<T>> col, out;
    for (int64_t t = t0; t < t1; ++t) {
      const Chunk& ch = tasks[size_t(t)];
      const int64_t n = ch.n0, cols = ch.cols(s), off = ch.p0 * s.Q, len = cols / ch.nb;
      // One image of type A: x is read in place (1x1) and y written in place.
      const bool single = ch.nb == 1 && std::is_same_v<T, A<T>>;
      for (int64_t grp = 0; grp < s.groups; ++grp) {
        const A<T>* b;
        int64_t ldb;
        if (single && pointwise(s)) {  // 1x1: the columns are x itself
          b = reinterpret_cast<const A<T>*>(x + (n * s.C + grp * g.Cg) * g.HW + off);
          ldb = g.HW;
        } else {
          A<T>* const buf = col.get(g.CRS * cols);
          im2col_nchw(s, g, x, grp, ch, buf, serial_for);
          b = buf;
          ldb = cols;
        }
        A<T>* c;
        int64_t ldc;
        if (single) {
          c = reinterpret_cast<A<T>*>(y + (n * s.K + grp * g.Kg) * g.PQ + off);
          ldc = g.PQ;
        } else {
          c = out.get(g.Kg * cols);
          ldc = cols;
        }
        gemm_call<T>(gemm, false, false, g.Kg, cols, g.CRS, w.data() + grp * g.Kg * g.CRS, g.CRS, b,
                     ldb, c, ldc, false);
        for (int64_t k = 0; k < g.Kg; ++k) {  // bias and cast (in place when single)
          const int64_t kk = grp * g.Kg + k;
          const A<T> bv = p.bias ? bias[size_t(kk)] : A<T>(0);
          for (int64_t bi = 0; bi < ch.nb; ++bi) {
            const A<T>* src = c + k * ldc + bi * len;
            T* dst = y + ((n + bi) * s.K + kk) * g.PQ + off;
            for (int64_t i = 0; i < len; ++i) store(dst + i, src[i] + bv);
          }
        }
      }
    }
  });
}

template <typename T>
void backward_nchw(const Conv2dBwdParams& p, const ParallelFor& pfor, const Gemm& gemm) {
  const Conv2dShape& s = p.s;
  const Geo g(s);
  const T* x = static_cast<const T*>(p.x);
  const T* gy = static_cast<const T*>(p.gy);
  const auto w = to_acc(static_cast<const T*>(p.w), s.K * g.CRS);
  std::vector<A<T>> gw(p.gw ? size_t(s.K * g.CRS) : 0, A<T>(0));
  std::vector<A<T>> col, gyc, gxa;
  bool first = true;
  int64_t n_done = 0;  // images of gxa already stored
  for (const Chunk& ch : nchw_chunks(s, g, sizeof(A<T>))) {
    const int64_t cols = ch.cols(s);
    gyc.resize(size_t(s.K * cols));
    gather_gy_nchw(s, g, gy, ch, gyc.data(), pfor);
    col.resize(size_t(g.CRS * cols));
    if (p.gx && ch.p0 == 0) {  // a new image (or images): a fresh float accumulator
      gxa.assign(size_t(ch.nb * s.C * g.HW), A<T>(0));
      n_done = ch.n0;
    }
    for (int64_t grp = 0; grp < s.groups; ++grp) {
      const A<T>* gy_g = gyc.data() + grp * g.Kg * cols;
      if (p.gw) {
        im2col_nchw(s, g, x, grp, ch, col.data(), pfor);
        gemm_call<T>(gemm, false, true, g.Kg, g.CRS, cols, gy_g, cols, col.data(), cols,
                     gw.data() + grp * g.Kg * g.CRS, g.CRS, !first);
      }
      if (p.gx) {
        gemm_call<T>(gemm, true, false, g.CRS, cols, g.Kg, w.data() + grp * g.Kg * g.CRS, g.CRS,
                     gy_g, cols, col.data(), cols, false);
        col2im_nchw<T>(s, g, col.data(), grp, ch, gxa.data(), pfor);
      }
    }
    first = false;
    if (p.gx && ch.p1 == s.P) {  // the chunk's images are complete
      T* gx = static_cast<T*>(p.gx) + n_done * s.C * g.HW;
      const int64_t n = ch.nb * s.C * g.HW;
      pfor(0, n, 4096, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) store(gx + i, gxa[size_t(i)]);
      });
    }
  }
  if (p.gw) {
    T* out = static_cast<T*>(p.gw);
    for (int64_t i = 0; i < s.K * g.CRS; ++i) store(out + i, gw[size_t(i)]);
  }
}

// ---------------------------------------------------------------------------------------
// NHWC, general.

// Output pixels per chunk: the im2col buffer within the budget.
int64_t nhwc_rows(const Conv2dShape& s, const Geo& g, size_t elem) {
  const int64_t per_row = std::max<int64_t>(1, s.R * s.S * g.Cg) * int64_t(elem);
  return std::max<int64_t>(64, kColBudget / per_row);
}

// col[i - i0][(r S + s) C' + c] = x[n, h, w, g C' + c] for output pixel i = (n, p, q).
template <typename T>
void im2col_nhwc(const Conv2dShape& s, const Geo& g, const T* x, int64_t grp, int64_t i0,
                 int64_t i1, A<T>* col, const ParallelFor& pfor) {
  const int64_t ld = s.R * s.S * g.Cg;
  pfor(i0, i1, 16, [&](int64_t b0, int64_t b1) {
    for (int64_t i = b0; i < b1; ++i) {
      const int64_t n = i / g.PQ, pp = i / s.Q % s.P, q = i % s.Q;
      A<T>* dst = col + (i - i0) * ld;
      for (int64_t r = 0; r < s.R; ++r) {
        const int64_t h = pp * s.sh - s.pt + r * s.dh;
        for (int64_t ss = 0; ss < s.S; ++ss, dst += g.Cg) {
          const int64_t wc = q * s.sw - s.pl + ss * s.dw;
          if (h < 0 || h >= s.H || wc < 0 || wc >= s.W)
            std::fill(dst, dst + g.Cg, A<T>(0));
          else
            load_n(x + ((n * s.H + h) * s.W + wc) * s.C + grp * g.Cg, dst, g.Cg);
        }
      }
    }
  });
}

// gx (A, NHWC, whole tensor) += the rows of col; threads own channel ranges.
template <typename T>
void col2im_nhwc(const Conv2dShape& s, const Geo& g, const A<T>* col, int64_t grp, int64_t i0,
                 int64_t i1, A<T>* gx, const ParallelFor& pfor) {
  const int64_t ld = s.R * s.S * g.Cg;
  pfor(0, g.Cg, 16, [&](int64_t c0, int64_t c1) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t n = i / g.PQ, pp = i / s.Q % s.P, q = i % s.Q;
      const A<T>* src = col + (i - i0) * ld;
      for (int64_t r = 0; r < s.R; ++r) {
        const int64_t h = pp * s.sh - s.pt + r * s.dh;
        for (int64_t ss = 0; ss < s.S; ++ss, src += g.Cg) {
          const int64_t wc = q * s.sw - s.pl + ss * s.dw;
          if (h < 0 || h >= s.H || wc < 0 || wc >= s.W) continue;
          A<T>* d = gx + ((n * s.H + h) * s.W + wc) * s.C + grp * g.Cg;
          for (int64_t c = c0; c < c1; ++c) d[c] += src[c];
        }
      }
    }
  });
}

// The weight [K, C', R, S] as [K, R, S, C'] in A.
template <typename T>
std::vector<A<T>> weight_rsc(const Conv2dShape& s, const Geo& g, const T* w) {
  std::vector<A<T>> out(size_t(s.K * g.CRS));
  for (int64_t k = 0; k < s.K; ++k)
    for (int64_t c = 0; c < g.Cg; ++c)
      for (int64_t rs = 0; rs < g.RS; ++rs)
        out[size_t((k * g.RS + rs) * g.Cg + c)] = load(w + (k * g.Cg + c) * g.RS + rs);
  return out;
}

template <typename T>
void forward_nhwc(const Conv2dFwdParams& p, const ParallelFor& pfor, const Gemm& gemm) {
  const Conv2dShape& s = p.s;
  const Geo g(s);
  const T* x = static_cast<const T*>(p.x);
  T* y = static_cast<T*>(p.y);
  const auto w = weight_rsc(s, g, static_cast<const T*>(p.w));
  const auto bias = bias_acc<T>(p);
  const bool in_place = pointwise(s) && std::is_same_v<T, A<T>>;
  // Tasks of `rows` output pixels, each with its own im2col buffer (see forward_nchw): where
  // the output has at most 512 pixels per thread, one task per thread (up to kColBudget
  // bytes).
  const int64_t total = s.N * g.PQ, col_row = std::max<int64_t>(1, g.CRS) * int64_t(sizeof(A<T>));
  const int64_t rows =
      std::clamp<int64_t>(total <= 512 * pfor.workers()
                              ? std::min(ceil_div(total, pfor.workers()), kColBudget / col_row)
                              : std::min(kTaskColBytes / col_row, ceil_div(total, kMinTasks)),
                          16, std::max<int64_t>(total, 16));
  pfor(0, (total + rows - 1) / rows, 1, [&](int64_t t0, int64_t t1) {
    Scratch<A<T>> col, out;
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t i0 = t * rows, i1 = std::min(total, i0 + rows), nr = i1 - i0;
      A<T>* c;
      if constexpr (std::is_same_v<T, A<T>>) {
        c = y + i0 * s.K;
      } else {
        c = out.get(nr * s.K);
      }
      for (int64_t grp = 0; grp < s.groups; ++grp) {
        const A<T>* a;
        int64_t lda;
        if (in_place) {
          a = reinterpret_cast<const A<T>*>(x + i0 * s.C + grp * g.Cg);
          lda = s.C;
        } else {
          A<T>* const buf = col.get(nr * g.CRS);
          im2col_nhwc(s, g, x, grp, i0, i1, buf, serial_for);
          a = buf;
          lda = g.CRS;
        }
        gemm_call<T>(gemm, false, true, nr, g.Kg, g.CRS, a, lda, w.data() + grp * g.Kg * g.CRS,
                     g.CRS, c + grp * g.Kg, s.K, false);
      }
      for (int64_t r = 0; r < nr; ++r) {
        const A<T>* src = c + r * s.K;
        T* yr = y + (i0 + r) * s.K;
        for (int64_t k = 0; k < s.K; ++k) store(yr + k, src[k] + (p.bias ? bias[size_t(k)] : 0));
      }
    }
  });
}

template <typename T>
void backward_nhwc(const Conv2dBwdParams& p, const ParallelFor& pfor, const Gemm& gemm) {
  const Conv2dShape& s = p.s;
  const Geo g(s);
  const T* x = static_cast<const T*>(p.x);
  const T* gy = static_cast<const T*>(p.gy);
  const auto w = weight_rsc(s, g, static_cast<const T*>(p.w));
  const bool in_place = pointwise(s) && std::is_same_v<T, A<T>>;
  const int64_t total = s.N * g.PQ, chunk = nhwc_rows(s, g, sizeof(A<T>));
  std::vector<A<T>> gw(p.gw ? size_t(s.K * g.CRS) : 0, A<T>(0));
  // gx accumulates in A: in place when T is A, else in a float copy.
  std::vector<A<T>> gx_buf;
  A<T>* gx = nullptr;
  if (p.gx) {
    if constexpr (std::is_same_v<T, A<T>>) {
      gx = static_cast<T*>(p.gx);
      std::fill(gx, gx + s.N * g.HW * s.C, T(0));
    } else {
      gx_buf.assign(size_t(s.N * g.HW * s.C), A<T>(0));
      gx = gx_buf.data();
    }
  }
  std::vector<A<T>> col, gyc;
  for (int64_t i0 = 0; i0 < total; i0 += chunk) {
    const int64_t i1 = std::min(total, i0 + chunk), rows = i1 - i0;
    const A<T>* gyr;
    if constexpr (std::is_same_v<T, A<T>>) {
      gyr = gy + i0 * s.K;
    } else {
      gyc.resize(size_t(rows * s.K));
      load_n(gy + i0 * s.K, gyc.data(), rows * s.K);
      gyr = gyc.data();
    }
    col.resize(size_t(rows * g.CRS));
    for (int64_t grp = 0; grp < s.groups; ++grp) {
      const A<T>* gy_g = gyr + grp * g.Kg;
      if (p.gw) {
        const A<T>* a;
        int64_t lda;
        if (in_place) {
          a = reinterpret_cast<const A<T>*>(x + i0 * s.C + grp * g.Cg);
          lda = s.C;
        } else {
          im2col_nhwc(s, g, x, grp, i0, i1, col.data(), pfor);
          a = col.data();
          lda = g.CRS;
        }
        gemm_call<T>(gemm, true, false, g.Kg, g.CRS, rows, gy_g, s.K, a, lda,
                     gw.data() + grp * g.Kg * g.CRS, g.CRS, i0 > 0);
      }
      if (p.gx) {
        gemm_call<T>(gemm, false, false, rows, g.CRS, g.Kg, gy_g, s.K,
                     w.data() + grp * g.Kg * g.CRS, g.CRS, col.data(), g.CRS, false);
        col2im_nhwc<T>(s, g, col.data(), grp, i0, i1, gx, pfor);
      }
    }
  }
  if (p.gx && !std::is_same_v<T, A<T>>) {
    T* out = static_cast<T*>(p.gx);
    pfor(0, s.N * g.HW * s.C, 4096, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) store(out + i, gx[i]);
    });
  }
  if (p.gw) {  // [K, R, S, C'] back to [K, C', R, S]
    T* out = static_cast<T*>(p.gw);
    for (int64_t k = 0; k < s.K; ++k)
      for (int64_t c = 0; c < g.Cg; ++c)
        for (int64_t rs = 0; rs < g.RS; ++rs)
          store(out + (k * g.Cg + c) * g.RS + rs, gw[size_t((k * g.RS + rs) * g.Cg + c)]);
  }
}

// ---------------------------------------------------------------------------------------
// Depthwise (groups = C, C' = 1, K = C m): output channel k reads input channel k / m.

// Outputs per vector of the direct kernels: kVec lanes of A (GCC/Clang vector extensions),
// one AVX-512 register of float32 (two AVX2 ones, four SSE ones).
constexpr int64_t kVec = 16;
template <typename U>
struct VecOf {
  typedef U type __attribute__((vector_size(kVec * sizeof(U))));
};
template <typename T>
using V = typename VecOf<A<T>>::type;

// kVec consecutive elements of T as a vector of A (bfloat16 widened: its bits are the top
// half of a float32).
template <typename T>
inline V<T> loadv(const T* p) {
  V<T> v;
  if constexpr (std::is_same_v<T, bf16>) {
    typedef uint16_t u16 __attribute__((vector_size(kVec * 2)));
    typedef uint32_t u32 __attribute__((vector_size(kVec * 4)));
    u16 h;
    std::memcpy(&h, p, sizeof h);
    const u32 u = __builtin_convertvector(h, u32) << 16;
    std::memcpy(&v, &u, sizeof v);
  } else {
    std::memcpy(&v, p, sizeof v);
  }
  return v;
}

template <typename T>
inline V<T> loadv_strided(const T* p, int64_t stride) {
  V<T> v;
  for (int64_t j = 0; j < kVec; ++j) v[j] = load(p + j * stride);
  return v;
}

template <typename T>
inline void storev(T* p, const V<T>& v) {
  if constexpr (std::is_same_v<T, bf16>) {
    for (int64_t j = 0; j < kVec; ++j) store(p + j, v[j]);
  } else {
    std::memcpy(p, &v, sizeof v);
  }
}

template <typename T>
inline V<T> load_acc(const A<T>* p) {
  V<T> v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// dst[0, n) = src[0, n), a vector at a time (a call to memcpy costs more for the short
// copies of the direct kernels).
template <typename T>
inline void copy_n(T* dst, const T* src, int64_t n) {
  typedef char Bytes __attribute__((vector_size(kVec * sizeof(T))));
  Bytes b;
  int64_t j = 0;
  for (; j + kVec <= n; j += kVec) {
    std::memcpy(&b, src + j, sizeof b);
    std::memcpy(dst + j, &b, sizeof b);
  }
  if (j < n && n >= kVec) {  // the tail as one more vector ending at n
    std::memcpy(&b, src + n - kVec, sizeof b);
    std::memcpy(dst + n - kVec, &b, sizeof b);
  } else {
    for (; j < n; ++j) dst[j] = src[j];
  }
}

// The outputs q in [0, Q) whose S taps all lie inside the input row (no bounds checks).
Range inner_columns(const Conv2dShape& s) {
  Range inner{0, s.Q};
  for (int64_t ss = 0; ss < s.S; ++ss) {
    const Range r = valid(s.Q, s.sw, ss * s.dw - s.pl, s.W);
    inner = {std::max(inner.lo, r.lo), std::min(inner.hi, r.hi)};
  }
  inner.hi = std::max(inner.lo, inner.hi);
  return inner;
}

// The input rows (or columns) that `out` outputs read at this stride, kernel size and dilation:
// from the first output's first tap to the last output's last.
inline int64_t read_extent(int64_t out, int64_t stride, int64_t k, int64_t dilation) {
  return (out - 1) * stride + (k - 1) * dilation + 1;
}

// Depthwise forward, NCHW, for wide rows (Q >= kWideRow): a plane (n, k) per task, a row at
// a time, straight from the input. Rows in the padding read a row of zeros, so only the
// columns at the left and right edges need bounds checks. KR x KS as below.
template <typename T, int KR, int KS>
void depthwise_forward_nchw_rows(const Conv2dFwdParams& p, const ParallelFor& pfor) {
  const Conv2dShape& s = p.s;
  const Geo g(s);
  const int64_t m = s.K / s.C, R = KR ? KR : s.R, S = KS ? KS : s.S;
  const T* x = static_cast<const T*>(p.x);
  T* y = static_cast<T*>(p.y);
  const auto w = to_acc(static_cast<const T*>(p.w), s.K * g.RS);
  const auto bias = bias_acc<T>(p);
  const std::vector<T> zeros(size_t(s.W + kVec * s.sw + S * s.dw), T{});
  const Range inner = inner_columns(s);
  pfor(0, s.N * s.K, 1, [&](int64_t i0, int64_t i1) {
    std::vector<const T*> rows(static_cast<size_t>(R));
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t n = i / s.K, k = i % s.K;
      const T* xp = x + (n * s.C + k / m) * g.HW;
      const A<T>* wk = w.data() + k * g.RS;
      const A<T> bv = p.bias ? bias[size_t(k)] : A<T>(0);
      for (int64_t pp = 0; pp < s.P; ++pp) {
        T* yr = y + i * g.PQ + pp * s.Q;
        for (int64_t r = 0; r < R; ++r) {
          const int64_t h = pp * s.sh - s.pt + r * s.dh;
          rows[size_t(r)] = h >= 0 && h < s.H ? xp + h * s.W : zeros.data();
        }
        auto one = [&](int64_t q) {  // an edge column: taps checked against the row
          A<T> acc = bv;
          for (int64_t r = 0; r < R; ++r)
            for (int64_t ss = 0; ss < S; ++ss) {
              const int64_t wc = q * s.sw - s.pl + ss * s.dw;
              if (wc >= 0 && wc < s.W) acc += wk[r * S + ss] * load(rows[size_t(r)] + wc);
            }
          store(yr + q, acc);
        };
        auto vec = [&](int64_t q) {  // kVec inner columns from q
          V<T> acc = V<T>{} + bv;
          for (int64_t r = 0; r < R; ++r) {
            const T* xr = rows[size_t(r)] + q * s.sw - s.pl;
            for (int64_t ss = 0; ss < S; ++ss)
              acc += wk[r * S + ss] *
                     (s.sw == 1 ? loadv(xr + ss * s.dw) : loadv_strided(xr + ss * s.dw, s.sw));
          }
          storev(yr + q, acc);
        };
        int64_t q = 0;
        for (; q < inner.lo; ++q) one(q);
        for (; q + kVec <= inner.hi; q += kVec) vec(q);
        // The inner tail as one more vector ending at inner.hi, overlapping the last one:
        // the overlapped columns are written twice with the same value.
        if (q < inner.hi && inner.hi - inner.lo >= kVec) {
          vec(inner.hi - kVec);
          q = inner.hi;
        }
        for (; q < s.Q; ++q) one(q);
      }
    }
  });
}

// Depthwise forward, NCHW, for narrow rows: a plane (n, k) per task. The input plane is
// first copied into a zero-padded one (in cache), wide enough that every output row is a whole
// number of kVec-wide vectors, so the loop has no bounds checks and no scalar edges; the last
// vector of a row stores only its valid lanes. KR x KS is the kernel size when known at compile
// time (3 x 3, 5 x 5: the tap loops unroll), 0 x 0 otherwise.
template <typename T, int KR, int KS>
void depthwise_forward_nchw_padded(const Conv2dFwdParams& p, const ParallelFor& pfor) {
  const Conv2dShape& s = p.s;
  const Geo g(s);
  const int64_t m = s.K / s.C, R = KR ? KR : s.R, S = KS ? KS : s.S;
  const T* x = static_cast<const T*>(p.x);
  T* y = static_cast<T*>(p.y);
  const auto w = to_acc(static_cast<const T*>(p.w), s.K * g.RS);
  const auto bias = bias_acc<T>(p);
  const int64_t qv = (s.Q + kVec - 1) / kVec * kVec;  // output columns, rounded up
  const int64_t hp = read_extent(s.P, s.sh, R, s.dh), wp = read_extent(qv, s.sw, S, s.dw);
  // The padded plane covers input rows [-pt, hp - pt) and columns [-pl, wp - pl).
  const int64_t h0 = std::max<int64_t>(0, s.pt), h1 = std::min(hp, s.H + s.pt);
  const int64_t w0 = std::max<int64_t>(0, s.pl), w1 = std::min(wp, s.W + s.pl);
  pfor(0, s.N * s.K, 1, [&](int64_t i0, int64_t i1) {
    std::vector<T> pad(size_t(hp * wp), T{});
    int64_t padded = -1;  // the input plane now in `pad`
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t n = i / s.K, k = i % s.K, plane = n * s.C + k / m;
      if (plane != padded) {  // the m output channels of an input channel share it
        const T* xp = x + plane * g.HW;
        for (int64_t hh = h0; hh < h1; ++hh)
          std::memcpy(pad.data() + hh * wp + w0, xp + (hh - s.pt) * s.W + (w0 - s.pl),
                      sizeof(T) * size_t(w1 - w0));
        padded = plane;
      }
      const A<T>* wk = w.data() + k * g.RS;
      const A<T> bv = p.bias ? bias[size_t(k)] : A<T>(0);
      for (int64_t pp = 0; pp < s.P; ++pp) {
        T* yr = y + i * g.PQ + pp * s.Q;
        const T* base = pad.data() + pp * s.sh * wp;
        for (int64_t q = 0; q < qv; q += kVec) {
          V<T> acc = V<T>{} + bv;
          for (int64_t r = 0; r < R; ++r) {
            const T* xr = base + r * s.dh * wp + q * s.sw;
            for (int64_t ss = 0; ss < S; ++ss)
              acc += wk[r * S + ss] *
                     (s.sw == 1 ? loadv(xr + ss * s.dw) : loadv_strided(xr + ss * s.dw, s.sw));
          }
          if (q + kVec <= s.Q)
            storev(yr + q, acc);
          else
            for (int64_t j = 0; j < s.Q - q; ++j) store(yr + q + j, acc[j]);
        }
      }
    }
  });
}

// The flattened kernel's column masks repeat every mask_period(W) vectors (the least v with
// v kVec = 0 mod W); it runs where they are at most kMaxMaskPeriod (a table of a few KiB): every
// W < 32, and wider rows with a factor of 2 or more (W = 56, 112, 224 have 7 or 14).
constexpr int64_t kMaxMaskPeriod = 32;
inline int64_t mask_period(int64_t W) {
  int64_t v = 1;
  while (v * kVec % W) ++v;
  return v;
}

// Integer lanes as wide as those of V<T>: the lane masks of vector selects (m ? a : b).
template <typename T>
using MaskLane = std::conditional_t<sizeof(A<T>) == 8, int64_t, int32_t>;
template <typename T>
using M = typename VecOf<MaskLane<T>>::type;

// Depthwise forward, NCHW, stride 1 with output rows as wide as the input's (Q = W, "same"
// padding along the row): a plane (n, k) per task, computed on the flattened plane, kVec
// outputs o = p Q + q at a time whatever the rows (no edge columns, no lanes wasted on row
// ends). Tap (r, s) of output o reads the flattened input at o + (r dh - pt) W + s dw - pl;
// a lane whose column q + s dw - pl lies outside [0, W) would read the neighbouring row, so the
// taps of each s are summed over r and masked by column once. Rows above and below the plane
// are read as zeros from a guarded copy of the plane's first and last elements, which only the
// vectors near the plane's ends use; the others read x in place. KR x KS as below.
template <typename T, int KR, int KS>
void depthwise_forward_nchw_flat(const Conv2dFwdParams& p, const ParallelFor& pfor) {
  const Conv2dShape& s = p.s;
  const Geo g(s);
  const int64_t m = s.K / s.C, R = KR ? KR : s.R, S = KS ? KS : s.S;
  const T* x = static_cast<const T*>(p.x);
  T* y = static_cast<T*>(p.y);
  const auto w = to_acc(static_cast<const T*>(p.w), s.K * g.RS);
  const auto bias = bias_acc<T>(p);
  const int64_t W = s.W, HW = g.HW, PQ = g.PQ, nv = (PQ + kVec - 1) / kVec;
  // The taps of output o read [o - lo, o + hi] of the flattened input.
  const int64_t lo = s.pt * W + s.pl, hi = ((R - 1) * s.dh - s.pt) * W + (S - 1) * s.dw - s.pl;
  // Vectors [v0, v1) read only inside the plane, so from x in place; the others read a guarded
  // copy of the flattened input [-lo, nv kVec + hi), zeros outside [0, HW), of which they only
  // read [0, fe) (those before v0) and [bs, HW) (those from v1).
  const int64_t v0 = std::min(nv, (lo + kVec - 1) / kVec);
  const int64_t v1 = std::max(v0, std::min(nv, (HW - hi) / kVec));
  const int64_t fe = std::clamp<int64_t>(v0 * kVec + hi, 0, HW);
  const int64_t bs = std::clamp<int64_t>(v1 * kVec - lo, fe, HW);
  const int64_t guarded = lo + std::max(HW, nv * kVec + hi);
  // Column masks per (vector, s); they repeat every `period` vectors (period kVec = 0 mod W).
  // A tap column that is in the row for every output (s dw = pl) needs none.
  // (Kept as lanes: a std::vector of vectors would instantiate library templates on a vector
  // type, one symbol for every instruction-set variant.)
  const int64_t period = mask_period(W);
  std::vector<MaskLane<T>> masks(size_t(period * S * kVec));
  for (int64_t v = 0; v < period; ++v)
    for (int64_t ss = 0; ss < S; ++ss)
      for (int64_t j = 0; j < kVec; ++j) {
        const int64_t col = (v * kVec + j) % W + ss * s.dw - s.pl;
        masks[size_t((v * S + ss) * kVec + j)] = col >= 0 && col < W ? -1 : 0;
      }
  const A<T> zero_bias = 0;
  const A<T>* const wp = w.data();
  const A<T>* const bp = p.bias ? bias.data() : &zero_bias;
  const MaskLane<T>* const mask0 = masks.data();
  // The geometry, copied into each task's locals: stores through y could alias a field of s or
  // of the closure, so that the compiler would reload them from memory after every store.
  struct Geom {
    int64_t N, K, m, RS, W, HW, PQ, nv, v0, v1, fe, bs, lo, guarded, period, dh, dw, row0, bstep;
    int64_t unmasked;  // the s whose column is in the row for every output, or -1
  };
  const Geom geom{s.N,
                  s.K,
                  m,
                  g.RS,
                  W,
                  HW,
                  PQ,
                  nv,
                  v0,
                  v1,
                  fe,
                  bs,
                  lo,
                  guarded,
                  period,
                  s.dh,
                  s.dw,
                  -s.pt * W - s.pl,
                  p.bias ? 1 : 0,
                  s.pl % s.dw == 0 && s.pl / s.dw < S ? s.pl / s.dw : -1};
  pfor(0, s.N * s.K, 1, [&, R, S](int64_t i0, int64_t i1) {
    const Geom e = geom;
    // Two guarded planes: the next task's plane is copied while this one is computed, so that
    // the loads do not wait for the copy's stores to reach the cache.
    std::vector<T> buf(size_t(2 * e.guarded), T{});
    T* const gps[2] = {buf.data() + e.lo, buf.data() + e.guarded + e.lo};
    int64_t held[2] = {-1, -1};  // the input plane in each
    auto plane_of = [&](int64_t i) { return i / e.K * (e.K / e.m) + i % e.K / e.m; };
    auto fetch = [&](int64_t plane, int slot) {
      if (held[0] == plane || held[1] == plane) return;
      const T* const xp = x + plane * e.HW;
      copy_n(gps[slot], xp, e.fe);
      copy_n(gps[slot] + e.bs, xp + e.bs, e.HW - e.bs);
      held[slot] = plane;
    };
    fetch(plane_of(i0), 0);
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t k = i % e.K, plane = plane_of(i);
      const int cur = held[0] == plane ? 0 : 1;
      if (i + 1 < i1) fetch(plane_of(i + 1), 1 - cur);
      const T* const xp = x + plane * e.HW;
      const T* const gp = gps[cur];
      constexpr int64_t kTaps = KR * KS > 0 ? KR * KS : 1;
      A<T> wk_fixed[kTaps];
      const A<T>* wk = wp + k * e.RS;
      if constexpr (KR * KS > 0) {
        for (int64_t t = 0; t < kTaps; ++t) wk_fixed[t] = wk[t];
        wk = wk_fixed;
      }
      const V<T> b0 = V<T>{} + bp[k * e.bstep];
      T* const yp = y + i * e.PQ;
      // The last vector of a plane may spill into the next planes where this task computes
      // them next (overwriting the spill).
      const int64_t full = std::min(e.PQ, (i1 - i) * e.PQ - kVec + 1);
      int64_t phase = 0;
      for (int64_t v = 0; v < e.nv; ++v) {
        const int64_t o = v * kVec;
        const T* const src = (v >= e.v0 && v < e.v1 ? xp : gp) + o + e.row0;
        const MaskLane<T>* const mk = mask0 + phase * S * kVec;
        if (++phase == e.period) phase = 0;
        V<T> acc = b0;
        for (int64_t ss = 0; ss < S; ++ss) {
          V<T> t = wk[ss] * loadv(src + ss * e.dw);
          for (int64_t r = 1; r < R; ++r)
            t += wk[r * S + ss] * loadv(src + r * e.dh * e.W + ss * e.dw);
          if (ss == e.unmasked) {
            acc += t;
          } else {
            M<T> mask;
            std::memcpy(&mask, mk + ss * kVec, sizeof mask);
            acc += mask ? t : V<T>{};
          }
        }
        if (o < full) {
          storev(yp + o, acc);
        } else {
          for (int64_t j = 0; j < e.PQ - o; ++j) store(yp + o + j, acc[j]);
        }
      }
    }
  });
}

// A kVec x kVec block transposed in place (v[i][j] <-> v[j][i]): at each level b = 8, 4, 2, 1
// the off-diagonal b x b sub-blocks of every 2b x 2b block swap, one two-source shuffle per
// output vector (vpermt2ps / vunpck* under AVX-512).
template <int B, int L>
constexpr int swap_lo_lane() {  // lane L of the lower vector of a pair, from (a, c) (c from 16)
  return (L & B) ? kVec + L - B : L;
}
template <int B, int L>
constexpr int swap_hi_lane() {
  return (L & B) ? kVec + L : L + B;
}
template <int B, typename Vt, int... L>
inline void transpose_level(Vt* v, std::integer_sequence<int, L...>) {
  for (int i = 0; i < kVec; ++i) {
    if (i & B) continue;
    const Vt a = v[i], c = v[i + B];
    v[i] = __builtin_shufflevector(a, c, swap_lo_lane<B, L>()...);
    v[i + B] = __builtin_shufflevector(a, c, swap_hi_lane<B, L>()...);
  }
}
template <typename Vt>
inline void transpose_block(Vt* v) {
  static_assert(kVec == 16, "the levels below are those of a 16 x 16 block");
  const auto lanes = std::make_integer_sequence<int, kVec>{};
  transpose_level<8>(v, lanes);
  transpose_level<4>(v, lanes);
  transpose_level<2>(v, lanes);
  transpose_level<1>(v, lanes);
}

// Depthwise forward, NCHW, small planes: kVec output channels (planes) at a time, as lanes. A
// task (n, block of kVec output channels) transposes the block's input planes (an input plane
// serves the m output channels of its channel), kVec positions at a time, into a zero-padded
// pixel-major tile in cache, computes every output pixel as the NHWC kernel does (one vector
// multiply-add per tap for all kVec channels, no masks, no lanes lost to row ends), and transposes
// the outputs back. On 7 x 7 and 14 x 14 planes the flattened kernel leaves lanes idle and pays
// per-plane overheads that this one shares among kVec planes. Needs H W >= kVec and P Q >= kVec (a
// block of positions is kVec long; the last one ends at the plane's end, overlapping the one
// before). The lanes kernel's tile and outputs per thread, at most (beyond, the row kernel reads
// the input in place).
constexpr int64_t kLanesTileBytes = int64_t(2) << 20;

// Whether the lanes kernel takes shape s with an R x S kernel: blocks of kVec input positions
// and output pixels, and the tile within kLanesTileBytes.
template <typename T>
bool lanes_fit(const Conv2dShape& s, int64_t R, int64_t S) {
  if (s.H * s.W < kVec || s.P * s.Q < kVec) return false;
  const int64_t hp = read_extent(s.P, s.sh, R, s.dh), wp = read_extent(s.Q, s.sw, S, s.dw);
  return (hp * wp + s.P * s.Q) * kVec * int64_t(sizeof(A<T>)) <= kLanesTileBytes;
}

template <int N>
using Int = std::integral_constant<int, N>;

// The lanes kernel's steps through its pixel-major tile and outputs, in elements.
struct LanesGeo {
  int64_t row, col, tap_row, tap_col, out_row;  // sh wp kVec, sw kVec, dh wp kVec, dw kVec, Q kVec
};

// NR output rows x NC columns of the lanes kernel from `src` (the tile at the first one's first
// tap) into `dst`: NR NC independent sums per tap, so that the multiply-adds do not wait on one
// another (one sum per pixel left the row ends of 7 x 7 planes latency-bound). `wt`: the taps'
// weights, kVec per tap. A function of its arguments alone, so that the compiler keeps the
// geometry in registers (through the closures it reloaded it after every store).
template <typename T, int NR, int NC, int KR, int KS>
inline void lanes_group(const A<T>* src, A<T>* dst, const A<T>* wt, const V<T>& b0, int64_t R,
                        int64_t S, const LanesGeo& geo) {
  if constexpr (KR * KS > 0) R = KR, S = KS;
  const LanesGeo e = geo;
  V<T> a[NR][NC];
  for (int i = 0; i < NR; ++i)
    for (int j = 0; j < NC; ++j) a[i][j] = b0;
  for (int64_t r = 0; r < R; ++r)
    for (int64_t ss = 0; ss < S; ++ss) {
      const V<T> wv = load_acc<T>(wt + (r * S + ss) * kVec);
      const A<T>* const t = src + r * e.tap_row + ss * e.tap_col;
      for (int i = 0; i < NR; ++i)
        for (int j = 0; j < NC; ++j) a[i][j] += wv * load_acc<T>(t + i * e.row + j * e.col);
    }
  for (int i = 0; i < NR; ++i)
    for (int j = 0; j < NC; ++j)
      std::memcpy(dst + i * e.out_row + j * kVec, &a[i][j], sizeof(V<T>));
}

template <typename T, int KR, int KS>
void depthwise_forward_nchw_lanes(const Conv2dFwdParams& p, const ParallelFor& pfor) {
  using Acc = A<T>;
  using Vt = V<T>;
  const Conv2dShape& s = p.s;
  const Geo g(s);
  const int64_t R = KR ? KR : s.R, S = KS ? KS : s.S;
  const T* x = static_cast<const T*>(p.x);
  T* y = static_cast<T*>(p.y);
  // Weights as [RS][K] (a vector per tap for kVec channels) and the bias, padded to whole
  // channel blocks with zeros.
  const int64_t blocks = (s.K + kVec - 1) / kVec, kp = blocks * kVec;
  const auto wt = taps_by_channel(s, static_cast<const T*>(p.w), kp);
  auto bias = bias_acc<T>(p);
  bias.resize(size_t(kp), Acc(0));
  // The tile covers input rows [-pt, hp - pt) and columns [-pl, wp - pl); slot[f] is the tile
  // pixel of flattened input position f, or -1 where the convolution never reads it.
  const int64_t hp = read_extent(s.P, s.sh, R, s.dh), wp = read_extent(s.Q, s.sw, S, s.dw);
  std::vector<int64_t> slot(size_t(g.HW));
  for (int64_t h = 0; h < s.H; ++h)
    for (int64_t w = 0; w < s.W; ++w) {
      const int64_t th = h + s.pt, tw = w + s.pl;
      slot[size_t(h * s.W + w)] = th < hp && tw < wp ? th * wp + tw : -1;
    }
  const int64_t HW = g.HW, PQ = g.PQ, C = s.C, K = s.K, m = s.K / s.C, P = s.P, Q = s.Q, RS = R * S;
  const LanesGeo geo{s.sh * wp * kVec, s.sw * kVec, s.dh * wp * kVec, s.dw * kVec, s.Q * kVec};
  const std::vector<T> zero_plane(size_t(HW), T{});
  pfor(0, s.N * blocks, 1, [&, R, S](int64_t i0, int64_t i1) {
    // The tile, and the outputs pixel-major (kVec lanes per pixel), zero-filled once: the
    // padding is never written. (Arrays of A, not of vectors: a std::vector of vectors would
    // instantiate library templates on a vector type, one symbol for every instruction set.)
    std::vector<Acc> tile(size_t(hp * wp * kVec), Acc(0)), out(size_t(PQ * kVec));
    auto put = [](Acc* dst, const Vt& v) { std::memcpy(dst, &v, sizeof v); };
    std::vector<Acc> wv(size_t(RS * kVec));  // the block's taps, kVec weights each
    Acc* const wblk = wv.data();
    Vt blk[kVec];
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t n = i / blocks, k0 = i % blocks * kVec, nk = std::min(kVec, K - k0);
      T* const yb = y + (n * K + k0) * PQ;
      // The block's input planes (the lanes past the last channel read a plane of zeros).
      const T* planes[kVec];
      for (int64_t c = 0; c < kVec; ++c)
        planes[c] =
            c < nk ? x + (n * C + (m == 1 ? k0 + c : (k0 + c) / m)) * HW : zero_plane.data();
      // In: kVec positions of the block's planes at a time, transposed into pixels.
      for (int64_t f = 0; f < HW; f += kVec) {
        const int64_t f0 = std::min(f, HW - kVec);
        for (int64_t c = 0; c < kVec; ++c) blk[c] = loadv(planes[c] + f0);
        transpose_block(blk);
        for (int64_t j = 0; j < kVec; ++j) {
          const int64_t t = slot[size_t(f0 + j)];
          if (t >= 0) put(tile.data() + t * kVec, blk[j]);
        }
      }
      // Compute: each output pixel's taps, kVec channels per vector.
      for (int64_t t = 0; t < RS; ++t)
        std::memcpy(wblk + t * kVec, wt.data() + t * kp + k0, sizeof(Vt));
      Vt b0;
      std::memcpy(&b0, bias.data() + k0, sizeof b0);
      // (Sizes as std::integral_constant arguments: generic lambdas, not C++20 template ones.)
      auto group = [&](auto nr, auto nc, int64_t pp, int64_t q) {
        lanes_group<T, decltype(nr)::value, decltype(nc)::value, KR, KS>(
            tile.data() + (pp * geo.row + q * geo.col), out.data() + (pp * geo.out_row + q * kVec),
            wblk, b0, R, S, geo);
      };
      // Rows [pp, pp + nr): groups of 4 columns, then the rest (1 to 3) as one group. (Zen 4
      // does one 16-lane multiply-add per cycle, 4 cycles each: 4 to 8 sums keep it busy;
      // overlapping groups, which recompute pixels, cost more than the narrower last group.)
      auto rows = [&](auto nr, int64_t pp) {
        int64_t q = 0;
        for (; q + 4 <= Q; q += 4) group(nr, Int<4>{}, pp, q);
        switch (Q - q) {
          case 3: group(nr, Int<3>{}, pp, q); break;
          case 2: group(nr, Int<2>{}, pp, q); break;
          case 1: group(nr, Int<1>{}, pp, q); break;
          default: break;
        }
      };
      // Pairs of rows, then the last row if P is odd.
      int64_t pp = 0;
      for (; pp + 2 <= P; pp += 2) rows(Int<2>{}, pp);
      if (pp < P) rows(Int<1>{}, pp);
      // Out: kVec output pixels at a time, transposed back into the block's planes.
      for (int64_t o = 0; o < PQ; o += kVec) {
        const int64_t o0 = std::min(o, PQ - kVec);
        for (int64_t j = 0; j < kVec; ++j) blk[j] = load_acc<T>(out.data() + (o0 + j) * kVec);
        transpose_block(blk);
        for (int64_t c = 0; c < nk; ++c) storev(yb + c * PQ + o0, blk[c]);
      }
    }
  });
}

// Output rows at least this wide read the input in place; narrower ones (where the edge
// columns would dominate) go through a padded copy of the plane.
constexpr int64_t kWideRow = 2 * kVec;

// The NHWC kernels prefetch rows when input and output together exceed this: below it, they
// stay in the caches from call to call, and the prefetches cost more than they save (on the
// 2-core test machine, with a 32 MiB L3, averaged over three interleaved runs: 384 channels
// at 14 x 14, batch 8, 4.8 MB, ran about 8% slower with them; 240 at 28 x 28, 12 MB, about
// 30% faster).
constexpr int64_t kPrefetchBytes = int64_t(8) << 20;

template <typename T, int KR, int KS>
void depthwise_forward_nchw_k(const Conv2dFwdParams& p, const ParallelFor& pfor) {
  const Conv2dShape& s = p.s;
  // The flattened kernel where it applies: twice as fast as the row kernel on 56 x 56 and
  // 112 x 112 planes, and no lanes lost to short rows.
  const bool flat =
      s.sh == 1 && s.sw == 1 && s.Q == s.W && s.W > 0 && mask_period(s.W) <= kMaxMaskPeriod;
  // The channels-as-lanes kernel on planes smaller than 128 (7 x 7: 1.3x the flattened kernel)
  // and wherever the flattened kernel does not apply (stride 2: 2-5x the row kernel), as long
  // as its tile stays within kLanesTileBytes.
  if (lanes_fit<T>(s, KR ? KR : s.R, KS ? KS : s.S) && (!flat || s.H * s.W < 128))
    return depthwise_forward_nchw_lanes<T, KR, KS>(p, pfor);
  if (flat) return depthwise_forward_nchw_flat<T, KR, KS>(p, pfor);
  if (p.s.Q >= kWideRow) return depthwise_forward_nchw_rows<T, KR, KS>(p, pfor);
  depthwise_forward_nchw_padded<T, KR, KS>(p, pfor);
}

template <typename T>
void depthwise_forward_nchw(const Conv2dFwdParams& p, const ParallelFor& pfor) {
  if (p.s.R == 3 && p.s.S == 3) return depthwise_forward_nchw_k<T, 3, 3>(p, pfor);
  if (p.s.R == 5 && p.s.S == 5) return depthwise_forward_nchw_k<T, 5, 5>(p, pfor);
  depthwise_forward_nchw_k<T, 0, 0>(p, pfor);
}

// Software prefetch of what the next step of an NHWC kernel (its next output rows) touches:
// the input rows that this step does not read (into L2) and the output rows (for writing),
// spread over this step's work: `step()` after each group of output pixels issues the next
// few cache lines. Without it, each channel block's pass over a row reads and writes one
// cache line in C / kVec, strided streams the hardware prefetchers follow poorly: at 96
// channels and stride 2 the kernel ran at half the bandwidth of a plain sum of the input,
// and the output lines' reads for ownership stalled the stores. (Non-temporal stores would
// avoid those reads, but leave the output out of the caches for the next layer.)
class RowPrefetch {
 public:
  // This step computes output rows [i, i + count) (of N * P), the next as many from i + count;
  // `steps`: the calls of step() to come in this one.
  template <typename T>
  void plan(const Conv2dShape& s, const T* x, const T* y, int64_t i, int64_t count, int64_t R,
            int64_t steps) {
    n_seg_ = cur_ = off_ = 0;
    const int64_t j = i + count, n = j / s.P, end = std::min(j + count, s.N * s.P);
    int64_t lines = 0;
    auto add = [&](const void* p, int64_t bytes, bool write) {
      if (n_seg_ == kMaxSeg) return;
      seg_[n_seg_] = {static_cast<const char*>(p), bytes, write};
      ++n_seg_;
      lines += (bytes + kLine - 1) / kLine;
    };
    // The input rows of output row o (of image n): (o % P) sh - pt + r dh, r < R.
    auto reads = [&](int64_t first, int64_t count, int64_t h) {
      for (int64_t o = first; o < first + count; ++o)
        for (int64_t r = 0; r < R && o / s.P == n; ++r)
          if ((o % s.P) * s.sh - s.pt + r * s.dh == h) return true;
      return false;
    };
    for (int64_t o = j; o < end; ++o) {
      for (int64_t r = 0; r < R && o / s.P == n; ++r) {
        const int64_t h = (o % s.P) * s.sh - s.pt + r * s.dh;
        if (h < 0 || h >= s.H || reads(i, count, h) || reads(j, o - j, h)) continue;
        add(x + (n * s.H + h) * s.W * s.C, s.W * s.C * int64_t(sizeof(T)), false);
      }
      add(y + o * s.Q * s.K, s.Q * s.K * int64_t(sizeof(T)), true);
    }
    per_step_ = (lines + std::max<int64_t>(steps, 1) - 1) / std::max<int64_t>(steps, 1);
  }
  void step() {
    for (int64_t k = 0; k < per_step_ && cur_ < n_seg_; ++k) {
      const Seg& g = seg_[cur_];
      if (g.write)
        __builtin_prefetch(g.p + off_, 1, 2);
      else
        __builtin_prefetch(g.p + off_, 0, 2);
      off_ += kLine;
      if (off_ >= g.bytes) {
        off_ = 0;
        ++cur_;
      }
    }
  }

 private:
  static constexpr int64_t kLine = 64, kMaxSeg = 16;
  struct Seg {
    const char* p;
    int64_t bytes;
    bool write;
  };
  Seg seg_[kMaxSeg];
  int64_t n_seg_ = 0, cur_ = 0, off_ = 0, per_step_ = 0;
};

// Depthwise forward, NHWC: output rows (n, p) in order, one at a time or, at unit stride and
// dilation with the kernel size known, two at a time. With one output channel per input
// channel, kVec channels at a time, the tap weights loaded once per channel block (KR x KS as
// in the NCHW kernel), input rows in the padding skipped, and columns several at a time:
// - at unit column stride and dilation (KS known), groups of 4 columns, loading each input
//   column of a row once for all taps, those in the padding as zeros in the edge groups; two
//   output rows at once at unit row stride and dilation, which read R + 1 input rows, each
//   loaded once for both (a channel block's pass over R rows of many channels does not stay
//   in L1; pairs load 2 rows per output row from L2 instead of 3, and 1/3 input vector per
//   FMA instead of 1/2);
// - otherwise the row's inner columns 4 at a time, the edge columns a pixel at a time.
// Everything else (the channel tail, channel multipliers) a pixel at a time.
template <typename T, int KR, int KS>
void depthwise_forward_nhwc_k(const Conv2dFwdParams& p, const ParallelFor& pfor) {
  const Conv2dShape& s = p.s;
  const Geo g(s);
  const int64_t m = s.K / s.C, R = KR ? KR : s.R, S = KS ? KS : s.S;
  const T* x = static_cast<const T*>(p.x);
  T* y = static_cast<T*>(p.y);
  const auto wt = taps_by_channel(s, static_cast<const T*>(p.w));
  const auto bias = bias_acc<T>(p);
  const std::vector<T> zeros(size_t(s.W * s.C), T{});
  const Range inner = inner_columns(s);
  const int64_t k_vec = m == 1 ? s.K / kVec * kVec : 0;  // channels of the vector path
  const bool unit = KS > 0 && s.sw == 1 && s.dw == 1;
  const bool pairs = unit && s.sh == 1 && s.dh == 1;
  // Prefetch where the input does not stay in the caches between calls.
  const bool prefetch =
      k_vec > 0 &&
      (s.N * s.H * s.W * s.C + s.N * s.P * s.Q * s.K) * int64_t(sizeof(T)) > kPrefetchBytes;
  pfor(0, s.N * s.P, 1, [&](int64_t i0, int64_t i1) {
    std::vector<A<T>> acc(size_t(s.K)), xv(size_t(s.C));
    // The input rows of the step: R, or R + 1 for two output rows.
    std::vector<const T*> rows(static_cast<size_t>(R + 1));
    constexpr int64_t kTaps = KR * KS > 0 ? KR * KS : 1;
    constexpr int64_t kRows = KR > 0 ? KR + 1 : 1;
    V<T> wv[kTaps];
    RowPrefetch pf;
    for (int64_t i = i0; i < i1;) {
      const int64_t n = i / s.P, pp = i % s.P;
      const int64_t outs = pairs && i + 1 < i1 && pp + 1 < s.P ? 2 : 1;
      const int64_t in_rows = R + outs - 1;
      for (int64_t r = 0; r < in_rows; ++r) {
        const int64_t h = pp * s.sh - s.pt + r * s.dh;
        rows[size_t(r)] = h >= 0 && h < s.H ? x + (n * s.H + h) * s.W * s.C : zeros.data();
      }
      if (prefetch) pf.plan(s, x, y, i, outs, R, k_vec / kVec * ((s.Q + 3) / 4));
      // Channels [k0, K) of output pixel q of output row i + o, taps checked against the row.
      auto pixel = [&](int64_t o, int64_t q, int64_t k0) {
        for (int64_t k = k0; k < s.K; ++k) acc[size_t(k)] = bias[size_t(k)];
        for (int64_t r = 0; r < R; ++r)
          for (int64_t ss = 0; ss < S; ++ss) {
            const int64_t wc = q * s.sw - s.pl + ss * s.dw;
            if (wc < 0 || wc >= s.W) continue;
            const T* xp = rows[size_t(r + o)] + wc * s.C;
            const A<T>* wr = wt.data() + (r * S + ss) * s.K;
            if (m == 1) {
              for (int64_t k = k0; k < s.K; ++k) acc[size_t(k)] += wr[k] * load(xp + k);
            } else {
              load_n(xp, xv.data(), s.C);
              for (int64_t k = k0; k < s.K; ++k) acc[size_t(k)] += wr[k] * xv[size_t(k / m)];
            }
          }
        T* yp = y + ((i + o) * s.Q + q) * s.K;
        for (int64_t k = k0; k < s.K; ++k) store(yp + k, acc[size_t(k)]);
      };
      if (k_vec < s.K)
        for (int64_t o = 0; o < outs; ++o)
          for (int64_t q = 0; q < s.Q; ++q) pixel(o, q, k_vec);
      // The shape in locals: stores through y could alias a field of s.
      const int64_t C = s.C, K = s.K, W = s.W, Q = s.Q, sw = s.sw, pl = s.pl, dwc = s.dw * C;
      // The rows inside the input (those in the padding are skipped, not summed as zeros).
      bool row_in[kRows];
      for (int64_t r = 0; r < kRows; ++r)
        row_in[r] = KR == 0 || (r < in_rows && rows[size_t(r)] != zeros.data());
      T* const yrow = y + i * Q * K;
      for (int64_t k0 = 0; k0 < k_vec; k0 += kVec) {
        if constexpr (KR * KS > 0)
          for (int64_t t = 0; t < kTaps; ++t) wv[t] = load_acc<T>(wt.data() + t * K + k0);
        const V<T> b0 = load_acc<T>(bias.data() + k0);
        auto tap = [&](int64_t r, int64_t ss) {
          return KR * KS > 0 ? wv[(r * S + ss) % kTaps]
                             : load_acc<T>(wt.data() + (r * S + ss) * K + k0);
        };
        // kPix columns from q of kOut output rows at unit stride and dilation (KS known): the
        // kPix + S - 1 input columns of each of the R + kOut - 1 rows are loaded once (not
        // once per tap and output row), those in the padding as zeros when `checked`;
        // independent sums as below. The loops are unrolled explicitly: under -fwrapv (the
        // extension's flags) GCC leaves them rolled, the columns in memory.
        auto unit_px = [&](int64_t q, auto out, auto pix, auto check) {
          constexpr int kOut = decltype(out)::value;
          constexpr int kPix = decltype(pix)::value;
          constexpr bool checked = decltype(check)::value;
          constexpr int kCols = kPix + (KS > 0 ? KS : 1) - 1;
          constexpr int kR = KR > 0 ? KR : 1;
          V<T> a[kOut][kPix];
          for (int o = 0; o < kOut; ++o)
            for (int j = 0; j < kPix; ++j) a[o][j] = b0;
#pragma GCC unroll 16
          for (int r = 0; r < kR + kOut - 1; ++r) {
            if (!row_in[r]) continue;
            const T* xr = rows[size_t(r)] + (q - pl) * C + k0;
            V<T> xc[kCols];
#pragma GCC unroll 16
            for (int c = 0; c < kCols; ++c) {
              const int64_t wc = q - pl + c;
              if (!checked || (wc >= 0 && wc < W))
                xc[c] = loadv(xr + c * C);
              else
                xc[c] = V<T>{};
            }
#pragma GCC unroll 4
            for (int o = 0; o < kOut; ++o) {
              if (r - o < 0 || r - o >= kR) continue;  // input row r is tap row r - o of o
#pragma GCC unroll 16
              for (int ss = 0; ss < kCols - kPix + 1; ++ss) {
                const V<T> wv_ = tap(r - o, ss);
#pragma GCC unroll 16
                for (int j = 0; j < kPix; ++j) a[o][j] += wv_ * xc[j + ss];
              }
            }
          }
          for (int o = 0; o < kOut; ++o)
            for (int j = 0; j < kPix; ++j) storev(yrow + (o * Q + q + j) * K + k0, a[o][j]);
        };
        if constexpr (KS > 0) {
          if (unit) {
            auto groups = [&](auto out) {
              using Four = std::integral_constant<int, 4>;
              const std::true_type check;
              const std::false_type inside;
              int64_t q = 0;
              for (; q + 4 <= Q; q += 4) {  // the edge groups checked
                if (q < inner.lo || q + 4 > inner.hi)
                  unit_px(q, out, Four{}, check);
                else
                  unit_px(q, out, Four{}, inside);
                pf.step();
              }
              switch (Q - q) {
                case 3: unit_px(q, out, std::integral_constant<int, 3>{}, check); break;
                case 2: unit_px(q, out, std::integral_constant<int, 2>{}, check); break;
                case 1: unit_px(q, out, std::integral_constant<int, 1>{}, check); break;
                default: break;
              }
            };
            if (outs == 2)
              groups(std::integral_constant<int, 2>{});
            else
              groups(std::integral_constant<int, 1>{});
            continue;
          }
        }
        auto edge = [&](int64_t q) {  // an edge column: skip the taps in the padding
          V<T> a = b0;
          for (int64_t r = 0; r < R; ++r)
            for (int64_t ss = 0; ss < S; ++ss) {
              if (!row_in[r % kRows]) continue;
              const int64_t wc = q * sw - pl + ss * s.dw;
              if (wc >= 0 && wc < W) a += tap(r, ss) * loadv(rows[size_t(r)] + wc * C + k0);
            }
          storev(yrow + q * K + k0, a);
        };
        // kPix inner columns from q at once: independent sums (the FMA latency overlaps)
        // sharing each tap's weight vector.
        auto inner_px = [&](int64_t q, auto pix) {
          constexpr int kPix = decltype(pix)::value;
          V<T> a[kPix];
          for (int j = 0; j < kPix; ++j) a[j] = b0;
          for (int64_t r = 0; r < R; ++r) {
            if (!row_in[r % kRows]) continue;
            const T* xr = rows[size_t(r)] + (q * sw - pl) * C + k0;
            for (int64_t ss = 0; ss < S; ++ss) {
              const V<T> wv_ = tap(r, ss);
              for (int j = 0; j < kPix; ++j) a[j] += wv_ * loadv(xr + ss * dwc + j * sw * C);
            }
          }
          for (int j = 0; j < kPix; ++j) storev(yrow + (q + j) * K + k0, a[j]);
        };
        int64_t q = 0;
        for (; q < std::min(inner.lo, Q); ++q) edge(q);
        for (; q + 4 <= inner.hi; q += 4) {
          inner_px(q, std::integral_constant<int, 4>{});
          pf.step();
        }
        for (; q < inner.hi; ++q) inner_px(q, std::integral_constant<int, 1>{});
        for (; q < Q; ++q) edge(q);
      }
      i += outs;
    }
  });
}

template <typename T>
void depthwise_forward_nhwc(const Conv2dFwdParams& p, const ParallelFor& pfor) {
  if (p.s.R == 3 && p.s.S == 3) return depthwise_forward_nhwc_k<T, 3, 3>(p, pfor);
  if (p.s.R == 5 && p.s.S == 5) return depthwise_forward_nhwc_k<T, 5, 5>(p, pfor);
  depthwise_forward_nhwc_k<T, 0, 0>(p, pfor);
}

// Depthwise backward in NCHW, in place: per input plane (data gradient) and per output channel
// (weight gradient), a row of taps at a time. Used on tensors too large for copies to NHWC
// to pay (below).
template <typename T>
void depthwise_backward_nchw_direct(const Conv2dBwdParams& p, const ParallelFor& pfor) {
  const Conv2dShape& s = p.s;
  const Geo g(s);
  const int64_t m = s.K / s.C;
  const T* x = static_cast<const T*>(p.x);
  const T* gy = static_cast<const T*>(p.gy);
  const auto w = to_acc(static_cast<const T*>(p.w), s.K * g.RS);
  if (p.gx) {  // one writer per input plane: it scatters the m output planes that read it
    T* gx = static_cast<T*>(p.gx);
    pfor(0, s.N * s.C, 1, [&](int64_t i0, int64_t i1) {
      std::vector<A<T>> plane(size_t(g.HW)), gyr(size_t(s.Q));
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t n = i / s.C, c = i % s.C;
        std::fill(plane.begin(), plane.end(), A<T>(0));
        for (int64_t k = c * m; k < (c + 1) * m; ++k) {
          const A<T>* wk = w.data() + k * g.RS;
          for (int64_t pp = 0; pp < s.P; ++pp) {
            load_n(gy + (n * s.K + k) * g.PQ + pp * s.Q, gyr.data(), s.Q);
            for (int64_t r = 0; r < s.R; ++r) {
              const int64_t h = pp * s.sh - s.pt + r * s.dh;
              if (h < 0 || h >= s.H) continue;
              for (int64_t ss = 0; ss < s.S; ++ss) {
                const int64_t off = ss * s.dw - s.pl;
                const Range qr = valid(s.Q, s.sw, off, s.W);
                A<T>* pr = plane.data() + h * s.W + off;
                const A<T> wv = wk[r * s.S + ss];
                if (s.sw == 1)
                  for (int64_t q = qr.lo; q < qr.hi; ++q) pr[q] += wv * gyr[size_t(q)];
                else
                  for (int64_t q = qr.lo; q < qr.hi; ++q) pr[q * s.sw] += wv * gyr[size_t(q)];
              }
            }
          }
        }
        T* out = gx + i * g.HW;
        for (int64_t j = 0; j < g.HW; ++j) store(out + j, plane[size_t(j)]);
      }
    });
  }
  if (p.gw) {  // one writer per output channel; each row's partial sum is added in double
    T* gw = static_cast<T*>(p.gw);
    pfor(0, s.K, 1, [&](int64_t k0, int64_t k1) {
      std::vector<double> acc(size_t(g.RS));
      for (int64_t k = k0; k < k1; ++k) {
        std::fill(acc.begin(), acc.end(), 0.0);
        for (int64_t n = 0; n < s.N; ++n) {
          const T* xp = x + (n * s.C + k / m) * g.HW;
          const T* gp = gy + (n * s.K + k) * g.PQ;
          for (int64_t pp = 0; pp < s.P; ++pp)
            for (int64_t r = 0; r < s.R; ++r) {
              const int64_t h = pp * s.sh - s.pt + r * s.dh;
              if (h < 0 || h >= s.H) continue;
              for (int64_t ss = 0; ss < s.S; ++ss) {
                const int64_t off = ss * s.dw - s.pl;
                const Range qr = valid(s.Q, s.sw, off, s.W);
                const T* xr = xp + h * s.W + off;
                const T* gr = gp + pp * s.Q;
                A<T> part = 0;
                for (int64_t q = qr.lo; q < qr.hi; ++q) part += load(gr + q) * load(xr + q * s.sw);
                acc[size_t(r * s.S + ss)] += double(part);
              }
            }
        }
        for (int64_t rs = 0; rs < g.RS; ++rs) store(gw + k * g.RS + rs, A<T>(acc[size_t(rs)]));
      }
    });
  }
}

template <typename T>
void depthwise_backward_nhwc(const Conv2dBwdParams& p, const ParallelFor& pfor) {
  const Conv2dShape& s = p.s;
  const Geo g(s);
  const int64_t m = s.K / s.C;
  const T* x = static_cast<const T*>(p.x);
  const T* gy = static_cast<const T*>(p.gy);
  const auto wt = taps_by_channel(s, static_cast<const T*>(p.w));
  if (p.gx) {  // a gather: input pixel (n, h, w) sums the outputs whose taps land on it
    T* gx = static_cast<T*>(p.gx);
    pfor(0, s.N * s.H, 1, [&](int64_t i0, int64_t i1) {
      std::vector<A<T>> acc(size_t(s.C)), gv(size_t(s.K));
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t n = i / s.H, h = i % s.H;
        for (int64_t wc = 0; wc < s.W; ++wc) {
          std::fill(acc.begin(), acc.end(), A<T>(0));
          for (int64_t r = 0; r < s.R; ++r) {
            const int64_t ph = h + s.pt - r * s.dh;
            if (ph < 0 || ph % s.sh != 0 || ph / s.sh >= s.P) continue;
            for (int64_t ss = 0; ss < s.S; ++ss) {
              const int64_t qw = wc + s.pl - ss * s.dw;
              if (qw < 0 || qw % s.sw != 0 || qw / s.sw >= s.Q) continue;
              const T* gp = gy + ((n * s.P + ph / s.sh) * s.Q + qw / s.sw) * s.K;
              const A<T>* wr = wt.data() + (r * s.S + ss) * s.K;
              A<T>* a = acc.data();
              if (m == 1) {
                for (int64_t c = 0; c < s.C; ++c) a[c] += wr[c] * load(gp + c);
              } else {
                load_n(gp, gv.data(), s.K);
                for (int64_t k = 0; k < s.K; ++k) a[k / m] += wr[k] * gv[size_t(k)];
              }
            }
          }
          T* out = gx + ((n * s.H + h) * s.W + wc) * s.C;
          for (int64_t c = 0; c < s.C; ++c) store(out + c, acc[size_t(c)]);
        }
      }
    });
  }
  if (p.gw) {  // threads own ranges of output channels; per output row partial sums in A
    T* gw = static_cast<T*>(p.gw);
    pfor(0, s.K, 16, [&](int64_t k0, int64_t k1) {
      const int64_t kb = k1 - k0;
      std::vector<double> acc(size_t(g.RS * kb), 0.0);
      std::vector<A<T>> part(size_t(g.RS * kb));
      for (int64_t n = 0; n < s.N; ++n)
        for (int64_t pp = 0; pp < s.P; ++pp) {
          std::fill(part.begin(), part.end(), A<T>(0));
          for (int64_t q = 0; q < s.Q; ++q) {
            const T* gp = gy + ((n * s.P + pp) * s.Q + q) * s.K + k0;
            for (int64_t r = 0; r < s.R; ++r) {
              const int64_t h = pp * s.sh - s.pt + r * s.dh;
              if (h < 0 || h >= s.H) continue;
              for (int64_t ss = 0; ss < s.S; ++ss) {
                const int64_t wc = q * s.sw - s.pl + ss * s.dw;
                if (wc < 0 || wc >= s.W) continue;
                const T* xp = x + ((n * s.H + h) * s.W + wc) * s.C;
                A<T>* a = part.data() + (r * s.S + ss) * kb;
                if (m == 1)
                  for (int64_t k = 0; k < kb; ++k) a[k] += load(gp + k) * load(xp + k0 + k);
                else
                  for (int64_t k = 0; k < kb; ++k) a[k] += load(gp + k) * load(xp + (k0 + k) / m);
              }
            }
          }
          for (size_t j = 0; j < part.size(); ++j) acc[j] += double(part[j]);
        }
      for (int64_t k = 0; k < kb; ++k)
        for (int64_t rs = 0; rs < g.RS; ++rs)
          store(gw + (k0 + k) * g.RS + rs, A<T>(acc[size_t(rs * kb + k)]));
    });
  }
}

// dst[n][c][r] = src[n][r][c] for images n < N of a rows x cols matrix each, in kVec x kVec
// tiles transposed in registers (threads take tiles of kVec rows; a row tail goes element by
// element, and a column tail as a last tile overlapping the one before).
template <typename T>
void transpose_images(const T* src, T* dst, int64_t N, int64_t rows, int64_t cols,
                      const ParallelFor& pfor) {
  const int64_t rb = ceil_div(rows, kVec);
  pfor(0, N * rb, 1, [&](int64_t i0, int64_t i1) {
    V<T> blk[kVec];
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t n = i / rb, r0 = i % rb * kVec, r1 = std::min(rows, r0 + kVec);
      const T* const sp = src + n * rows * cols;
      T* const dp = dst + n * rows * cols;
      if (r1 - r0 < kVec || cols < kVec) {
        for (int64_t c = 0; c < cols; ++c)
          for (int64_t r = r0; r < r1; ++r) dp[c * rows + r] = sp[r * cols + c];
        continue;
      }
      for (int64_t c = 0; c < cols; c += kVec) {
        const int64_t c0 = std::min(c, cols - kVec);
        for (int64_t j = 0; j < kVec; ++j) blk[j] = loadv(sp + (r0 + j) * cols + c0);
        transpose_block(blk);
        for (int64_t j = 0; j < kVec; ++j) storev(dp + (c0 + j) * rows + r0, blk[j]);
      }
    }
  });
}

// NCHW depthwise backward on small tensors copies gy (and x, for the weight gradient) to NHWC
// and runs the NHWC kernels, whose channel vectors beat the small planes' short rows, then
// copies the data gradient back: MobileNetV2's 960@7 (batch 8, 4.5 MB of copies) ran 4.7x
// faster, 384@14 (7.2 MB) 1.9x. On larger tensors the fresh copies' page faults cost more than
// the NHWC kernels save (32@112, 38 MB: 1.5x slower; 144@56, 43 MB: even). Up to this many
// bytes of copies (FASTLAYERS_DEPTHWISE_COPY_BYTES overrides it, so that the tests reach both
// paths); beyond, the direct kernel.
inline int64_t depthwise_copy_bytes() {
  const char* env = std::getenv("FASTLAYERS_DEPTHWISE_COPY_BYTES");
  return env ? std::strtoll(env, nullptr, 10) : int64_t(16) << 20;
}

template <typename T>
void depthwise_backward_nchw(const Conv2dBwdParams& p, const ParallelFor& pfor) {
  const Conv2dShape& s = p.s;
  const int64_t HW = s.H * s.W, PQ = s.P * s.Q;
  const int64_t in = s.N * s.C * HW, out = s.N * s.K * PQ;
  const int64_t bytes = (out + (p.gw ? in : 0) + (p.gx ? in : 0)) * int64_t(sizeof(T));
  if (bytes > depthwise_copy_bytes()) return depthwise_backward_nchw_direct<T>(p, pfor);
  Scratch<T> gyt, xt, gxt;
  T* const gy = gyt.get(out);
  T* const x = p.gw ? xt.get(in) : nullptr;
  T* const gx = p.gx ? gxt.get(in) : nullptr;
  transpose_images(static_cast<const T*>(p.gy), gy, s.N, s.K, PQ, pfor);
  if (x) transpose_images(static_cast<const T*>(p.x), x, s.N, s.C, HW, pfor);
  Conv2dBwdParams q = p;
  q.s.channels_last = true;
  q.gy = gy;
  q.x = x ? x : p.x;
  q.gx = gx;
  q.gb = nullptr;
  depthwise_backward_nhwc<T>(q, pfor);
  if (gx) transpose_images(gx, static_cast<T*>(p.gx), s.N, HW, s.C, pfor);
}

// ---------------------------------------------------------------------------------------

// gb[k] = sum over n, p, q of gy; a double sum per channel, in a fixed order.
template <typename T>
void bias_grad(const Conv2dBwdParams& p, const ParallelFor& pfor) {
  const Conv2dShape& s = p.s;
  const int64_t PQ = s.P * s.Q;
  const T* gy = static_cast<const T*>(p.gy);
  T* gb = static_cast<T*>(p.gb);
  if (s.channels_last) {
    pfor(0, s.K, 16, [&](int64_t k0, int64_t k1) {
      std::vector<double> acc(size_t(k1 - k0), 0.0);
      for (int64_t i = 0; i < s.N * PQ; ++i)
        for (int64_t k = k0; k < k1; ++k) acc[size_t(k - k0)] += double(load(gy + i * s.K + k));
      for (int64_t k = k0; k < k1; ++k) store(gb + k, A<T>(acc[size_t(k - k0)]));
    });
  } else {
    pfor(0, s.K, 1, [&](int64_t k0, int64_t k1) {
      for (int64_t k = k0; k < k1; ++k) {
        double acc = 0;
        for (int64_t n = 0; n < s.N; ++n)
          for (int64_t j0 = 0; j0 < PQ; j0 += s.Q) {  // a row at a time in A, rows in double
            const T* gp = gy + (n * s.K + k) * PQ + j0;
            A<T> part = 0;
            for (int64_t j = 0; j < s.Q; ++j) part += load(gp + j);
            acc += double(part);
          }
        store(gb + k, A<T>(acc));
      }
    });
  }
}

bool depthwise(const Conv2dShape& s) { return s.groups == s.C && s.C > 1; }

// Below this many multiply-adds a convolution runs on the calling thread: a parallel region
// costs microseconds, far more than such a convolution (and much more when the cores are
// shared), as a small model's training steps show.
constexpr int64_t kSerialMacs = int64_t(1) << 18;

const ParallelFor& pick(const Conv2dShape& s, const ParallelFor& pfor) {
  static const ParallelFor serial = serial_for;
  const int64_t macs = s.N * s.K * s.P * s.Q * (s.C / s.groups) * s.R * s.S;
  return macs < kSerialMacs ? serial : pfor;
}

template <typename T>
void forward_t(const Conv2dFwdParams& p, const ParallelFor& pfor_all, const Gemm& gemm) {
  const ParallelFor& pfor = pick(p.s, pfor_all);
  if (depthwise(p.s))
    p.s.channels_last ? depthwise_forward_nhwc<T>(p, pfor) : depthwise_forward_nchw<T>(p, pfor);
  else
    p.s.channels_last ? forward_nhwc<T>(p, pfor, gemm) : forward_nchw<T>(p, pfor, gemm);
}

template <typename T>
void backward_t(const Conv2dBwdParams& p, const ParallelFor& pfor_all, const Gemm& gemm) {
  const ParallelFor& pfor = pick(p.s, pfor_all);
  if (p.gb) bias_grad<T>(p, pfor);
  if (!p.gx && !p.gw) return;
  if (depthwise(p.s))
    p.s.channels_last ? depthwise_backward_nhwc<T>(p, pfor) : depthwise_backward_nchw<T>(p, pfor);
  else
    p.s.channels_last ? backward_nhwc<T>(p, pfor, gemm) : backward_nchw<T>(p, pfor, gemm);
}

}  // namespace

void conv2d_forward(const Conv2dFwdParams& p, const ParallelFor& pfor, const Gemm& gemm);
void conv2d_backward(const Conv2dBwdParams& p, const ParallelFor& pfor, const Gemm& gemm);

void conv2d_forward(const Conv2dFwdParams& p, const ParallelFor& pfor, const Gemm& gemm) {
  switch (p.s.dtype) {
    case DType::kFloat32: return forward_t<float>(p, pfor, gemm);
    case DType::kFloat64: return forward_t<double>(p, pfor, gemm);
    case DType::kBFloat16: return forward_t<bf16>(p, pfor, gemm);
    default: throw std::invalid_argument("conv2d (cpu): unsupported dtype");
  }
}

void conv2d_backward(const Conv2dBwdParams& p, const ParallelFor& pfor, const Gemm& gemm) {
  switch (p.s.dtype) {
    case DType::kFloat32: return backward_t<float>(p, pfor, gemm);
    case DType::kFloat64: return backward_t<double>(p, pfor, gemm);
    case DType::kBFloat16: return backward_t<bf16>(p, pfor, gemm);
    default: throw std::invalid_argument("conv2d (cpu): unsupported dtype");
  }
}

}  // namespace FL_ISA_NS
}  // namespace cpu
}  // namespace fl
