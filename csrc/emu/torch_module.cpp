// The test-only extension fastlayers_emu: the CUDA kernels and their torch glue, built
// against the SIMT emulator, registered as torch.ops.fastlayers_emu.* CPU kernels with the
// schemas of torch.ops.fastlayers.*; and the emulator's controls (schedule, block subset,
// launch log) for the tests. Never part of the wheel.
#include <torch/extension.h>
#include <torch/library.h>

#include <string>

#include "emu/runtime.h"
#include "ops/schemas.h"

TORCH_LIBRARY(fastlayers_emu, m) { fl::ops::define_schemas(m); }

namespace {

namespace py = pybind11;

void configure(const std::string& order, uint64_t seed, int64_t only_launch, int64_t block_begin,
               int64_t block_end, int workers) {
  fl::emu::Config c;
  if (order == "forward")
    c.order = fl::emu::Order::kForward;
  else if (order == "reverse")
    c.order = fl::emu::Order::kReverse;
  else if (order == "shuffle")
    c.order = fl::emu::Order::kShuffle;
  else
    throw py::value_error("order must be 'forward', 'reverse' or 'shuffle', got '" + order + "'");
  c.seed = seed;
  c.only_launch = only_launch;
  c.block_begin = block_begin;
  c.block_end = block_end;
  c.workers = workers;
  fl::emu::config() = c;
}

py::list launch_log() {
  py::list out;
  for (const auto& r : fl::emu::launch_log()) {
    py::dict d;
    d["kernel"] = r.kernel;
    d["grid"] = py::make_tuple(r.grid.x, r.grid.y, r.grid.z);
    d["block"] = py::make_tuple(r.block.x, r.block.y, r.block.z);
    d["dynamic_smem"] = r.dynamic_smem;
    d["float_atomics"] = r.float_atomics;
    d["cooperative"] = r.cooperative;
    d["blocks_run"] = r.blocks_run;
    out.append(d);
  }
  return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "fastlayers CUDA kernels under the SIMT emulator (tests only)";
  m.def("configure", &configure, py::arg("order") = "forward", py::arg("seed") = 0,
        py::arg("only_launch") = -1, py::arg("block_begin") = 0, py::arg("block_end") = -1,
        py::arg("workers") = 0,
        "Schedule and block subset for the launches that follow (see csrc/emu/runtime.h)");
  m.def("launch_log", &launch_log, "Every launch since clear_log(), in order");
  m.def("clear_log", &fl::emu::clear_log);
  m.def("kernels_run", &fl::emu::kernels_run, "Every kernel that has run in this process");
}
