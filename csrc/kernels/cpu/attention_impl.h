// Scaled dot-product attention on the CPU, forward and backward (flash-style, tiled).
//
// Included once per instruction set by attention*.cpp with FL_ISA_NS naming the namespace
// (as max_pool2d_impl.h). Shapes and semantics: fastlayers/attention.h.
//
// Forward: a task is (batch, head, tile of kBr query rows). It streams key tiles of kBc:
// S = scale * Q K^T (+ mask), then the online softmax keeps a running row max m, row sum l
// and unnormalised output O, rescaled whenever m grows; O / l and lse = m + log l at the end.
// Key tiles that causal masking hides entirely are skipped.
// Backward: P = exp(S - lse) is recomputed from the saved lse. To stay deterministic
// without atomics it runs in passes: D_i = rowsum(P_i dP_i) per query tile; then one task
// per (batch, key/value head, key tile) sums dK and dV over every query row of every query
// head of its group; then one task per (batch, head, query tile) sums dQ over the key tiles.
// Every product is a small GEMM on tiles in the accumulation type (gemm_acc: a register
// block of 4 rows x 64 columns), with K tiles stored transposed and row lengths padded to
// multiples of 16 so the column loops have no tails.

#ifndef FL_ISA_NS
#error "define FL_ISA_NS before including attention_impl.h"
#endif

