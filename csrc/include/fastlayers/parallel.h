// The parallel loop the torch glue hands to CPU kernels, so kernels use torch's own
// thread pool (and honour torch.set_num_threads) without including a torch header.
#pragma once

#include <cstdint>
#include <functional>
#include <type_traits>
#include <utility>

namespace fl {

using ParallelBody = std::function<void(int64_t begin, int64_t end)>;

// Calls body on disjoint chunks covering [begin, end), each at least `grain` long
// unless the range is shorter; chunks may run concurrently, on up to workers() threads.
// Kernels size their tasks by workers() where a coarser split runs faster (one wide GEMM per
// thread rather than several narrow ones); results never depend on it.
class ParallelFor {
 public:
  using Fn = std::function<void(int64_t begin, int64_t end, int64_t grain, const ParallelBody&)>;

  ParallelFor() = default;
  template <typename F, typename = std::enable_if_t<!std::is_same_v<std::decay_t<F>, ParallelFor>>>
  ParallelFor(F fn, int64_t workers = 1)  // NOLINT: converts from a loop function
      : fn_(std::move(fn)), workers_(workers < 1 ? 1 : workers) {}

  void operator()(int64_t begin, int64_t end, int64_t grain, const ParallelBody& body) const {
    fn_(begin, end, grain, body);
  }
  int64_t workers() const { return workers_; }

 private:
  Fn fn_;
  int64_t workers_ = 1;
};

// Serial stand-in for torch-free builds (C++ unit tests).
inline void serial_for(int64_t begin, int64_t end, int64_t /*grain*/, const ParallelBody& body) {
  if (begin < end) body(begin, end);
}

}  // namespace fl
