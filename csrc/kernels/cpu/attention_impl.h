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
// The fused backward parallelises over (batch, key/value head) only; below this many pairs
// the split passes (which also parallelise over tiles) are faster.
constexpr int64_t kFusedMinTasks = 4;

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

// Forward tiles hold scores transposed, [key][query row], so the online softmax runs along
// contiguous rows with the kFwdBr query rows of the tile as vector lanes: no horizontal
// reductions, and K needs no transposing (Q is transposed once per task).
constexpr int64_t kFwdBr = 64;

template <typename T>
void fwd(const AttentionFwdParams& p, const ParallelFor& pfor) {
  using A = acc_t<T>;
  constexpr int64_t R = kFwdBr;
  const AttentionShape& s = p.s;
  const AttentionArgs& a = p.a;
  const int64_t D = s.D, Dv = s.Dv, Dvp = pad16(Dv), group = s.Hq / s.Hkv;
  const int64_t qtiles = (s.Lq + R - 1) / R;
  const bool dropout = a.dropout_p > 0;
  const A scale = A(a.scale);
  pfor(0, s.B * s.Hq * qtiles, 1, [&](int64_t begin, int64_t end) {
    // qt: scale * Q^T [D][R]; ks: K rows [kBc][D]; vs: V rows [kBc][Dvp]; st: scores, then
    // probabilities, [kBc][R]; o: unnormalised output [R][Dvp].
    std::vector<A> qt(D * R), ks(kBc * D), vs(kBc * Dvp), st(kBc * R), o(R * Dvp);
    A m[R], l[R], mu[R], alpha[R], mx[R], nan[R], rowsum[R];
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / (s.Hq * qtiles), h = (task / qtiles) % s.Hq, qti = task % qtiles;
      const int64_t hk = h / group, i0 = qti * R, ni = std::min(R, s.Lq - i0);
      const T* q = static_cast<const T*>(p.q) + b * p.q_stride[0] + h * p.q_stride[1];
      const T* k = static_cast<const T*>(p.k) + b * p.k_stride[0] + hk * p.k_stride[1];
      const T* v = static_cast<const T*>(p.v) + b * p.v_stride[0] + hk * p.v_stride[1];
      for (int64_t d = 0; d < D; ++d)
        for (int64_t i = ni; i < R; ++i) qt[d * R + i] = A(0);
      for (int64_t i = 0; i < ni; ++i) {
        const T* r = q + (i0 + i) * p.q_stride[2];
        for (int64_t d = 0; d < D; ++d) qt[d * R + i] = load(r + d) * scale;
      }
      std::fill(o.begin(), o.end(), A(0));
      std::fill(m, m + R, neg_inf<A>());
      std::fill(l, l + R, A(0));
      const int64_t jend = key_end(a, s, i0 + ni - 1);
      for (int64_t j0 = 0; j0 < jend; j0 += kBc) {
        const int64_t nj = std::min(kBc, s.Lk - j0);
        load_rows(k, p.k_stride[2], j0, nj, D, D, nj, A(1), ks.data());
        const bool v_nan = load_rows(v, p.v_stride[2], j0, nj, Dv, Dvp, kBc, A(1), vs.data());
        std::fill(st.begin(), st.begin() + nj * R, A(0));
        gemm_acc(nj, R, D, ks.data(), D, 1, qt.data(), R, st.data(), R);
        // Masks: causal (key j0 + jj is hidden from rows i0 + i < j0 + jj), then the
        // explicit mask, element by element through its strides.
        if (a.causal)
          for (int64_t jj = 0; jj < nj; ++jj) {
            A* row = st.data() + jj * R;
            const int64_t first = j0 + jj - i0;  // lanes below this are masked
            for (int64_t i = 0; i < R; ++i) row[i] = i < first ? neg_inf<A>() : row[i];
          }
        if (a.mask_kind != MaskKind::kNone) {
          const int64_t* ms = a.mask_stride;
          for (int64_t i = 0; i < ni; ++i) {
            const int64_t base = b * ms[0] + h * ms[1] + (i0 + i) * ms[2];
            for (int64_t jj = 0; jj < nj; ++jj) {
              const int64_t off = base + (j0 + jj) * ms[3];
              A& x = st[jj * R + i];
              if (a.mask_kind == MaskKind::kBool)
                x = static_cast<const bool*>(a.mask)[off] ? x : neg_inf<A>();
              else
                x += load(static_cast<const T*>(a.mask) + off);
            }
          }
        }
        // Online softmax with the query rows as lanes. A NaN score makes its row's max NaN
        // (so the row's output is NaN, as torch's softmax gives).
        std::fill(mx, mx + R, neg_inf<A>());
        std::fill(nan, nan + R, A(0));
        for (int64_t jj = 0; jj < nj; ++jj) {
          const A* row = st.data() + jj * R;
          for (int64_t i = 0; i < R; ++i) {
            mx[i] = row[i] > mx[i] ? row[i] : mx[i];
            nan[i] += row[i] != row[i] ? A(1) : A(0);
          }
        }
        for (int64_t i = 0; i < R; ++i) {
          const A mi = nan[i] > A(0) ? std::numeric_limits<A>::quiet_NaN() : mx[i];
          const A m_new = max_takes(mi, m[i]) ? mi : m[i];
          // While every key so far is masked (m_new = -inf) subtract 0: p = exp(-inf) = 0.
          mu[i] = m_new == neg_inf<A>() ? A(0) : m_new;
          alpha[i] = exp_fast(m[i] - mu[i]);
          m[i] = m_new;
          rowsum[i] = A(0);
        }
        for (int64_t jj = 0; jj < nj; ++jj) {
          A* row = st.data() + jj * R;
          for (int64_t i = 0; i < R; ++i) {
            row[i] = exp_fast(row[i] - mu[i]);
            rowsum[i] += row[i];
          }
        }
        for (int64_t i = 0; i < R; ++i) l[i] = l[i] * alpha[i] + rowsum[i];
        for (int64_t i = 0; i < ni; ++i) {
          A* orow = o.data() + i * Dvp;
          for (int64_t d = 0; d < Dvp; ++d) orow[d] *= alpha[i];
        }
        if (dropout) {
          A z[kBc];
          for (int64_t i = 0; i < ni; ++i) {
            row_dropout(a, s, b, h, i0 + i, j0, nj, z);
            for (int64_t jj = 0; jj < nj; ++jj) st[jj * R + i] *= z[jj];
          }
        }
        if (!v_nan) {
          gemm_acc(ni, Dvp, nj, st.data(), 1, R, vs.data(), Dvp, o.data(), Dvp);
        } else {
          // A NaN in a value row reaches only the rows that attend it (probability != 0), not
          // every row of the tile through 0 * NaN.
          for (int64_t i = 0; i < ni; ++i)
            for (int64_t jj = 0; jj < nj; ++jj) {
              const A w = st[jj * R + i];
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

// Backward in one pass per (batch, key/value head): key tiles outer, then the heads of the
// group and their query tiles, with dK, dV of the whole head and dQ of the current head
// accumulated in task buffers. Five products per tile pair (S, dP, dV, dK, dQ) instead of the
// seven of the split passes, at the price of parallelism over (batch, key/value head) only.
// The sums run in the same order as in the split passes, so the results are the same bits.
// Scores are transposed, [key][query row], so row-wise work runs across query lanes.
template <typename T>
void bwd_fused(const AttentionBwdParams& p, const ParallelFor& pfor,
               const std::vector<acc_t<T>>& delta_all) {
  using A = acc_t<T>;
  constexpr int64_t R = kFwdBr;
  const AttentionShape& s = p.s;
  const AttentionArgs& a = p.a;
  const int64_t D = s.D, Dv = s.Dv, Dp = pad16(D), Dvp = pad16(Dv), group = s.Hq / s.Hkv;
  const int64_t Lq = s.Lq, Lqp = (Lq + R - 1) / R * R;
  const A scale = A(a.scale);
  const A* lse_all = static_cast<const A*>(p.lse);
  auto base = [&](const void* t, const int64_t (&st)[3], int64_t b, int64_t h) {
    return static_cast<const T*>(t) + b * st[0] + h * st[1];
  };
  pfor(0, s.B * s.Hkv, 1, [&](int64_t begin, int64_t end) {
    // Per head of the group: scale * Q as rows [Lqp][Dp] and transposed [D][Lqp], dO as rows
    // [Lqp][Dvp] and transposed [Dv][Lqp], dQ accumulator [Lqp][Dp]. Per key tile: K rows
    // [kBc][D], scale * K rows [kBc][Dp], V rows [kBc][Dv]. Tile products [kBc][R].
    std::vector<A> qr(group * Lqp * Dp), qt(group * D * Lqp), dor(group * Lqp * Dvp),
        dot(group * Dv * Lqp), dq(group * Lqp * Dp);
    std::vector<A> ks(kBc * D), kss(kBc * Dp), vs(kBc * Dv), dk(kBc * Dp), dv(kBc * Dvp);
    std::vector<A> pt(kBc * R), pdt(kBc * R), dst(kBc * R), zt(a.dropout_p > 0 ? kBc * R : 0);
    A z[kBc], ones[R];
    std::fill(ones, ones + R, A(1));  // dropout factors when there is no dropout
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / s.Hkv, hk = task % s.Hkv;
      for (int64_t g = 0; g < group; ++g) {
        const int64_t h = hk * group + g;
        A* qrg = qr.data() + g * Lqp * Dp;
        A* qtg = qt.data() + g * D * Lqp;
        A* dorg = dor.data() + g * Lqp * Dvp;
        A* dotg = dot.data() + g * Dv * Lqp;
        load_rows(base(p.q, p.q_stride, b, h), p.q_stride[2], 0, Lq, D, Dp, Lqp, scale, qrg);
        load_rows(base(p.grad_out, p.go_stride, b, h), p.go_stride[2], 0, Lq, Dv, Dvp, Lqp, A(1),
                  dorg);
        for (int64_t i = 0; i < Lqp; ++i) {
          for (int64_t d = 0; d < D; ++d) qtg[d * Lqp + i] = qrg[i * Dp + d];
          for (int64_t d = 0; d < Dv; ++d) dotg[d * Lqp + i] = dorg[i * Dvp + d];
        }
      }
      std::fill(dq.begin(), dq.end(), A(0));
      for (int64_t j0 = 0; j0 < s.Lk; j0 += kBc) {
        const int64_t nj = std::min(kBc, s.Lk - j0);
        const T* k = base(p.k, p.k_stride, b, hk);
        load_rows(k, p.k_stride[2], j0, nj, D, D, kBc, A(1), ks.data());
        load_rows(k, p.k_stride[2], j0, nj, D, Dp, kBc, scale, kss.data());
        load_rows(base(p.v, p.v_stride, b, hk), p.v_stride[2], j0, nj, Dv, Dv, kBc, A(1),
                  vs.data());
        std::fill(dk.begin(), dk.end(), A(0));
        std::fill(dv.begin(), dv.end(), A(0));
        const int64_t first_row = a.causal ? std::min(j0, Lq) : 0;
        for (int64_t g = 0; g < group; ++g) {
          const int64_t h = hk * group + g;
          const A* qrg = qr.data() + g * Lqp * Dp;
          const A* qtg = qt.data() + g * D * Lqp;
          const A* dorg = dor.data() + g * Lqp * Dvp;
          const A* dotg = dot.data() + g * Dv * Lqp;
          A* dqg = dq.data() + g * Lqp * Dp;
          const A* lse = lse_all + (b * s.Hq + h) * Lq;
          const A* delta = delta_all.data() + (b * s.Hq + h) * Lq;
          for (int64_t i0 = first_row / R * R; i0 < Lq; i0 += R) {
            const int64_t ni = std::min(R, Lq - i0);
            // S^T = K (scale Q)^T, dP~^T = V dO^T.
            std::fill(pt.begin(), pt.begin() + nj * R, A(0));
            std::fill(dst.begin(), dst.begin() + nj * R, A(0));
            gemm_acc(nj, R, D, ks.data(), D, 1, qtg + i0, Lqp, pt.data(), R);
            gemm_acc(nj, R, Dv, vs.data(), Dv, 1, dotg + i0, Lqp, dst.data(), R);
            if (a.mask_kind != MaskKind::kNone) {
              const int64_t* ms = a.mask_stride;
              for (int64_t i = 0; i < ni; ++i) {
                const int64_t mbase = b * ms[0] + h * ms[1] + (i0 + i) * ms[2];
                for (int64_t jj = 0; jj < nj; ++jj) {
                  const int64_t off = mbase + (j0 + jj) * ms[3];
                  A& x = pt[jj * R + i];
                  if (a.mask_kind == MaskKind::kBool)
                    x = static_cast<const bool*>(a.mask)[off] ? x : neg_inf<A>();
                  else
                    x += load(static_cast<const T*>(a.mask) + off);
                }
              }
            }
            const bool dropout = a.dropout_p > 0;
            if (dropout)
              for (int64_t i = 0; i < ni; ++i) {
                row_dropout(a, s, b, h, i0 + i, j0, nj, z);
                for (int64_t jj = 0; jj < nj; ++jj) zt[jj * R + i] = z[jj];
              }
            // P = exp(S - lse), Pd = P z, dS = P (dP~ z - D): lanes are query rows. Lanes
            // past the last row get lse = +inf, so P = 0 there, as for causally hidden keys.
            A lse_t[R], delta_t[R];
            for (int64_t i = 0; i < R; ++i) {
              lse_t[i] = i < ni ? lse[i0 + i] : std::numeric_limits<A>::infinity();
              delta_t[i] = i < ni ? delta[i0 + i] : A(0);
            }
            for (int64_t jj = 0; jj < nj; ++jj) {
              A* prow = pt.data() + jj * R;
              A* pdrow = pdt.data() + jj * R;
              A* drow = dst.data() + jj * R;
              const A* zrow = dropout ? zt.data() + jj * R : ones;
              const int64_t first = a.causal ? j0 + jj - i0 : 0;  // lanes below: key hidden
              for (int64_t i = 0; i < R; ++i) {
                const A pv = exp_fast(i < first ? neg_inf<A>() : prow[i] - lse_t[i]);
                const A dp = drow[i] * zrow[i];
                prow[i] = pv;
                pdrow[i] = pv * zrow[i];
                drow[i] = pv == A(0) ? A(0) : pv * (dp - delta_t[i]);
              }
            }
            // dV += Pd^T dO; dK += dS^T (scale Q); dQ += dS (scale K).
            gemm_acc(nj, Dvp, ni, pdt.data(), R, 1, dorg + i0 * Dvp, Dvp, dv.data(), Dvp);
            gemm_acc(nj, Dp, ni, dst.data(), R, 1, qrg + i0 * Dp, Dp, dk.data(), Dp);
            gemm_acc(ni, Dp, nj, dst.data(), 1, R, kss.data(), Dp, dqg + i0 * Dp, Dp);
          }
        }
        T* dkp = static_cast<T*>(p.dk) + ((b * s.Hkv + hk) * s.Lk + j0) * D;
        T* dvp = static_cast<T*>(p.dv) + ((b * s.Hkv + hk) * s.Lk + j0) * Dv;
        for (int64_t jj = 0; jj < nj; ++jj) {
          for (int64_t d = 0; d < D; ++d) store(dkp + jj * D + d, dk[jj * Dp + d]);
          for (int64_t d = 0; d < Dv; ++d) store(dvp + jj * Dv + d, dv[jj * Dvp + d]);
        }
      }
      for (int64_t g = 0; g < group; ++g) {
        T* dqp = static_cast<T*>(p.dq) + (b * s.Hq + hk * group + g) * Lq * D;
        const A* dqg = dq.data() + g * Lqp * Dp;
        for (int64_t i = 0; i < Lq; ++i)
          for (int64_t d = 0; d < D; ++d) store(dqp + i * D + d, dqg[i * Dp + d]);
      }
    }
  });
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

  // Pass 0: D_i = sum_j P_ij dP_ij, which equals dO_i . O_i. For 16-bit types it is summed
  // from the recomputed P in the accumulation type: the stored O is rounded to 16 bits, and
  // its rounding error would go into every dS_ij = P_ij (dP_ij - D_i), where dP_ij - D_i
  // often cancels. For float32 and float64, O is exact enough and dO_i . O_i is cheap.
  if constexpr (!std::is_same<T, A>::value) {
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
  } else {
    pfor(0, s.B * s.Hq, 1, [&](int64_t begin, int64_t end) {
      for (int64_t bh = begin; bh < end; ++bh) {
        const int64_t b = bh / s.Hq, h = bh % s.Hq;
        const T* go = base(p.grad_out, p.go_stride, b, h);
        const T* o = base(p.out, p.o_stride, b, h);
        for (int64_t i = 0; i < s.Lq; ++i) {
          const T* gr = go + i * p.go_stride[2];
          const T* orow = o + i * p.o_stride[2];
          A acc = 0;
          for (int64_t d = 0; d < Dv; ++d) acc += gr[d] * orow[d];
          delta_all[bh * s.Lq + i] = acc;
        }
      }
    });
  }

  // Enough (batch, key/value head) pairs to keep every thread busy: one fused pass.
  if (s.B * s.Hkv >= kFusedMinTasks) return bwd_fused<T>(p, pfor, delta_all);

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

// Probabilities of chosen rows: one task per (batch, head, row); keys in tiles of kBc with
// the bias and dropout of the forward, so the values are those the forward used.
template <typename T>
void probs_rows(const AttentionProbsParams& p, const ParallelFor& pfor) {
  using A = acc_t<T>;
  const AttentionShape& s = p.s;
  const AttentionArgs& a = p.a;
  const int64_t D = s.D, group = s.Hq / s.Hkv;
  const A scale = A(a.scale);
  const A* lse_all = static_cast<const A*>(p.lse);
  pfor(0, s.B * s.Hq * p.R, std::max<int64_t>(1, 4096 / std::max<int64_t>(1, s.Lk * D)),
       [&](int64_t begin, int64_t end) {
         std::vector<A> qrow(D);
         A bias[kBc], z[kBc];
         for (int64_t task = begin; task < end; ++task) {
           const int64_t b = task / (s.Hq * p.R), h = (task / p.R) % s.Hq, r = task % p.R;
           const int64_t i = p.rows[r], hk = h / group;
           const T* q = static_cast<const T*>(p.q) + b * p.q_stride[0] + h * p.q_stride[1] +
                        i * p.q_stride[2];
           const T* k = static_cast<const T*>(p.k) + b * p.k_stride[0] + hk * p.k_stride[1];
           for (int64_t d = 0; d < D; ++d) qrow[d] = load(q + d) * scale;
           const A lse = lse_all[(b * s.Hq + h) * s.Lq + i];
           T* out = static_cast<T*>(p.probs) + ((b * s.Hq + h) * p.R + r) * s.Lk;
           for (int64_t j0 = 0; j0 < s.Lk; j0 += kBc) {
             const int64_t nj = std::min(kBc, s.Lk - j0);
             row_bias<T>(a, b, h, i, j0, nj, bias);
             if (a.dropout_p > 0)
               row_dropout(a, s, b, h, i, j0, nj, z);
             else
               std::fill(z, z + kBc, A(1));
             for (int64_t jj = 0; jj < nj; ++jj) {
               const T* kr = k + (j0 + jj) * p.k_stride[2];
               A dot = 0;
               for (int64_t d = 0; d < D; ++d) dot += qrow[d] * load(kr + d);
               store(out + j0 + jj, exp_fast(dot + bias[jj] - lse) * z[jj]);
             }
           }
         }
       });
}

}  // namespace

void attention_forward(const AttentionFwdParams& p, const ParallelFor& pfor) {
  dispatch_cpu_types(p.s.dtype, [&](auto tag) { fwd<decltype(tag)>(p, pfor); });
}

void attention_probs(const AttentionProbsParams& p, const ParallelFor& pfor) {
  dispatch_cpu_types(p.s.dtype, [&](auto tag) { probs_rows<decltype(tag)>(p, pfor); });
}

void attention_backward(const AttentionBwdParams& p, const ParallelFor& pfor) {
  dispatch_cpu_types(p.s.dtype, [&](auto tag) { bwd<decltype(tag)>(p, pfor); });
}

}  // namespace FL_ISA_NS
}  // namespace cpu
}  // namespace fl