namespace fl {
namespace cpu {
namespace FL_ISA_NS {

namespace {

constexpr int64_t kBr = 32;  // query rows per tile
constexpr int64_t kBc = 64;  // keys per tile
constexpr int64_t kLanes = 16;

inline int64_t pad16(int64_t n) { return (n + kLanes - 1) / kLanes * kLanes; }

// exp for the softmax: exact 0 below the float range (masked scores are -inf), NaN kept,
// ~2 ulp elsewhere. Branch-free so loops over it vectorise (std::exp does not). Rounding to
// the nearest integer by adding and subtracting 1.5 * 2^23 vectorises where nearbyint may not.
inline float exp_fast(float x) {
  const float xc = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  const float k = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  const float r = std::fma(k, -0.693145751953125f, std::fma(k, -1.428606765330187e-06f, xc));
  float p = 1.0f / 5040;
  p = std::fma(p, r, 1.0f / 720);
  p = std::fma(p, r, 1.0f / 120);
  p = std::fma(p, r, 1.0f / 24);
  p = std::fma(p, r, 1.0f / 6);
  p = std::fma(p, r, 0.5f);
  p = std::fma(p, r, 1.0f);
  p = std::fma(p, r, 1.0f);
  const float two_k = std::bit_cast<float>((int32_t(k) + 127) << 23);
  const float y = p * two_k;
  return x != x ? x : (x < -87.0f ? 0.0f : y);
}
inline double exp_fast(double x) { return std::exp(x); }

template <typename A>
constexpr A neg_inf() {
  return -std::numeric_limits<A>::infinity();
}

// C[m][0:N] += sum_k a(m, k) * B[k][0:N] for m < M, with a(m, k) = a[m * am + k * ak], B and
// C row-major (ldb, ldc); N a multiple of kLanes. A block of 4 rows x 64 columns of C stays
// in registers across the k loop.
template <typename A>
void gemm_acc(int64_t M, int64_t N, int64_t K, const A* a, int64_t am, int64_t ak, const A* b,
              int64_t ldb, A* c, int64_t ldc) {
  constexpr int64_t kR = 4, kC = 64;
  int64_t m0 = 0;
  for (; m0 + kR <= M; m0 += kR) {
    int64_t n0 = 0;
    for (; n0 + kC <= N; n0 += kC) {
      A acc[kR][kC];
      for (int64_t r = 0; r < kR; ++r)
        for (int64_t x = 0; x < kC; ++x) acc[r][x] = c[(m0 + r) * ldc + n0 + x];
      for (int64_t k = 0; k < K; ++k) {
        const A* br = b + k * ldb + n0;
        for (int64_t r = 0; r < kR; ++r) {
          const A w = a[(m0 + r) * am + k * ak];
          for (int64_t x = 0; x < kC; ++x) acc[r][x] += w * br[x];
        }
      }
      for (int64_t r = 0; r < kR; ++r)
        for (int64_t x = 0; x < kC; ++x) c[(m0 + r) * ldc + n0 + x] = acc[r][x];
    }
    for (; n0 < N; n0 += kLanes) {
      A acc[kR][kLanes];
      for (int64_t r = 0; r < kR; ++r)
        for (int64_t x = 0; x < kLanes; ++x) acc[r][x] = c[(m0 + r) * ldc + n0 + x];
      for (int64_t k = 0; k < K; ++k) {
        const A* br = b + k * ldb + n0;
        for (int64_t r = 0; r < kR; ++r) {
          const A w = a[(m0 + r) * am + k * ak];
          for (int64_t x = 0; x < kLanes; ++x) acc[r][x] += w * br[x];
        }
      }
      for (int64_t r = 0; r < kR; ++r)
        for (int64_t x = 0; x < kLanes; ++x) c[(m0 + r) * ldc + n0 + x] = acc[r][x];
    }
  }
  for (; m0 < M; ++m0)
    for (int64_t n0 = 0; n0 < N; n0 += kLanes) {
      A acc[kLanes];
      for (int64_t x = 0; x < kLanes; ++x) acc[x] = c[m0 * ldc + n0 + x];
      for (int64_t k = 0; k < K; ++k) {
        const A w = a[m0 * am + k * ak];
        const A* br = b + k * ldb + n0;
        for (int64_t x = 0; x < kLanes; ++x) acc[x] += w * br[x];
      }
      for (int64_t x = 0; x < kLanes; ++x) c[m0 * ldc + n0 + x] = acc[x];
    }
}

// The additive bias of a tile row of scores: -inf for keys query row i may not attend (tile
// padding, causal, bool mask false), the mask value for additive masks, else 0.
template <typename T, typename A>
inline void row_bias(const AttentionArgs& a, int64_t b, int64_t h, int64_t i, int64_t j0,
                     int64_t nj, A* bias) {
  const int64_t causal_end = a.causal ? std::clamp<int64_t>(i - j0 + 1, 0, nj) : nj;
  for (int64_t jj = 0; jj < kBc; ++jj) bias[jj] = jj < causal_end ? A(0) : neg_inf<A>();
  if (a.mask_kind == MaskKind::kNone) return;
  const int64_t base = b * a.mask_stride[0] + h * a.mask_stride[1] + i * a.mask_stride[2];
  const int64_t sj = a.mask_stride[3];
  if (a.mask_kind == MaskKind::kBool) {
    const bool* m = static_cast<const bool*>(a.mask) + base;
    for (int64_t jj = 0; jj < nj; ++jj)
      if (!m[(j0 + jj) * sj]) bias[jj] = neg_inf<A>();
  } else {
    const T* m = static_cast<const T*>(a.mask) + base;
    for (int64_t jj = 0; jj < nj; ++jj) bias[jj] += load(m + (j0 + jj) * sj);
  }
}

// Dropout factors of a tile row: 1 / (1 - p) for kept elements, 0 for dropped ones.
template <typename A>
inline void row_dropout(const AttentionArgs& a, const AttentionShape& s, int64_t b, int64_t h,
                        int64_t i, int64_t j0, int64_t nj, A* z) {
  const float keep = float(1.0 - a.dropout_p);
  const A inv = A(1) / A(1.0 - a.dropout_p);
  const DropoutStream ds{a.seed, a.offset};
  const uint64_t row = uint64_t(((b * s.Hq + h) * s.Lq + i) * s.Lk);
  for (int64_t jj = 0; jj < kBc; ++jj) z[jj] = jj < nj && ds.keep(row + j0 + jj, keep) ? inv : A(0);
}

// Rows [i0, i0 + ni) of a [rows, cols] operand with row stride `ld`, into dst[ni][ldd]
// (times `mul`, zero in columns [cols, ldd) and rows [ni, rows_to)), in the accumulation
// type. Returns whether a NaN (or an infinity) was loaded: x - x is NaN exactly then, and a
// sum of those is a reduction the compiler vectorises, where a boolean "or" is not.
template <typename T, typename A>
inline bool load_rows(const T* src, int64_t ld, int64_t i0, int64_t ni, int64_t cols, int64_t ldd,
                      int64_t rows_to, A mul, A* dst) {
  A check = 0;
  for (int64_t i = 0; i < ni; ++i) {
    const T* r = src + (i0 + i) * ld;
    A* d = dst + i * ldd;
    A lane[kLanes] = {};
    int64_t x = 0;
    for (; x + kLanes <= cols; x += kLanes)
      for (int64_t y = 0; y < kLanes; ++y) {
        d[x + y] = load(r + x + y) * mul;
        lane[y] += d[x + y] - d[x + y];
      }
    for (; x < cols; ++x) {
      d[x] = load(r + x) * mul;
      check += d[x] - d[x];
    }
    for (int64_t y = 0; y < kLanes; ++y) check += lane[y];
    for (int64_t x2 = cols; x2 < ldd; ++x2) d[x2] = A(0);
  }
  const bool nan = check != check;
  for (int64_t i = ni; i < rows_to; ++i)
    for (int64_t x = 0; x < ldd; ++x) dst[i * ldd + x] = A(0);
  return nan;
}

// Rows [j0, j0 + nj) of a [rows, cols] operand transposed into dst[cols][kBc], zero beyond nj.
template <typename T, typename A>
inline void load_transposed(const T* src, int64_t ld, int64_t j0, int64_t nj, int64_t cols,
                            A* dst) {
  for (int64_t d = 0; d < cols; ++d)
    for (int64_t jj = nj; jj < kBc; ++jj) dst[d * kBc + jj] = A(0);
  for (int64_t jj = 0; jj < nj; ++jj) {
    const T* r = src + (j0 + jj) * ld;
    for (int64_t d = 0; d < cols; ++d) dst[d * kBc + jj] = load(r + d);
  }
}

// With causal masking, a query tile whose last row is i_last attends keys [0, i_last].
inline int64_t key_end(const AttentionArgs& a, const AttentionShape& s, int64_t i_last) {
  return a.causal ? std::min(s.Lk, i_last + 1) : s.Lk;
}

template <typename T>
void fwd(const AttentionFwdParams& p, const ParallelFor& pfor) {
  using A = acc_t<T>;
  const AttentionShape& s = p.s;
  const AttentionArgs& a = p.a;
  const int64_t D = s.D, Dv = s.Dv, Dvp = pad16(Dv), group = s.Hq / s.Hkv;
  const int64_t qtiles = (s.Lq + kBr - 1) / kBr;
  const bool dropout = a.dropout_p > 0;
  const A scale = A(a.scale);
  pfor(0, s.B * s.Hq * qtiles, 1, [&](int64_t begin, int64_t end) {
    std::vector<A> qs(kBr * D), kt(D * kBc), vs(kBc * Dvp), o(kBr * Dvp), sc(kBr * kBc), m(kBr),
        l(kBr);
    A bias[kBc], z[kBc];
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / (s.Hq * qtiles), h = (task / qtiles) % s.Hq, qt = task % qtiles;
      const int64_t hk = h / group, i0 = qt * kBr, ni = std::min(kBr, s.Lq - i0);
      const T* q = static_cast<const T*>(p.q) + b * p.q_stride[0] + h * p.q_stride[1];
      const T* k = static_cast<const T*>(p.k) + b * p.k_stride[0] + hk * p.k_stride[1];
      const T* v = static_cast<const T*>(p.v) + b * p.v_stride[0] + hk * p.v_stride[1];
      load_rows(q, p.q_stride[2], i0, ni, D, D, ni, scale, qs.data());
      std::fill(o.begin(), o.end(), A(0));
      std::fill(m.begin(), m.end(), neg_inf<A>());
      std::fill(l.begin(), l.end(), A(0));
      const int64_t jend = key_end(a, s, i0 + ni - 1);
      for (int64_t j0 = 0; j0 < jend; j0 += kBc) {
        const int64_t nj = std::min(kBc, s.Lk - j0);
        load_transposed(k, p.k_stride[2], j0, nj, D, kt.data());
        const bool v_nan = load_rows(v, p.v_stride[2], j0, nj, Dv, Dvp, kBc, A(1), vs.data());
        std::fill(sc.begin(), sc.begin() + ni * kBc, A(0));
        gemm_acc(ni, kBc, D, qs.data(), D, 1, kt.data(), kBc, sc.data(), kBc);
        for (int64_t i = 0; i < ni; ++i) {
          A* srow = sc.data() + i * kBc;
          row_bias<T>(a, b, h, i0 + i, j0, nj, bias);
          // Row max and sum lane-wise over kLanes partial results (vectorisable, unlike a
          // scalar reduction); a NaN score makes the max NaN, as torch's softmax does.
          A mx_l[kLanes], nan_l[kLanes] = {};
          std::fill(mx_l, mx_l + kLanes, neg_inf<A>());
          for (int64_t j = 0; j < kBc; j += kLanes)
            for (int64_t y = 0; y < kLanes; ++y) {
              const A v = srow[j + y] + bias[j + y];
              srow[j + y] = v;
              mx_l[y] = v > mx_l[y] ? v : mx_l[y];
              nan_l[y] += v != v ? A(1) : A(0);
            }
          A mx = neg_inf<A>(), nan = 0;
          for (int64_t y = 0; y < kLanes; ++y) {
            mx = mx_l[y] > mx ? mx_l[y] : mx;
            nan += nan_l[y];
          }
          if (nan > A(0)) mx = std::numeric_limits<A>::quiet_NaN();
          const A m_new = max_takes(mx, m[i]) ? mx : m[i];
          if (m_new == neg_inf<A>()) {  // every key so far masked: nothing to add
            std::fill(srow, srow + kBc, A(0));
            continue;
          }
          const A alpha = exp_fast(m[i] - m_new);
          A sum_l[kLanes] = {};
          for (int64_t j = 0; j < kBc; j += kLanes)
            for (int64_t y = 0; y < kLanes; ++y) {
              srow[j + y] = exp_fast(srow[j + y] - m_new);
              sum_l[y] += srow[j + y];
            }
          A sum = 0;
          for (int64_t y = 0; y < kLanes; ++y) sum += sum_l[y];
          m[i] = m_new;
          l[i] = l[i] * alpha + sum;
          A* orow = o.data() + i * Dvp;
          for (int64_t d = 0; d < Dvp; ++d) orow[d] *= alpha;
          if (dropout) {
            row_dropout(a, s, b, h, i0 + i, j0, nj, z);
            for (int64_t jj = 0; jj < kBc; ++jj) srow[jj] *= z[jj];
          }
        }
        if (!v_nan) {
          gemm_acc(ni, Dvp, nj, sc.data(), kBc, 1, vs.data(), Dvp, o.data(), Dvp);
        } else {
          // A NaN in a value row reaches only the rows that attend it (probability != 0), not
          // every row of the tile through 0 * NaN.
          for (int64_t i = 0; i < ni; ++i)
            for (int64_t jj = 0; jj < nj; ++jj) {
              const A w = sc[i * kBc + jj];
              if (w != A(0))
                for (int64_t d = 0; d < Dvp; ++d) o[i * Dvp + d] += w * vs[jj * Dvp + d];
            }
        }
      }
      T* out = static_cast<T*>(p.out) + b * p.o_stride[0] + h * p.o_stride[1];
      A* lse = static_cast<A*>(p.lse) + (b * s.Hq + h) * s.Lq;
      for (int64_t i = 0; i < ni; ++i) {
        const bool empty = l[i] == A(0);
        const A inv = empty ? A(0) : A(1) / l[i];
        T* orow = out + (i0 + i) * p.o_stride[2];
        for (int64_t d = 0; d < Dv; ++d) store(orow + d, empty ? A(0) : o[i * Dvp + d] * inv);
        lse[i0 + i] = empty ? std::numeric_limits<A>::infinity() : m[i] + std::log(l[i]);
      }
    }
  });
}

// Per-thread tiles of the backward, in the accumulation type.
template <typename A>
struct BwdTiles {
  int64_t Dp, Dvp;
  std::vector<A> qs, kt, ks, vt, dos, p, pd, ds;
  BwdTiles(int64_t D, int64_t Dv)
      : Dp(pad16(D)),
        Dvp(pad16(Dv)),
        qs(kBr * Dp),     // scale * Q rows, [kBr][Dp]
        kt(D * kBc),      // K^T, [D][kBc]
        ks(kBc * Dp),     // scale * K rows, [kBc][Dp]
        vt(Dv * kBc),     // V^T, [Dv][kBc]
        dos(kBr * Dvp),   // dO rows, [kBr][Dvp]
        p(kBr * kBc),     // probabilities
        pd(kBr * kBc),    // after dropout
        ds(kBr * kBc) {}  // dP, then dS
};

// For the loaded tiles (query rows i0.., keys j0..): P = exp(S - lse), Pd = P * z,
// dP = (dO V^T) * z and, with delta given, dS = P * (dP - delta_i) (0 where P is 0). With
// delta == nullptr, ds holds P * dP (whose row sums are the D_i).
template <typename T, typename A>
void tile_grads(const AttentionBwdParams& bp, BwdTiles<A>& t, int64_t b, int64_t h, int64_t i0,
                int64_t ni, int64_t j0, int64_t nj, const A* lse, const A* delta) {
  const AttentionShape& s = bp.s;
  const AttentionArgs& a = bp.a;
  std::fill(t.p.begin(), t.p.begin() + ni * kBc, A(0));
  std::fill(t.ds.begin(), t.ds.begin() + ni * kBc, A(0));
  gemm_acc(ni, kBc, s.D, t.qs.data(), t.Dp, 1, t.kt.data(), kBc, t.p.data(), kBc);
  gemm_acc(ni, kBc, s.Dv, t.dos.data(), t.Dvp, 1, t.vt.data(), kBc, t.ds.data(), kBc);
  A bias[kBc], z[kBc];
  for (int64_t i = 0; i < ni; ++i) {
    A* pr = t.p.data() + i * kBc;
    A* pdr = t.pd.data() + i * kBc;
    A* dsr = t.ds.data() + i * kBc;
    row_bias<T>(a, b, h, i0 + i, j0, nj, bias);
    const A li = lse[i];
    for (int64_t jj = 0; jj < kBc; ++jj) pr[jj] = exp_fast(pr[jj] + bias[jj] - li);
    if (a.dropout_p > 0)
      row_dropout(a, s, b, h, i0 + i, j0, nj, z);
    else
      std::fill(z, z + kBc, A(1));
    const A di = delta ? delta[i] : A(0);
    for (int64_t jj = 0; jj < kBc; ++jj) {
      pdr[jj] = pr[jj] * z[jj];
      const A dp = dsr[jj] * z[jj];
      dsr[jj] = pr[jj] == A(0) ? A(0) : pr[jj] * (dp - di);
    }
  }
}

template <typename T>
void bwd(const AttentionBwdParams& p, const ParallelFor& pfor) {
  using A = acc_t<T>;
  const AttentionShape& s = p.s;
  const AttentionArgs& a = p.a;
  const int64_t D = s.D, Dv = s.Dv, group = s.Hq / s.Hkv;
  const int64_t qtiles = (s.Lq + kBr - 1) / kBr, ktiles = (s.Lk + kBc - 1) / kBc;
  const A scale = A(a.scale);
  const A* lse_all = static_cast<const A*>(p.lse);
  std::vector<A> delta_all(size_t(s.B * s.Hq * s.Lq));
  auto base = [&](const void* t, const int64_t (&st)[3], int64_t b, int64_t h) {
    return static_cast<const T*>(t) + b * st[0] + h * st[1];
  };

  // Pass 0: D_i = sum_j P_ij dP_ij, from the recomputed P in the accumulation type. This
  // equals dO_i . O_i, but computing it from the stored (rounded) O would put O's rounding
  // error into every dS_ij = P_ij (dP_ij - D_i), where dP_ij - D_i often cancels.
  pfor(0, s.B * s.Hq * qtiles, 1, [&](int64_t begin, int64_t end) {
    BwdTiles<A> t(D, Dv);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / (s.Hq * qtiles), h = (task / qtiles) % s.Hq, qt = task % qtiles;
      const int64_t hk = h / group, i0 = qt * kBr, ni = std::min(kBr, s.Lq - i0);
      const A* lse = lse_all + (b * s.Hq + h) * s.Lq + i0;
      A* delta = delta_all.data() + (b * s.Hq + h) * s.Lq + i0;
      load_rows(base(p.q, p.q_stride, b, h), p.q_stride[2], i0, ni, D, t.Dp, ni, scale,
                t.qs.data());
      load_rows(base(p.grad_out, p.go_stride, b, h), p.go_stride[2], i0, ni, Dv, t.Dvp, ni, A(1),
                t.dos.data());
      std::fill(delta, delta + ni, A(0));
      const int64_t jend = key_end(a, s, i0 + ni - 1);
      for (int64_t j0 = 0; j0 < jend; j0 += kBc) {
        const int64_t nj = std::min(kBc, s.Lk - j0);
        load_transposed(base(p.k, p.k_stride, b, hk), p.k_stride[2], j0, nj, D, t.kt.data());
        load_transposed(base(p.v, p.v_stride, b, hk), p.v_stride[2], j0, nj, Dv, t.vt.data());
        tile_grads<T>(p, t, b, h, i0, ni, j0, nj, lse, static_cast<const A*>(nullptr));
        for (int64_t i = 0; i < ni; ++i) {
          A acc = 0;
          for (int64_t jj = 0; jj < kBc; ++jj) acc += t.ds[i * kBc + jj];
          delta[i] += acc;
        }
      }
    }
  });

