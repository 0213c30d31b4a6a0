// Race mode for emulated C++ programs: run the same launches under several schedules and
// compare the outputs. A kernel that is correctly synchronised computes the same bits in
// every order its threads may run in; one that misses a barrier, or relies on threads of a
// warp running in lockstep, does not. Float atomics make the order of additions part of
// the result, so launches that used them are compared within a tolerance instead.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "emu/runtime.h"

namespace fl {
namespace emu {

struct Schedule {
  Order order;
  uint64_t seed;
  const char* name;
};

inline std::vector<Schedule> race_schedules() {
  return {{Order::kForward, 0, "forward"},
          {Order::kReverse, 0, "reverse"},
          {Order::kShuffle, 1, "shuffle(seed 1)"},
          {Order::kShuffle, 2, "shuffle(seed 2)"}};
}

struct Output {
  const void* data;
  size_t bytes;
};

// Runs `run` (which resets its inputs and launches) once per schedule and compares the
// `outputs` bytes with the first schedule's. Returns "" when all agree, else a message that
// names the kernels launched and the two schedules that disagree. `float_rtol` is the
// relative tolerance used (on float32 outputs) when a launch used float atomics.
inline std::string race_check(const std::function<void()>& run, const std::vector<Output>& outputs,
                              double float_rtol = 1e-5) {
  const Config saved = config();
  std::vector<std::vector<unsigned char>> first;
  std::string kernels;
  bool float_atomics = false;
  std::string result;
  const auto schedules = race_schedules();
  for (size_t s = 0; s < schedules.size() && result.empty(); ++s) {
    config().order = schedules[s].order;
    config().seed = schedules[s].seed;
    clear_log();
    run();
    for (const auto& r : launch_log()) {
      float_atomics |= r.float_atomics;
      if (s == 0 && kernels.find(r.kernel) == std::string::npos)
        kernels += (kernels.empty() ? "" : ", ") + r.kernel;
    }
    for (size_t o = 0; o < outputs.size(); ++o) {
      const auto* p = static_cast<const unsigned char*>(outputs[o].data);
      if (s == 0) {
        first.emplace_back(p, p + outputs[o].bytes);
        continue;
      }
      bool same = std::memcmp(first[o].data(), p, outputs[o].bytes) == 0;
      if (!same && float_atomics && outputs[o].bytes % 4 == 0) {
        same = true;
        for (size_t i = 0; i < outputs[o].bytes / 4 && same; ++i) {
          float a, b;
          std::memcpy(&a, first[o].data() + 4 * i, 4);
          std::memcpy(&b, p + 4 * i, 4);
          same = (std::isnan(a) && std::isnan(b)) ||
                 std::fabs(a - b) <= float_rtol * std::fmax(std::fabs(a), std::fabs(b)) + 1e-30;
        }
      }
      if (!same)
        result = "race: kernel " + kernels + ": output " + std::to_string(o) + " differs between " +
                 schedules[0].name + " and " + schedules[s].name + " schedules";
    }
  }
  config() = saved;
  return result;
}

}  // namespace emu
}  // namespace fl
