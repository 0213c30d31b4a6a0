// Softmax on the CPU, forward and backward (fastlayers/softmax.h).
//
// Included once per instruction set by softmax*.cpp with FL_ISA_NS naming the namespace.
// Rows (inner == 1): max, then exp and sum, then scale, each a contiguous loop with
// kLanes partial results so the compiler vectorises the reductions. Columns (inner > 1):
// blocks of up to kLanes inner positions are the vector lanes and the loops run over n.
// Accumulation is in float for bfloat16. A NaN in a row makes the row NaN, and a row of
// -inf gives NaN, as torch's softmax does.

#ifndef FL_ISA_NS
#error "define FL_ISA_NS before including softmax_impl.h"
#endif

namespace fl {
namespace cpu {
namespace FL_ISA_NS {

namespace {

constexpr int64_t kLanes = 16;

template <typename A>
inline A exp_acc(A x) {
  return std::exp(x);
}

template <typename T>
void fwd(const SoftmaxFwdParams& p, const ParallelFor& pfor) {
  using A = acc_t<T>;
  const SoftmaxShape& s = p.s;
  const T* in = static_cast<const T*>(p.input);
  T* out = static_cast<T*>(p.output);
  const int64_t n = s.n, inner = s.inner;
  if (inner == 1) {
    const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, n));
    pfor(0, s.outer, grain, [&](int64_t begin, int64_t end) {
      std::vector<A> e(n);
      for (int64_t r = begin; r < end; ++r) {
        const T* x = in + r * n;
        T* y = out + r * n;
        A mx_l[kLanes], nan_l[kLanes] = {};
        std::fill(mx_l, mx_l + kLanes, -std::numeric_limits<A>::infinity());
        int64_t j = 0;
        for (; j + kLanes <= n; j += kLanes)
          for (int64_t l = 0; l < kLanes; ++l) {
            const A v = load(x + j + l);
            e[j + l] = v;
            mx_l[l] = v > mx_l[l] ? v : mx_l[l];
            nan_l[l] += v != v ? A(1) : A(0);
          }
        for (; j < n; ++j) {
          const A v = load(x + j);
          e[j] = v;
          mx_l[0] = v > mx_l[0] ? v : mx_l[0];
          nan_l[0] += v != v ? A(1) : A(0);
        }
        A mx = -std::numeric_limits<A>::infinity(), nans = 0;
        for (int64_t l = 0; l < kLanes; ++l) {
          mx = mx_l[l] > mx ? mx_l[l] : mx;
          nans += nan_l[l];
        }
        if (nans > A(0)) mx = std::numeric_limits<A>::quiet_NaN();
        A sum_l[kLanes] = {};
        j = 0;
        for (; j + kLanes <= n; j += kLanes)
          for (int64_t l = 0; l < kLanes; ++l) {
            e[j + l] = exp_acc(e[j + l] - mx);
            sum_l[l] += e[j + l];
          }
        for (; j < n; ++j) {
          e[j] = exp_acc(e[j] - mx);
          sum_l[0] += e[j];
        }
        A sum = 0;
        for (int64_t l = 0; l < kLanes; ++l) sum += sum_l[l];
        const A inv = A(1) / sum;
        for (j = 0; j < n; ++j) store(y + j, e[j] * inv);
      }
    });
    return;
  }
  // Columns: tasks are (outer, block of kLanes inner positions).
  const int64_t blocks = (inner + kLanes - 1) / kLanes;
  pfor(0, s.outer * blocks, std::max<int64_t>(1, 4096 / std::max<int64_t>(1, n)),
       [&](int64_t begin, int64_t end) {
         for (int64_t t = begin; t < end; ++t) {
           const int64_t o = t / blocks, c0 = (t % blocks) * kLanes;
           const int64_t w = std::min(kLanes, inner - c0);
           const T* x = in + o * n * inner + c0;
           T* y = out + o * n * inner + c0;
           A mx[kLanes], nan[kLanes] = {}, sum[kLanes] = {};
           std::fill(mx, mx + kLanes, -std::numeric_limits<A>::infinity());
           for (int64_t j = 0; j < n; ++j)
             for (int64_t l = 0; l < w; ++l) {
               const A v = load(x + j * inner + l);
               mx[l] = v > mx[l] ? v : mx[l];
               nan[l] += v != v ? A(1) : A(0);
             }
           for (int64_t l = 0; l < w; ++l)
             if (nan[l] > A(0)) mx[l] = std::numeric_limits<A>::quiet_NaN();
           for (int64_t j = 0; j < n; ++j)
             for (int64_t l = 0; l < w; ++l) sum[l] += exp_acc(load(x + j * inner + l) - mx[l]);
           for (int64_t l = 0; l < w; ++l) sum[l] = A(1) / sum[l];
           for (int64_t j = 0; j < n; ++j)
             for (int64_t l = 0; l < w; ++l)
               store(y + j * inner + l, exp_acc(load(x + j * inner + l) - mx[l]) * sum[l]);
         }
       });
}

template <typename T>
void bwd(const SoftmaxBwdParams& p, const ParallelFor& pfor) {
  using A = acc_t<T>;
  const SoftmaxShape& s = p.s;
  const T* go = static_cast<const T*>(p.grad_output);
  const T* yv = static_cast<const T*>(p.output);
  T* gi = static_cast<T*>(p.grad_input);
  const int64_t n = s.n, inner = s.inner;
  if (inner == 1) {
    const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, n));
    pfor(0, s.outer, grain, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const T* g = go + r * n;
        const T* y = yv + r * n;
        A dot_l[kLanes] = {};
        int64_t j = 0;
        for (; j + kLanes <= n; j += kLanes)
          for (int64_t l = 0; l < kLanes; ++l) dot_l[l] += load(g + j + l) * load(y + j + l);
        for (; j < n; ++j) dot_l[0] += load(g + j) * load(y + j);
        A dot = 0;
        for (int64_t l = 0; l < kLanes; ++l) dot += dot_l[l];
        T* d = gi + r * n;
        for (j = 0; j < n; ++j) store(d + j, load(y + j) * (load(g + j) - dot));
      }
    });
    return;
  }
  const int64_t blocks = (inner + kLanes - 1) / kLanes;
  pfor(0, s.outer * blocks, std::max<int64_t>(1, 4096 / std::max<int64_t>(1, n)),
       [&](int64_t begin, int64_t end) {
         for (int64_t t = begin; t < end; ++t) {
           const int64_t o = t / blocks, c0 = (t % blocks) * kLanes;
           const int64_t w = std::min(kLanes, inner - c0);
           const int64_t off = o * n * inner + c0;
           A dot[kLanes] = {};
           for (int64_t j = 0; j < n; ++j)
             for (int64_t l = 0; l < w; ++l)
               dot[l] += load(go + off + j * inner + l) * load(yv + off + j * inner + l);
           for (int64_t j = 0; j < n; ++j)
             for (int64_t l = 0; l < w; ++l) {
               const int64_t x = off + j * inner + l;
               store(gi + x, load(yv + x) * (load(go + x) - dot[l]));
             }
         }
       });
}

}  // namespace

void softmax_forward(const SoftmaxFwdParams& p, const ParallelFor& pfor) {
  dispatch_cpu_types(p.s.dtype, [&](auto tag) { fwd<decltype(tag)>(p, pfor); });
}

void softmax_backward(const SoftmaxBwdParams& p, const ParallelFor& pfor) {
  dispatch_cpu_types(p.s.dtype, [&](auto tag) { bwd<decltype(tag)>(p, pfor); });
}

}  // namespace FL_ISA_NS
}  // namespace cpu
}  // namespace fl
