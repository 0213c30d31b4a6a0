// Sinusoidal positional encoding CPU glue: the shared checks and allocation
// (positional_encoding_common.h), then the CPU kernel through torch's parallel_for.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "ops/common.h"
#include "ops/positional_encoding_common.h"

namespace fl {
namespace ops {
namespace {

constexpr std::initializer_list<at::ScalarType> kCpuTypes = {at::kFloat, at::kDouble,
                                                             at::kBFloat16};

at::Tensor forward_cpu(const at::Tensor& self, int64_t seq_dim) {
  return positional_encoding_impl(
      self, seq_dim, kCpuTypes, "cpu",
      [](const PositionalEncodingParams& p) { cpu::positional_encoding(p, torch_parallel_for()); });
}

}  // namespace

TORCH_LIBRARY_IMPL(fastlayers, CPU, m) { m.impl("positional_encoding", &forward_cpu); }

}  // namespace ops
}  // namespace fl
