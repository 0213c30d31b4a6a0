// The fastlayers operator library: every op's schema, and the pybind11 module whose import
// runs the static registrations. Implementations register per backend in their own files.
#include <ATen/Parallel.h>
#include <torch/extension.h>
#include <torch/library.h>

#include <atomic>
#include <string>

#include "fastlayers/int8_gemm.h"
#include "fastlayers/max_pool2d.h"
#include "ops/common.h"
#include "ops/schemas.h"

#ifndef FL_CUDA_ARCHS
#define FL_CUDA_ARCHS ""
#endif

TORCH_LIBRARY(fastlayers, m) { fl::ops::define_schemas(m); }

namespace fl {
namespace ops {
namespace {
std::atomic<int64_t> g_max_thread_id{-1};
}

void note_thread_id() {
  const int64_t id = at::get_thread_num();
  int64_t seen = g_max_thread_id.load(std::memory_order_relaxed);
  while (id > seen && !g_max_thread_id.compare_exchange_weak(seen, id)) {
  }
}

int64_t debug_max_thread_id(bool reset) {
  return reset ? g_max_thread_id.exchange(-1) : g_max_thread_id.load();
}

}  // namespace ops
}  // namespace fl

namespace {

pybind11::dict build_info() {
  pybind11::dict d;
  d["version"] = FL_VERSION;
  d["torch_version"] = FL_TORCH_VERSION;
#ifdef FL_WITH_CUDA
  d["with_cuda"] = true;
  d["cuda_archs"] = FL_CUDA_ARCHS;
#else
  d["with_cuda"] = false;
  d["cuda_archs"] = "";
#endif
  d["cpu_isa"] = fl::cpu::max_pool2d_isa();
  d["int8_gemm_cpu_path"] = fl::cpu::int8_gemm_path();
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
  d["cpu_isa_compiled"] = "baseline, avx2, avx512";
#else
  d["cpu_isa_compiled"] = "baseline";
#endif
  return d;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "fastlayers kernels; importing this module registers the torch.ops.fastlayers ops";
  m.def("build_info", &build_info, "What this build of fastlayers._C contains");
  m.def("_debug_max_thread_id", &fl::ops::debug_max_thread_id, pybind11::arg("reset") = false,
        "Largest at::get_thread_num() seen in a CPU kernel chunk (reset: and clear it)");
}
