// The SIMT emulator's view of CUDA for kernel sources: compile a .cu file as C++ with
// `-DFL_EMU -include emu/simt.h` (and csrc/emu/include first on the include path, so
// <cuda_runtime.h>, <cuda_fp16.h>, <cuda_bf16.h> and <cooperative_groups.h> resolve here)
// and it runs on the CPU with CUDA semantics; see runtime.h for the execution model.
//
// Covered: thread/block indices and dimensions; __syncthreads and named barriers (ptx.h);
// static and dynamic shared memory, per block; warp shuffles, votes, __syncwarp,
// __activemask; atomics on global and shared memory; __half / __nv_bfloat16 and the vector
// types (cuda_types.h); cooperative-groups grid sync; the ptx.cuh wrappers (ptx.h); the
// cudaMalloc/cudaMemcpy family on host memory, for standalone CUDA programs.
// Not covered, on purpose: divergence within a warp other than through exited lanes
// (__activemask returns the live lanes), spin-waiting on memory written by another thread
// of the same block (fibers switch only at sync points, so such a loop never ends),
// __syncthreads_count/_and/_or, textures and surfaces, streams and events (launches run
// synchronously), and dynamic parallelism.
#pragma once

#ifndef FL_EMU
#define FL_EMU 1
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <type_traits>

#include "emu/cuda_types.h"
#include "emu/runtime.h"

// ---------------------------------------------------------------------------------------
// Keywords. __shared__ is static thread_local: each live block runs on its own OS thread,
// so every block sees its own copy (runtime.h).
#define __global__
#define __device__
#define __host__
#define __constant__
#define __managed__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __shared__ static thread_local
#define __grid_constant__

struct dim3 : ::fl::emu::Dim3 {
  constexpr dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : Dim3{vx, vy, vz} {}
  constexpr dim3(const ::fl::emu::Dim3& d) : Dim3(d) {}
};

#define threadIdx (::fl::emu::self().thread_idx)
#define blockIdx (::fl::emu::block_idx())
#define blockDim (::fl::emu::block_dim())
#define gridDim (::fl::emu::grid_dim())
#define warpSize 32

// ---------------------------------------------------------------------------------------
// Barriers, fences, clocks.
inline void __syncthreads() { ::fl::emu::barrier(0, 0); }
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_system() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __nanosleep(unsigned) {}
inline long long clock64() { return static_cast<long long>(__builtin_ia32_rdtsc()); }

// ---------------------------------------------------------------------------------------
// Warp-level operations: each is a warp collective (runtime.h), so lanes meet there and
// the values exchanged are those every lane passed. A lane reading from a lane outside the
// mask gets 0xFF bytes (undefined on hardware: this makes the mistake visible).
namespace fl {
namespace emu {

template <typename T>
struct ShflIn {
  T var;
  int src;  // absolute source lane, or -1: keep own value
};

template <typename T>
T shuffle(const char* what, unsigned mask, T var, int src) {
  static_assert(std::is_trivially_copyable<T>::value, "shuffled values are plain data");
  return warp_collective<T>(what, mask, ShflIn<T>{var, src},
                            [](const ShflIn<T>* const* in, T* const* out, uint32_t part) {
                              for (int l = 0; l < 32; ++l) {
                                if (!(part >> l & 1)) continue;
                                const int s = in[l]->src;
                                if (s < 0 || s == l) {
                                  *out[l] = in[l]->var;
                                } else if (part >> s & 1) {
                                  *out[l] = in[s]->var;
                                } else {
                                  std::memset(static_cast<void*>(out[l]), 0xFF, sizeof(T));
                                }
                              }
                            });
}

// Lane arithmetic of shfl.sync with a segment width (a power of two up to 32).
inline int shfl_segment(int width) { return (width <= 0 || width > 32) ? 32 : width; }

}  // namespace emu
}  // namespace fl

inline void __syncwarp(unsigned mask = 0xffffffffu) {
  ::fl::emu::warp_collective<char>("__syncwarp", mask, char(0),
                                   [](const char* const*, char* const*, uint32_t) {});
}

