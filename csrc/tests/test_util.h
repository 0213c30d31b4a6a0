// Shared pieces of the torch-free C++ kernel tests: a failure counter with an EXPECT that
// reports and continues, and a std::thread parallel_for that splits ranges unevenly (three
// workers), so kernels are run with real concurrency and chunk boundaries.
#pragma once

#include <algorithm>
#include <cstdio>
#include <thread>
#include <vector>

#include "fastlayers/parallel.h"

namespace fl_test {

inline int failures = 0;

#define EXPECT(cond, ...)                \
  do {                                   \
    if (!(cond)) {                       \
      ++::fl_test::failures;             \
      std::printf("FAIL: " __VA_ARGS__); \
      std::printf("\n");                 \
    }                                    \
  } while (0)

inline void thread_for(int64_t begin, int64_t end, int64_t grain, const fl::ParallelBody& body) {
  const int64_t n = end - begin, workers = 3;
  if (n <= grain) return body(begin, end);
  std::vector<std::thread> ts;
  const int64_t chunk = (n + workers - 1) / workers;
  for (int64_t b = begin; b < end; b += chunk)
    ts.emplace_back([&, b] { body(b, std::min(end, b + chunk)); });
  for (auto& t : ts) t.join();
}

}  // namespace fl_test