  // Pass 1: dK, dV per (batch, key/value head, key tile).
  pfor(0, s.B * s.Hkv * ktiles, 1, [&](int64_t begin, int64_t end) {
    BwdTiles<A> t(D, Dv);
    std::vector<A> dk(kBc * t.Dp), dv(kBc * t.Dvp);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / (s.Hkv * ktiles), hk = (task / ktiles) % s.Hkv, kti = task % ktiles;
      const int64_t j0 = kti * kBc, nj = std::min(kBc, s.Lk - j0);
      load_transposed(base(p.k, p.k_stride, b, hk), p.k_stride[2], j0, nj, D, t.kt.data());
      load_transposed(base(p.v, p.v_stride, b, hk), p.v_stride[2], j0, nj, Dv, t.vt.data());
      std::fill(dk.begin(), dk.end(), A(0));
      std::fill(dv.begin(), dv.end(), A(0));
      // Causal: query rows before j0 attend none of these keys.
      const int64_t first_row = a.causal ? std::min(j0, s.Lq) : 0;
      for (int64_t h = hk * group; h < (hk + 1) * group; ++h) {
        for (int64_t i0 = first_row / kBr * kBr; i0 < s.Lq; i0 += kBr) {
          const int64_t ni = std::min(kBr, s.Lq - i0);
          const int64_t row0 = (b * s.Hq + h) * s.Lq + i0;
          load_rows(base(p.q, p.q_stride, b, h), p.q_stride[2], i0, ni, D, t.Dp, ni, scale,
                    t.qs.data());
          load_rows(base(p.grad_out, p.go_stride, b, h), p.go_stride[2], i0, ni, Dv, t.Dvp, ni,
                    A(1), t.dos.data());
          tile_grads<T>(p, t, b, h, i0, ni, j0, nj, lse_all + row0, delta_all.data() + row0);
          // dV += Pd^T dO; dK += dS^T (scale * Q).
          gemm_acc(nj, t.Dvp, ni, t.pd.data(), 1, kBc, t.dos.data(), t.Dvp, dv.data(), t.Dvp);
          gemm_acc(nj, t.Dp, ni, t.ds.data(), 1, kBc, t.qs.data(), t.Dp, dk.data(), t.Dp);
        }
      }
      T* dkp = static_cast<T*>(p.dk) + ((b * s.Hkv + hk) * s.Lk + j0) * D;
      T* dvp = static_cast<T*>(p.dv) + ((b * s.Hkv + hk) * s.Lk + j0) * Dv;
      for (int64_t jj = 0; jj < nj; ++jj) {
        for (int64_t d = 0; d < D; ++d) store(dkp + jj * D + d, dk[jj * t.Dp + d]);
        for (int64_t d = 0; d < Dv; ++d) store(dvp + jj * Dv + d, dv[jj * t.Dvp + d]);
      }
    }
  });