inline unsigned __activemask() { return ::fl::emu::live_lanes(); }

template <typename T>
T __shfl_sync(unsigned mask, T var, int src_lane, int width = 32) {
  const int w = ::fl::emu::shfl_segment(width), lane = ::fl::emu::self().lane;
  return ::fl::emu::shuffle("__shfl_sync", mask, var, (lane & ~(w - 1)) + (src_lane & (w - 1)));
}

template <typename T>
T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = 32) {
  const int w = ::fl::emu::shfl_segment(width), lane = ::fl::emu::self().lane;
  const int src = (lane & (w - 1)) >= int(delta) ? lane - int(delta) : -1;
  return ::fl::emu::shuffle("__shfl_up_sync", mask, var, src);
}

template <typename T>
T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = 32) {
  const int w = ::fl::emu::shfl_segment(width), lane = ::fl::emu::self().lane;
  const int src = (lane & (w - 1)) + int(delta) < w ? lane + int(delta) : -1;
  return ::fl::emu::shuffle("__shfl_down_sync", mask, var, src);
}

template <typename T>
T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = 32) {
  const int w = ::fl::emu::shfl_segment(width), lane = ::fl::emu::self().lane;
  const int src = lane ^ lane_mask;
  return ::fl::emu::shuffle("__shfl_xor_sync", mask, var,
                            (src & ~(w - 1)) == (lane & ~(w - 1)) ? src : -1);
}

inline unsigned __ballot_sync(unsigned mask, int predicate) {
  return ::fl::emu::warp_collective<unsigned>(
      "__ballot_sync", mask, predicate != 0,
      [](const bool* const* in, unsigned* const* out, uint32_t part) {
        unsigned bits = 0;
        for (int l = 0; l < 32; ++l)
          if ((part >> l & 1) && *in[l]) bits |= 1u << l;
        for (int l = 0; l < 32; ++l)
          if (part >> l & 1) *out[l] = bits;
      });
}

inline int __any_sync(unsigned mask, int predicate) { return __ballot_sync(mask, predicate) != 0; }

inline int __all_sync(unsigned mask, int predicate) {
  return __ballot_sync(mask, predicate) == (mask & __ballot_sync(mask, 1));
}

inline unsigned __match_any_sync(unsigned mask, unsigned long long value) {
  return ::fl::emu::warp_collective<unsigned>(
      "__match_any_sync", mask, value,
      [](const unsigned long long* const* in, unsigned* const* out, uint32_t part) {
        for (int l = 0; l < 32; ++l) {
          if (!(part >> l & 1)) continue;
          unsigned bits = 0;
          for (int m = 0; m < 32; ++m)
            if ((part >> m & 1) && *in[m] == *in[l]) bits |= 1u << m;
          *out[l] = bits;
        }
      });
}

#define FL_EMU_WARP_REDUCE(name, T, op)                                                      \
  inline T name(unsigned mask, T value) {                                                    \
    return ::fl::emu::warp_collective<T>(#name, mask, value,                                 \
                                         [](const T* const* in, T* const* out, uint32_t p) { \
                                           bool first = true;                                \
                                           T acc{};                                          \
                                           for (int l = 0; l < 32; ++l) {                    \
                                             if (!(p >> l & 1)) continue;                    \
                                             acc = first ? *in[l] : op(acc, *in[l]);         \
                                             first = false;                                  \
                                           }                                                 \
                                           for (int l = 0; l < 32; ++l)                      \
                                             if (p >> l & 1) *out[l] = acc;                  \
                                         });                                                 \
  }
