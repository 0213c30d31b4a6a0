// The one place kernels are launched: FL_LAUNCH(kernel, grid, block, smem, stream)(args...).
// Under the SIMT emulator (FL_EMU) the same line runs the kernel on the CPU, so launchers
// need no change to be tested without a GPU.
#pragma once

#include <cstdint>

#if defined(FL_EMU)
#define FL_LAUNCH(kernel, grid, block, smem, stream) \
  ::fl::emu::launch(kernel, dim3(grid), dim3(block), (smem), (stream))
#else
#define FL_LAUNCH(kernel, grid, block, smem, stream) kernel<<<(grid), (block), (smem), (stream)>>>
#endif

namespace fl {
namespace cuda {

// Grid for a grid-stride loop over `work` items with `threads` per block. Capped so the
// launch is valid for any size; each thread then strides over the rest.
inline unsigned grid_for(int64_t work, int threads, int64_t max_blocks = 1 << 16) {
  int64_t blocks = (work + threads - 1) / threads;
  if (blocks > max_blocks) blocks = max_blocks;
  return static_cast<unsigned>(blocks < 1 ? 1 : blocks);
}

}  // namespace cuda
}  // namespace fl
