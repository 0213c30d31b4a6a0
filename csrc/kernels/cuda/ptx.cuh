// Every inline-PTX instruction the kernels use, each behind a named wrapper in fl::ptx: tensor-
// core mma, ldmatrix, cp.async and named barriers. Keeping the asm in this one file means the
// SIMT emulator (FL_EMU) only has to supply these names (emu/ptx.h, CPU definitions following
// the PTX ISA) for every kernel built on them to run on the CPU.
#pragma once

#include <cstdint>

#if defined(FL_EMU)

#include "emu/ptx.h"

#else

#include <cuda_runtime.h>

// mma.m16n8k16 .bf16, mma.m16n8k32 .s8, cp.async need sm_80 (ldmatrix sm_75); the project
// builds for 8.0 and 9.0 only, so an older device pass is a configuration error, reported
// here rather than as a ptxas failure deep inside a kernel.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
#error "kernels/cuda/ptx.cuh needs compute capability 8.0 or newer"
#endif

namespace fl {
namespace ptx {

namespace detail {

// Shared-state-space address of a generic pointer into shared memory (ldmatrix, cp.async dst).
__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// Global-state-space address of a generic pointer into global memory (cp.async src).
__device__ __forceinline__ uint64_t gmem_addr(const void* p) {
  return static_cast<uint64_t>(__cvta_generic_to_global(p));
}

}  // namespace detail

// ------------------------------------------------------------------------------------------
// mma.sync: D = A * B + C for one warp, A row-major 16xK, B column-major Kx8, fragments per
// the ISA's "Matrix Fragments for mma.m16n8k16 / m16n8k32". Register-only: no memory clobber.

__device__ __forceinline__ void mma_m16n8k16_bf16_f32(float (&d)[4], const uint32_t (&a)[4],
                                                      const uint32_t (&b)[2], const float (&c)[4]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
      "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%10, %11, %12, %13};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]),
        "f"(c[2]), "f"(c[3]));
}

__device__ __forceinline__ void mma_m16n8k16_f16_f32(float (&d)[4], const uint32_t (&a)[4],
                                                     const uint32_t (&b)[2], const float (&c)[4]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
      "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%10, %11, %12, %13};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]),
        "f"(c[2]), "f"(c[3]));
}

// Without .satfinite the s32 accumulation wraps around.
__device__ __forceinline__ void mma_m16n8k32_s8_s32(int32_t (&d)[4], const uint32_t (&a)[4],
                                                    const uint32_t (&b)[2], const int32_t (&c)[4]) {
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 "
      "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%10, %11, %12, %13};\n"
      : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "r"(c[0]), "r"(c[1]),
        "r"(c[2]), "r"(c[3]));
}

// ------------------------------------------------------------------------------------------
// ldmatrix.sync.aligned.m8n8.xN{.trans}.shared.b16. `row` is this lane's row address (lanes
// 8j..8j+7 give the rows of matrix j); register j receives this lane's part of matrix j.
// No memory clobber: the rows read were written by other lanes, so a correct kernel already
// has a barrier or __syncwarp (both compiler memory barriers) between those stores and this.

__device__ __forceinline__ void ldmatrix_x1(uint32_t (&r)[1], const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];\n"
               : "=r"(r[0])
               : "r"(detail::smem_addr(row)));
}

__device__ __forceinline__ void ldmatrix_x2(uint32_t (&r)[2], const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(detail::smem_addr(row)));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(detail::smem_addr(row)));
}

__device__ __forceinline__ void ldmatrix_x1_trans(uint32_t (&r)[1], const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16 {%0}, [%1];\n"
               : "=r"(r[0])
               : "r"(detail::smem_addr(row)));
}

__device__ __forceinline__ void ldmatrix_x2_trans(uint32_t (&r)[2], const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0, %1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(detail::smem_addr(row)));
}

__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(detail::smem_addr(row)));
}

// ------------------------------------------------------------------------------------------
// cp.async global -> shared. The copy lands at the cp.async.wait_group that covers its group;
// the "memory" clobbers keep the compiler from moving shared-memory accesses across the issue
// and, above all, across the wait. 16 bytes bypass L1 (.cg, the only size .cg allows); 8 and 4
// go through it (.ca).

__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(detail::smem_addr(smem)),
               "l"(detail::gmem_addr(gmem))
               : "memory");
}

__device__ __forceinline__ void cp_async_8(void* smem, const void* gmem) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 8;\n" ::"r"(detail::smem_addr(smem)),
               "l"(detail::gmem_addr(gmem))
               : "memory");
}

__device__ __forceinline__ void cp_async_4(void* smem, const void* gmem) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(detail::smem_addr(smem)),
               "l"(detail::gmem_addr(gmem))
               : "memory");
}

// 16-byte copy of which only the first src_bytes (0..16) are read; the rest of the 16
// destination bytes are zero-filled (the src-size operand). Out-of-bounds tails load as 0.
__device__ __forceinline__ void cp_async_16_zfill(void* smem, const void* gmem, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(detail::smem_addr(smem)),
               "l"(detail::gmem_addr(gmem)), "r"(src_bytes)
               : "memory");
}

__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}

// Waits until at most N of this thread's committed groups are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  static_assert(N >= 0, "cp.async.wait_group takes a non-negative count");
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// Commits any uncommitted copies, then waits for all of them.
__device__ __forceinline__ void cp_async_wait_all() {
  asm volatile("cp.async.wait_all;\n" ::: "memory");
}

// ------------------------------------------------------------------------------------------
// bar.sync id, nthreads: named barrier `id` (0..15) for `nthreads` threads (a multiple of 32),
// e.g. a producer/consumer pair of warp groups. Barrier 0 with every thread is __syncthreads.

__device__ __forceinline__ void bar_sync(int id, int nthreads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(nthreads) : "memory");
}

}  // namespace ptx
}  // namespace fl

#endif  // FL_EMU