#define FL_EMU_ADD(a, b) ((a) + (b))
#define FL_EMU_MIN(a, b) ((b) < (a) ? (b) : (a))
#define FL_EMU_MAX(a, b) ((a) < (b) ? (b) : (a))
#define FL_EMU_AND(a, b) ((a) & (b))
#define FL_EMU_OR(a, b) ((a) | (b))
#define FL_EMU_XOR(a, b) ((a) ^ (b))
FL_EMU_WARP_REDUCE(__reduce_add_sync, unsigned, FL_EMU_ADD)
FL_EMU_WARP_REDUCE(__reduce_min_sync, unsigned, FL_EMU_MIN)
FL_EMU_WARP_REDUCE(__reduce_max_sync, unsigned, FL_EMU_MAX)
FL_EMU_WARP_REDUCE(__reduce_add_sync, int, FL_EMU_ADD)
FL_EMU_WARP_REDUCE(__reduce_min_sync, int, FL_EMU_MIN)
FL_EMU_WARP_REDUCE(__reduce_max_sync, int, FL_EMU_MAX)
FL_EMU_WARP_REDUCE(__reduce_and_sync, unsigned, FL_EMU_AND)
FL_EMU_WARP_REDUCE(__reduce_or_sync, unsigned, FL_EMU_OR)
FL_EMU_WARP_REDUCE(__reduce_xor_sync, unsigned, FL_EMU_XOR)
#undef FL_EMU_WARP_REDUCE

// ---------------------------------------------------------------------------------------
// Atomics. Blocks run concurrently on OS threads, so these are real atomic operations;
// fibers of one block share an OS thread and never interleave inside one. Each returns the
// old value, as CUDA's do.
namespace fl {
namespace emu {

template <typename T, typename F>
T atomic_update(T* address, F f) {
  static_assert(sizeof(T) == 2 || sizeof(T) == 4 || sizeof(T) == 8, "atomic width");
  using U = std::conditional_t<sizeof(T) == 2, uint16_t,
                               std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>>;
  U* word = reinterpret_cast<U*>(address);
  U old_bits = __atomic_load_n(word, __ATOMIC_RELAXED);
  for (;;) {
    T old_value, new_value;
    std::memcpy(&old_value, &old_bits, sizeof(T));
    new_value = f(old_value);
    U new_bits;
    std::memcpy(&new_bits, &new_value, sizeof(T));
    if (__atomic_compare_exchange_n(word, &old_bits, new_bits, true, __ATOMIC_SEQ_CST,
                                    __ATOMIC_RELAXED))
      return old_value;
  }
}

}  // namespace emu
}  // namespace fl

template <typename T>
  requires std::is_integral_v<T>
T atomicAdd(T* address, T val) {
  return __atomic_fetch_add(address, val, __ATOMIC_SEQ_CST);
}
inline float atomicAdd(float* address, float val) {
  ::fl::emu::note_float_atomic();
  return ::fl::emu::atomic_update(address, [val](float x) { return x + val; });
}
inline double atomicAdd(double* address, double val) {
  ::fl::emu::note_float_atomic();
  return ::fl::emu::atomic_update(address, [val](double x) { return x + val; });
}
inline __half atomicAdd(__half* address, __half val) {
  ::fl::emu::note_float_atomic();
  return ::fl::emu::atomic_update(address, [val](__half x) { return __hadd(x, val); });
}
inline __nv_bfloat16 atomicAdd(__nv_bfloat16* address, __nv_bfloat16 val) {
  ::fl::emu::note_float_atomic();
  return ::fl::emu::atomic_update(address, [val](__nv_bfloat16 x) { return __hadd(x, val); });
}
inline __half2 atomicAdd(__half2* address, __half2 val) {
  ::fl::emu::note_float_atomic();
  return ::fl::emu::atomic_update(address, [val](__half2 x) { return __hadd2(x, val); });
}
inline __nv_bfloat162 atomicAdd(__nv_bfloat162* address, __nv_bfloat162 val) {
  ::fl::emu::note_float_atomic();
  return ::fl::emu::atomic_update(address, [val](__nv_bfloat162 x) { return __hadd2(x, val); });
}
template <typename T>
  requires std::is_integral_v<T>
T atomicSub(T* address, T val) {
  return __atomic_fetch_sub(address, val, __ATOMIC_SEQ_CST);
}
template <typename T>
  requires std::is_integral_v<T>
T atomicAnd(T* address, T val) {
  return __atomic_fetch_and(address, val, __ATOMIC_SEQ_CST);
}
template <typename T>
  requires std::is_integral_v<T>
T atomicOr(T* address, T val) {
  return __atomic_fetch_or(address, val, __ATOMIC_SEQ_CST);
}
template <typename T>
  requires std::is_integral_v<T>
