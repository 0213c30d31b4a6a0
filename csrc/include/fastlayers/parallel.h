// The parallel loop the torch glue hands to CPU kernels, so kernels use torch's own
// thread pool (and honour torch.set_num_threads) without including a torch header.
#pragma once

#include <cstdint>
#include <functional>

namespace fl {

using ParallelBody = std::function<void(int64_t begin, int64_t end)>;
// Calls body on disjoint chunks covering [begin, end), each at least `grain` long
// unless the range is shorter; chunks may run concurrently.
using ParallelFor =
    std::function<void(int64_t begin, int64_t end, int64_t grain, const ParallelBody& body)>;

// Serial stand-in for torch-free builds (C++ unit tests).
inline void serial_for(int64_t begin, int64_t end, int64_t /*grain*/, const ParallelBody& body) {
  if (begin < end) body(begin, end);
}

}  // namespace fl