  // Pass 2: dQ per (batch, head, query tile).
  pfor(0, s.B * s.Hq * qtiles, 1, [&](int64_t begin, int64_t end) {
    BwdTiles<A> t(D, Dv);
    std::vector<A> dq(kBr * t.Dp);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / (s.Hq * qtiles), h = (task / qtiles) % s.Hq, qt = task % qtiles;
      const int64_t hk = h / group, i0 = qt * kBr, ni = std::min(kBr, s.Lq - i0);
      const int64_t row0 = (b * s.Hq + h) * s.Lq + i0;
      load_rows(base(p.q, p.q_stride, b, h), p.q_stride[2], i0, ni, D, t.Dp, ni, scale,
                t.qs.data());
      load_rows(base(p.grad_out, p.go_stride, b, h), p.go_stride[2], i0, ni, Dv, t.Dvp, ni, A(1),
                t.dos.data());
      std::fill(dq.begin(), dq.end(), A(0));
      const int64_t jend = key_end(a, s, i0 + ni - 1);
      for (int64_t j0 = 0; j0 < jend; j0 += kBc) {
        const int64_t nj = std::min(kBc, s.Lk - j0);
        const T* k = base(p.k, p.k_stride, b, hk);
        load_transposed(k, p.k_stride[2], j0, nj, D, t.kt.data());
        load_rows(k, p.k_stride[2], j0, nj, D, t.Dp, kBc, scale, t.ks.data());
        load_transposed(base(p.v, p.v_stride, b, hk), p.v_stride[2], j0, nj, Dv, t.vt.data());
        tile_grads<T>(p, t, b, h, i0, ni, j0, nj, lse_all + row0, delta_all.data() + row0);
        // dQ += dS (scale * K).
        gemm_acc(ni, t.Dp, nj, t.ds.data(), kBc, 1, t.ks.data(), t.Dp, dq.data(), t.Dp);
      }
      T* dqp = static_cast<T*>(p.dq) + row0 * D;
      for (int64_t i = 0; i < ni; ++i)
        for (int64_t d = 0; d < D; ++d) store(dqp + i * D + d, dq[i * t.Dp + d]);
    }
  });
}

}  // namespace

void attention_forward(const AttentionFwdParams& p, const ParallelFor& pfor) {
  switch (p.s.dtype) {
    case DType::kFloat32: return fwd<float>(p, pfor);
    case DType::kFloat64: return fwd<double>(p, pfor);
    case DType::kBFloat16: return fwd<bf16>(p, pfor);
    default: return;  // the glue admits only the types above
  }
}

void attention_backward(const AttentionBwdParams& p, const ParallelFor& pfor) {
  switch (p.s.dtype) {
    case DType::kFloat32: return bwd<float>(p, pfor);
    case DType::kFloat64: return bwd<double>(p, pfor);
    case DType::kBFloat16: return bwd<bf16>(p, pfor);
    default: return;
  }
}

}  // namespace FL_ISA_NS
}  // namespace cpu
}  // namespace fl
