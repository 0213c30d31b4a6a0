// The one place kernels are launched: FL_LAUNCH(kernel, grid, block, smem, stream)(args...).
// Under the SIMT emulator (FL_EMU) the same line runs the kernel on the CPU, so launchers
// need no change to be tested without a GPU.
#pragma once

#include <cstdint>

#if defined(FL_EMU)
#define FL_LAUNCH(kernel, grid, block, smem, stream) \
  ::fl::emu::Launcher<kernel> { dim3(grid), dim3(block), size_t(smem), false, (stream) }
#define FL_LAUNCH_COOPERATIVE(kernel, grid, block, smem, stream) \
  ::fl::emu::Launcher<kernel> { dim3(grid), dim3(block), size_t(smem), true, (stream) }
#define FL_DYNAMIC_SHARED(T, name) T* name = static_cast<T*>(::fl::emu::dynamic_shared())
#else
#define FL_LAUNCH(kernel, grid, block, smem, stream) kernel<<<(grid), (block), (smem), (stream)>>>
// All blocks resident at once, so cooperative_groups::this_grid().sync() is valid.
#define FL_LAUNCH_COOPERATIVE(kernel, grid, block, smem, stream) \
  ::fl::cuda::CooperativeLaunch<decltype(&kernel)> {             \
    &kernel, dim3(grid), dim3(block), (smem), (stream)           \
  }
// Dynamic shared memory (`extern __shared__`), 16-byte aligned, as a T*.
#define FL_DYNAMIC_SHARED(T, name)                                  \
  extern __shared__ __align__(16) unsigned char fl_dynamic_smem_[]; \
  T* name = reinterpret_cast<T*>(fl_dynamic_smem_)
#endif

namespace fl {
namespace cuda {

// Grid for a grid-stride loop over `work` items with `threads` per block. Capped so the
// launch is valid for any size; each thread then strides over the rest.
inline unsigned grid_for(int64_t work, int threads, int64_t max_blocks = 2147483647) {
  int64_t blocks = (work + threads - 1) / threads;
  if (blocks > max_blocks) blocks = max_blocks;
  return static_cast<unsigned>(blocks < 1 ? 1 : blocks);
}

// Grid for kernels that loop over `items` work items one block at a time (a tile, a row
// group): a block per item, capped at 2^20 blocks, which fill an H100/H200 many times over.
inline unsigned blocks_for(int64_t items) { return grid_for(items, 1, int64_t(1) << 20); }

#if !defined(FL_EMU) && defined(__CUDACC__)
template <typename K>
struct CooperativeLaunch {
  K kernel;
  dim3 grid, block;
  size_t smem;
  cudaStream_t stream;
  template <typename... A>
  void operator()(A... args) const {
    void* ptrs[] = {static_cast<void*>(&args)...};
    cudaLaunchCooperativeKernel(reinterpret_cast<const void*>(kernel), grid, block, ptrs, smem,
                                stream);
  }
};
#endif

}  // namespace cuda
}  // namespace fl