T atomicXor(T* address, T val) {
  return __atomic_fetch_xor(address, val, __ATOMIC_SEQ_CST);
}
template <typename T>
  requires std::is_integral_v<T>
T atomicMax(T* address, T val) {
  return ::fl::emu::atomic_update(address, [val](T x) { return x < val ? val : x; });
}
template <typename T>
  requires std::is_integral_v<T>
T atomicMin(T* address, T val) {
  return ::fl::emu::atomic_update(address, [val](T x) { return val < x ? val : x; });
}
template <typename T>
T atomicExch(T* address, T val) {
  return ::fl::emu::atomic_update(address, [val](T) { return val; });
}
template <typename T>
  requires std::is_integral_v<T>
T atomicCAS(T* address, T compare, T val) {
  __atomic_compare_exchange_n(address, &compare, val, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
  return compare;
}
inline unsigned short atomicCAS(unsigned short* address, unsigned short compare,
                                unsigned short val) {
  __atomic_compare_exchange_n(address, &compare, val, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
  return compare;
}
inline unsigned atomicInc(unsigned* address, unsigned limit) {
  return ::fl::emu::atomic_update(address, [limit](unsigned x) { return x >= limit ? 0 : x + 1; });
}
inline unsigned atomicDec(unsigned* address, unsigned limit) {
  return ::fl::emu::atomic_update(
      address, [limit](unsigned x) { return (x == 0 || x > limit) ? limit : x - 1; });
}
// The _block / _system scopes are the same operation here.
#define atomicAdd_block atomicAdd
#define atomicAdd_system atomicAdd
#define atomicMax_block atomicMax
#define atomicMin_block atomicMin
#define atomicCAS_block atomicCAS
#define atomicExch_block atomicExch

// ---------------------------------------------------------------------------------------
// Host API subset: errors, and memory as host memory so standalone CUDA programs (the
// emulator's reference programs) run unchanged. Launches are synchronous.
struct CUstream_st;
using cudaStream_t = CUstream_st*;
enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = ::fl::emu::kErrorInvalidValue,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = ::fl::emu::kErrorInvalidConfiguration,
  cudaErrorLaunchFailure = ::fl::emu::kErrorLaunchFailure,
  cudaErrorCooperativeLaunchTooLarge = ::fl::emu::kErrorCooperativeLaunchTooLarge,
};
enum cudaMemcpyKind {
  cudaMemcpyHostToHost,
  cudaMemcpyHostToDevice,
  cudaMemcpyDeviceToHost,
  cudaMemcpyDeviceToDevice,
  cudaMemcpyDefault
};
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };

inline cudaError_t cudaGetLastError() {
  std::string message;
  return static_cast<cudaError_t>(::fl::emu::take_error(&message));
}
inline cudaError_t cudaPeekAtLastError() {
  return static_cast<cudaError_t>(::fl::emu::peek_error());
}
inline const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorCooperativeLaunchTooLarge: return "too many blocks in cooperative launch";
    default: return "unspecified launch failure";
  }
}
inline cudaError_t cudaDeviceSynchronize() { return cudaPeekAtLastError(); }
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaPeekAtLastError(); }
template <typename T>
cudaError_t cudaMalloc(T** ptr, size_t bytes) {
  *ptr = static_cast<T*>(::operator new(bytes ? bytes : 1, std::align_val_t(256)));
  return cudaSuccess;
}
inline cudaError_t cudaFree(void* ptr) {
  if (ptr) ::operator delete(ptr, std::align_val_t(256));
  return cudaSuccess;
}
inline cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind) {
  std::memcpy(dst, src, bytes);
  return cudaSuccess;
}
inline cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind,
                                   cudaStream_t = nullptr) {
  std::memcpy(dst, src, bytes);
  return cudaSuccess;
}
inline cudaError_t cudaMemset(void* dst, int value, size_t bytes) {
  std::memset(dst, value, bytes);
  return cudaSuccess;
}
inline cudaError_t cudaMemsetAsync(void* dst, int value, size_t bytes, cudaStream_t = nullptr) {
  std::memset(dst, value, bytes);
  return cudaSuccess;
}
// The device the emulator presents: an H100/H200's SM count and opt-in shared memory.
enum cudaDeviceAttr {
  cudaDevAttrMultiProcessorCount = 16,
  cudaDevAttrMaxSharedMemoryPerBlockOptin = 97
};
inline cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}
inline cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int /*device*/) {
  *value = attr == cudaDevAttrMultiProcessorCount ? 132 : 232448;
  return cudaSuccess;
}
template <typename K>
cudaError_t cudaFuncSetAttribute(K* kernel, cudaFuncAttribute attr, int value) {
  if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize)
    ::fl::emu::set_max_dynamic_shared(reinterpret_cast<const void*>(kernel), value);
  return cudaSuccess;
}

