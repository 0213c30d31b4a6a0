// The SIMT emulator's runtime interface: what emulated device code (simt.h, ptx.h) and the
// launch side call. No CUDA or torch header.
//
// Model. A launch runs its blocks on a few OS worker threads (one per live block for a
// cooperative launch, where every block must be resident at once). Within a block every
// CUDA thread is a fiber with its own stack; the block's fibers run on one OS thread,
// each until it reaches a barrier, a warp-collective operation (shuffle, vote, mma,
// ldmatrix, __syncwarp) or its end. So threads of a warp advance independently between
// warp-level sync points, as on Volta and later, and a block's threads advance together
// only at __syncthreads. The order in which a block's runnable fibers are resumed is the
// schedule: forward, reverse, or a seeded shuffle per barrier phase (race mode).
//
// Static __shared__ variables are `static thread_local` (simt.h): per OS thread, hence per
// live block, and poisoned (0xFF bytes: NaN for floats, -1 for integers) at the start of
// every block. Dynamic shared memory is a per-block heap buffer, poisoned the same way.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

namespace fl {
namespace emu {

struct Dim3 {
  unsigned x = 1, y = 1, z = 1;
};

struct Block;

// One CUDA thread. Lives at the base of its own stack region (see self()).
struct Fiber {
  Dim3 thread_idx;  // threadIdx
  Block* block;     // its block: blockIdx, dims, barriers, warps, shared memory
  unsigned linear;  // threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z)
  unsigned warp;    // linear / 32
  unsigned lane;    // linear % 32
  int state;        // runtime.cpp's FiberState
  int bar_id;       // the barrier it waits at, while it does
  void* sp;         // saved stack pointer while switched out
  void* stack_lo;   // usable stack [stack_lo, stack_hi)
  void* stack_hi;
  void* ctx;        // ucontext_t for the portable switch; unused on x86-64
  void* asan_fake;  // AddressSanitizer's fake stack while switched out
  // cp.async copies issued and not yet landed, oldest first; group = -1 while uncommitted.
  struct AsyncCopy {
    void* dst;
    const void* src;
    int bytes, src_bytes;
    int64_t group;
  };
  std::vector<AsyncCopy> async;
  int64_t async_groups;  // groups committed so far
};

// Stack regions are kStackBytes, aligned to kStackBytes, with the Fiber at the base, so the
// running fiber is found from the stack pointer alone: no thread-local state, which would
// otherwise share the TLS block that holds static shared memory.
constexpr uintptr_t kStackBytes = uintptr_t(1) << 18;

inline Fiber& self() {
  uintptr_t sp;
#if defined(__x86_64__)
  asm volatile("mov %%rsp, %0" : "=r"(sp));
#else
  sp = reinterpret_cast<uintptr_t>(__builtin_frame_address(0));
#endif
  return *reinterpret_cast<Fiber*>(sp & ~(kStackBytes - 1));
}

// Accessors for the builtins (simt.h maps threadIdx etc. onto these).
const Dim3& block_idx();
const Dim3& block_dim();
const Dim3& grid_dim();
void* dynamic_shared();

// Records an error for the running launch (the first one wins) and ends the calling CUDA
// thread (its frames unwind, by an exception that only the emulator catches); the launch
// then stops and the launch check raises the error. Never returns.
[[noreturn]] void fail(const std::string& message);

// __syncthreads() is barrier(0, 0); bar.sync id, count is barrier(id, count). count 0
// means every thread of the block that has not exited.
void barrier(int id, int count);
// Cooperative-groups grid sync: a block barrier, then all blocks of the launch.
void grid_sync();

// A warp-collective operation over the lanes in `mask` (bit i = lane i of the caller's
// warp). Each participating lane passes `in`; when the last one arrives, `fn(ins, outs,
// participants)` runs once with ins[l] / outs[l] for every participating lane l, and each
// lane returns its outs[lane]. Every lane in `mask` must call the same collective (`what`)
// with the same mask; a lane in the mask that has exited, or that calls a different
// collective, is an error that names `what`. Lanes beyond the block's last thread are not
// part of any mask.
using CollectiveFn = void (*)(const void* const* ins, void* const* outs, uint32_t participants,
                              void* closure);
void warp_collective_raw(const char* what, uint32_t mask, const void* in, void* out,
                         CollectiveFn fn, void* closure);

template <typename Out, typename In, typename Fn>
Out warp_collective(const char* what, uint32_t mask, const In& in, Fn&& fn) {
  static_assert(std::is_trivially_copyable<In>::value && std::is_trivially_copyable<Out>::value,
                "collective operands are plain data");
  Out out;
  auto thunk = [](const void* const* ins, void* const* outs, uint32_t participants, void* closure) {
    (*static_cast<std::remove_reference_t<Fn>*>(closure))(
        reinterpret_cast<const In* const*>(ins), reinterpret_cast<Out* const*>(outs), participants);
  };
  warp_collective_raw(what, mask, &in, &out, thunk, &fn);
  return out;
}

// Lanes of the caller's warp that exist (blockDim need not be a multiple of 32) and have
// not exited: what __activemask() returns here (the emulator does not model divergence
// within a warp other than through these exits).
uint32_t live_lanes();

// cp.async: the copy is queued and lands only at the cp.async.wait_group that covers it,
// so a thread that reads the destination before waiting sees the old contents.
// src_bytes < bytes zero-fills the rest (the src-size operand).
void async_copy(void* dst, const void* src, int bytes, int src_bytes);
void async_commit();
// cp.async.wait_group n: land every committed group except the n most recent.
void async_wait(int n);
// cp.async.wait_all: commit, then land everything.
void async_wait_all();

// Called by float atomics: the launch's outputs may then differ in rounding between
// schedules (race mode compares them within rounding instead of bit for bit).
void note_float_atomic();

// ------------------------------------------------------------------------------------
// Launch side.

enum class Order { kForward, kReverse, kShuffle };

// Settings for the launches that follow (global; the emulated test suite runs them
// serially).
struct Config {
  Order order = Order::kForward;
  uint64_t seed = 0;
  int64_t only_launch = -1;  // >= 0: the order applies to that launch index only
  // Blocks to run, by linear block index: [block_begin, block_end); block_end < 0 counts
  // from the end (-1: up to the last block). Default: all.
  int64_t block_begin = 0, block_end = -1;
  int workers = 0;  // OS threads for a normal launch; 0: hardware concurrency
};
Config& config();

struct LaunchRecord {
  std::string kernel;  // fully qualified, with template arguments
  Dim3 grid, block;
  size_t dynamic_smem;
  bool float_atomics;
  bool cooperative;
  int64_t blocks_run;
};
// Every launch since the last clear_log(), in order; launch indices count from there.
std::vector<LaunchRecord> launch_log();
void clear_log();
// Every kernel that has run at least once in this process.
std::vector<std::string> kernels_run();

// cudaError_t codes the emulator reports.
constexpr int kErrorInvalidValue = 1, kErrorInvalidConfiguration = 9, kErrorLaunchFailure = 719,
              kErrorCooperativeLaunchTooLarge = 720;
// The first error since the last take: its code (0: none), and its message into *message;
// then clear it (cudaGetLastError). peek_error leaves it (cudaPeekAtLastError).
int take_error(std::string* message);
int peek_error();
// cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes): a launch
// with more than 48 KiB of dynamic shared memory needs it first, as on the GPU.
void set_max_dynamic_shared(const void* kernel, int bytes);

using KernelThunk = void (*)(void* closure);
void launch_raw(const char* kernel, const void* kernel_id, Dim3 grid, Dim3 block, size_t smem,
                bool cooperative, KernelThunk thunk, void* closure);

// The kernel's qualified name from the compiler: the `auto K = ...` of this function.
template <auto K>
const char* kernel_name() {
  return __PRETTY_FUNCTION__;
}

// FL_LAUNCH(kernel, grid, block, smem, stream)(args...) under the emulator.
template <auto K>
struct Launcher {
  Dim3 grid, block;
  size_t smem;
  bool cooperative;
  const void* stream;  // launches are synchronous: the stream only has to exist
  template <typename... A>
  void operator()(A... args) const {
    auto call = [&]() { K(args...); };
    launch_raw(
        kernel_name<K>(), reinterpret_cast<const void*>(K), grid, block, smem, cooperative,
        [](void* c) { (*static_cast<decltype(call)*>(c))(); }, &call);
  }
};

}  // namespace emu
}  // namespace fl
