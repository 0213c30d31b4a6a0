// Emulator stand-in for <c10/cuda/CUDAException.h>: the launch check raises the emulator's
// error for the launch (a bad configuration, a deadlock, a warp-collective misuse), naming
// the kernel, as C10_CUDA_KERNEL_LAUNCH_CHECK raises a CUDA error.
#pragma once

#include <c10/util/Exception.h>

#include <string>

#include "emu/runtime.h"

#define C10_CUDA_KERNEL_LAUNCH_CHECK()                                             \
  do {                                                                             \
    std::string fl_emu_message_;                                                   \
    if (::fl::emu::take_error(&fl_emu_message_) != 0)                              \
      TORCH_CHECK(false, "CUDA kernel failed (SIMT emulator): ", fl_emu_message_); \
  } while (0)