// ---------------------------------------------------------------------------------------
// Cooperative groups: the grid, the block and warp tiles.
namespace cooperative_groups {

struct grid_group {
  void sync() const { ::fl::emu::grid_sync(); }
  bool is_valid() const { return true; }
  unsigned long long size() const {
    const auto &g = ::fl::emu::grid_dim(), &b = ::fl::emu::block_dim();
    return 1ull * g.x * g.y * g.z * b.x * b.y * b.z;
  }
  unsigned long long thread_rank() const {
    const auto &g = ::fl::emu::grid_dim(), &bi = ::fl::emu::block_idx();
    const auto& b = ::fl::emu::block_dim();
    const unsigned long long block = bi.x + 1ull * g.x * (bi.y + 1ull * g.y * bi.z);
    return block * b.x * b.y * b.z + ::fl::emu::self().linear;
  }
  unsigned long long num_threads() const { return size(); }
};

struct thread_block {
  void sync() const { __syncthreads(); }
  unsigned thread_rank() const { return ::fl::emu::self().linear; }
  unsigned size() const {
    const auto& b = ::fl::emu::block_dim();
    return b.x * b.y * b.z;
  }
  unsigned num_threads() const { return size(); }
  dim3 group_index() const { return dim3(::fl::emu::block_idx()); }
  dim3 thread_index() const { return dim3(::fl::emu::self().thread_idx); }
  dim3 group_dim() const { return dim3(::fl::emu::block_dim()); }
};

template <unsigned N>
struct thread_block_tile {
  static_assert(N >= 1 && N <= 32 && (N & (N - 1)) == 0, "tile size is a power of two <= 32");
  unsigned mask() const {
    const unsigned lane = ::fl::emu::self().lane;
    const unsigned bits = N == 32 ? 0xffffffffu : ((1u << N) - 1u);
    return bits << (lane & ~(N - 1));
  }
  void sync() const { __syncwarp(mask()); }
  unsigned thread_rank() const { return ::fl::emu::self().lane & (N - 1); }
  unsigned size() const { return N; }
  unsigned num_threads() const { return N; }
  unsigned meta_group_rank() const { return ::fl::emu::self().linear / N; }
  template <typename T>
  T shfl(T v, int src) const {
    return __shfl_sync(mask(), v, src, N);
  }
  template <typename T>
  T shfl_down(T v, unsigned d) const {
    return __shfl_down_sync(mask(), v, d, N);
  }
  template <typename T>
  T shfl_up(T v, unsigned d) const {
    return __shfl_up_sync(mask(), v, d, N);
  }
  template <typename T>
  T shfl_xor(T v, int m) const {
    return __shfl_xor_sync(mask(), v, m, N);
  }
  unsigned ballot(int p) const {
    return __ballot_sync(mask(), p) >> (::fl::emu::self().lane & ~(N - 1));
  }
  bool any(int p) const { return ballot(p) != 0; }
  bool all(int p) const { return ballot(p) == (N == 32 ? 0xffffffffu : ((1u << N) - 1u)); }
};

inline grid_group this_grid() { return {}; }
inline thread_block this_thread_block() { return {}; }
template <unsigned N>
thread_block_tile<N> tiled_partition(const thread_block&) {
  return {};
}

}  // namespace cooperative_groups
