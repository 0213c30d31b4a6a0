// The schema of every fastlayers op, in one place: registered as torch.ops.fastlayers, and,
// in the test-only emulator extension, as torch.ops.fastlayers_emu (csrc/emu/torch_module.cpp).
#pragma once

#include <torch/library.h>

namespace fl {
namespace ops {

inline void define_schemas(torch::Library& m) {
  // Values and int64 indices (flat offsets into each H*W plane), as aten's
  // max_pool2d_with_indices. An empty stride means stride = kernel_size.
  m.def(
      "max_pool2d_forward(Tensor self, int[2] kernel_size, int[2] stride, int[2] padding, "
      "int[2] dilation, bool ceil_mode) -> (Tensor, Tensor)");
  // Values only: the inference path, which skips writing indices.
  m.def(
      "max_pool2d(Tensor self, int[2] kernel_size, int[2] stride, int[2] padding, "
      "int[2] dilation, bool ceil_mode) -> Tensor");
  m.def(
      "max_pool2d_backward(Tensor grad_output, Tensor self, Tensor indices, int[2] kernel_size, "
      "int[2] stride, int[2] padding, int[2] dilation, bool ceil_mode) -> Tensor");
}

}  // namespace ops
}  // namespace fl
