// Helpers for the torch glue of every op: dtype mapping, device checks, and the
// at::parallel_for adapter handed to CPU kernels.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <initializer_list>
#include <utility>

#include "fastlayers/parallel.h"
#include "fastlayers/types.h"

// The CUDA glue registers for the CUDA backend. Built against the SIMT emulator (the
// test-only extension fastlayers_emu), the same glue registers the emulated kernels as the
// CPU kernels of the fastlayers_emu ops, so tests drive them with CPU tensors.
#if defined(FL_EMU)
#define FL_CUDA_LIBRARY_IMPL(m) TORCH_LIBRARY_IMPL(fastlayers_emu, CPU, m)
#else
#define FL_CUDA_LIBRARY_IMPL(m) TORCH_LIBRARY_IMPL(fastlayers, CUDA, m)
#endif

namespace fl {
namespace ops {

inline DType to_dtype(at::ScalarType t, const char* op) {
  switch (t) {
    case at::kFloat: return DType::kFloat32;
    case at::kDouble: return DType::kFloat64;
    case at::kHalf: return DType::kFloat16;
    case at::kBFloat16: return DType::kBFloat16;
    default: TORCH_CHECK(false, op, ": unsupported dtype ", t);
  }
}

inline void check_dtype(const at::Tensor& t, std::initializer_list<at::ScalarType> ok,
                        const char* op, const char* arg, const char* device) {
  for (auto d : ok)
    if (t.scalar_type() == d) return;
  std::string names;
  for (auto d : ok) names += std::string(names.empty() ? "" : ", ") + c10::toString(d);
  TORCH_CHECK(false, op, ": ", arg, " must have dtype ", names, " on ", device, ", got ",
              t.scalar_type());
}

inline void check_same_device(std::initializer_list<std::pair<const char*, at::Tensor>> ts,
                              const char* op) {
  const auto& first = *ts.begin();
  for (const auto& [name, t] : ts)
    TORCH_CHECK(t.device() == first.second.device(), op, ": expected ", name,
                " to be on the same device as ", first.first, " (", first.second.device(),
                "), but got ", t.device());
}

// Largest at::get_thread_num() seen in a kernel chunk since the last reset; lets the
// tests observe that torch.set_num_threads governs the CPU kernels.
int64_t debug_max_thread_id(bool reset);
void note_thread_id();

// at::parallel_for as a fl::ParallelFor, so kernels share torch's thread pool.
inline ParallelFor torch_parallel_for() {
  return ParallelFor(
      [](int64_t begin, int64_t end, int64_t grain, const ParallelBody& body) {
        at::parallel_for(begin, end, grain, [&](int64_t b, int64_t e) {
          note_thread_id();
          body(b, e);
        });
      },
      at::in_parallel_region() ? 1 : at::get_num_threads());
}

}  // namespace ops
}  // namespace fl
