// Dropout CPU glue: the shared checks and allocation (dropout_common.h), then the CPU kernel
// through torch's parallel_for.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "ops/common.h"
#include "ops/dropout_common.h"

namespace fl {
namespace ops {
namespace {

constexpr std::initializer_list<at::ScalarType> kCpuTypes = {at::kFloat, at::kDouble, at::kHalf,
                                                             at::kBFloat16};

at::Tensor dropout_cpu(const at::Tensor& input, double p, const at::Tensor& seed_offset) {
  return dropout_impl(input, p, seed_offset, kCpuTypes, "cpu",
                      [](const DropoutParams& prm) { cpu::dropout(prm, torch_parallel_for()); });
}

}  // namespace

TORCH_LIBRARY_IMPL(fastlayers, CPU, m) { m.impl("dropout", &dropout_cpu); }

}  // namespace ops
}  // namespace fl
