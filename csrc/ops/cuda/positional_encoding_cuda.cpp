// Sinusoidal positional encoding CUDA glue: a device guard, the shared checks and
// allocation (positional_encoding_common.h), then the launch on the current stream, checked.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "ops/common.h"
#include "ops/positional_encoding_common.h"

namespace fl {
namespace ops {
namespace {

constexpr std::initializer_list<at::ScalarType> kCudaTypes = {at::kFloat, at::kHalf, at::kBFloat16};

at::Tensor forward_cuda(const at::Tensor& self, int64_t seq_dim) {
  const c10::cuda::CUDAGuard guard(self.device());
  return positional_encoding_impl(self, seq_dim, kCudaTypes, "cuda",
                                  [](const PositionalEncodingParams& p) {
                                    cuda::positional_encoding(p, c10::cuda::getCurrentCUDAStream());
                                    C10_CUDA_KERNEL_LAUNCH_CHECK();
                                  });
}

}  // namespace

FL_CUDA_LIBRARY_IMPL(m) { m.impl("positional_encoding", &forward_cuda); }

}  // namespace ops
}  // namespace fl
