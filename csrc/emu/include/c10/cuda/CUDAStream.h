// Emulator stand-in for <c10/cuda/CUDAStream.h>: emulated launches are synchronous, so the
// current stream is a null stream.
#pragma once

struct CUstream_st;

namespace c10 {
namespace cuda {

struct CUDAStream {
  CUstream_st* stream() const { return nullptr; }
  operator CUstream_st*() const { return nullptr; }
};

inline CUDAStream getCurrentCUDAStream(int = -1) { return {}; }

}  // namespace cuda
}  // namespace c10
