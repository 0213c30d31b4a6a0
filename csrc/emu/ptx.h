// The SIMT emulator's definitions of the fl::ptx wrappers (kernels/cuda/ptx.cuh, which
// includes this file under FL_EMU): same names and signatures, computed on the CPU as the PTX
// ISA defines them.
//
// mma and ldmatrix are warp collectives: every lane hands in its fragment registers (or its
// row address), the last lane to arrive computes the whole tile once, and each lane gets its
// fragment back. Which lane holds which matrix element is written down once, in
// fl::emu::layout, as the ISA's formulas, so tests can check them against the ISA text and
// against an independent, GPU-tested implementation (CUTLASS/CuTe).
//
// cp.async goes through the runtime's per-thread queue, so a copy lands only at the wait that
// covers its group, and a kernel that reads the destination too early sees the old bytes.
//
// Plain C++ (runtime.h and the standard library only); no __device__ here, since simt.h maps
// it to nothing anyway.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>

#include "emu/runtime.h"

namespace fl {
namespace emu {

// ------------------------------------------------------------------------------------------
// Fragment layouts of the PTX ISA, "Matrix Fragments for mma.m16n8k16 with floating point
// type", "... for mma.m16n8k32" and "Warp-level matrix load instruction: ldmatrix".
// groupID = lane >> 2 and threadID_in_group = lane % 4, as the ISA names them. Element i of a
// fragment is packed low to high: 16-bit elements two per 32-bit register (i / 2, half i % 2),
// 8-bit elements four per register (i / 4, byte i % 4).
namespace layout {

struct Coord {
  int row, col;
};

constexpr int group_id(int lane) { return lane >> 2; }
constexpr int thread_in_group(int lane) { return lane & 3; }

// mma.m16n8k16 .f16/.bf16, A (16x16, row x col = m x k): elements a0..a7.
constexpr Coord mma_m16n8k16_a(int lane, int i) {
  return {group_id(lane) + 8 * ((i >> 1) & 1), 2 * thread_in_group(lane) + (i & 1) + 8 * (i >> 2)};
}

// mma.m16n8k16 .f16/.bf16, B (16x8, row x col = k x n): elements b0..b3.
constexpr Coord mma_m16n8k16_b(int lane, int i) {
  return {2 * thread_in_group(lane) + (i & 1) + 8 * (i >> 1), group_id(lane)};
}

// Accumulator C/D (16x8, m x n) of every m16n8 shape used here (f32 and s32 alike): c0..c3.
constexpr Coord mma_m16n8_c(int lane, int i) {
  return {group_id(lane) + 8 * (i >> 1), 2 * thread_in_group(lane) + (i & 1)};
}

// mma.m16n8k32 .s8/.u8, A (16x32, m x k): elements a0..a15.
constexpr Coord mma_m16n8k32_a(int lane, int i) {
  return {group_id(lane) + 8 * ((i >> 2) & 1), 4 * thread_in_group(lane) + (i & 3) + 16 * (i >> 3)};
}

// mma.m16n8k32 .s8/.u8, B (32x8, k x n): elements b0..b7.
constexpr Coord mma_m16n8k32_b(int lane, int i) {
  return {4 * thread_in_group(lane) + (i & 3) + 16 * (i >> 2), group_id(lane)};
}

// ldmatrix .m8n8 .b16: the element that `lane` receives as element e (0: low half, 1: high)
// of its register for one 8x8 matrix, as (row, col) in memory: row r is the 16-byte row whose
// address the lane ldmatrix_row_lane(matrix, r) supplied, col the 16-bit element within it.
// Without .trans a group of four lanes receives one row; with .trans ("loaded in column-major
// format") one column.
constexpr Coord ldmatrix_m8n8(int lane, int e) {
  return {group_id(lane), 2 * thread_in_group(lane) + e};
}
constexpr Coord ldmatrix_m8n8_trans(int lane, int e) {
  return {2 * thread_in_group(lane) + e, group_id(lane)};
}

// Addresses addr0..addr7 are matrix 0's rows, addr8..addr15 matrix 1's, and so on.
constexpr int ldmatrix_row_lane(int matrix, int row) { return 8 * matrix + row; }

}  // namespace layout

namespace ptx_detail {

// bf16 is the top half of a float: exact.
inline float bf16_to_float(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// IEEE binary16 -> binary32, exact (every half is a float), NaN payloads kept.
inline float f16_to_float(uint16_t h) {
  uint32_t sign = uint32_t(h >> 15) << 31;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t man = h & 0x3ff;
  uint32_t u;
  if (exp == 0x1f) {
    u = sign | 0x7f800000u | (man << 13);  // inf, NaN
  } else if (exp != 0) {
    u = sign | ((exp + 127 - 15) << 23) | (man << 13);
  } else if (man == 0) {
    u = sign;  // +-0
  } else {
    // Subnormal man * 2^-24: normalise so the leading 1 becomes the implicit bit.
    int shift = 0;
    while (!(man & 0x400)) {
      man <<= 1;
      ++shift;
    }
    u = sign | (uint32_t(127 - 15 + 1 - shift) << 23) | ((man & 0x3ff) << 13);
  }
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

inline uint16_t half_of(uint32_t reg, int i) { return uint16_t(reg >> (16 * (i & 1))); }
inline int8_t byte_of(uint32_t reg, int i) { return int8_t(uint8_t(reg >> (8 * (i & 3)))); }

// mma.sync is .aligned over the whole warp: a warp with missing lanes (blockDim not a multiple
// of 32) or lanes that exited is undefined behaviour on a GPU, so it is an error here.
inline void require_full_warp(const char* what, uint32_t participants) {
  if (participants != 0xffffffffu) {
    char mask[16];
    std::snprintf(mask, sizeof mask, "0x%08x", participants);
    fail(std::string(what) + ": needs all 32 lanes of the warp, has lanes " + mask);
  }
}

struct MmaIn {
  uint32_t a[4], b[2];
  union {
    float f[4];
    int32_t i[4];
  } c;
};
struct MmaOutF32 {
  float d[4];
};
struct MmaOutS32 {
  int32_t d[4];
};

// m16n8k16 with 16-bit inputs, f32 accumulate. Products of two bf16 or two f16 values are
// exact in double, and so is their sum with C up to double's own 53-bit rounding; D is that
// rounded once to float. The hardware's internal order and precision of accumulation are
// unspecified by the ISA, so a GPU may differ from this in the last bit (and in NaN payloads,
// overflow of partial sums and subnormal handling).
template <float (*ToFloat)(uint16_t)>
inline void mma_m16n8k16_f32(const char* what, float (&d)[4], const uint32_t (&a)[4],
                             const uint32_t (&b)[2], const float (&c)[4]) {
  MmaIn in;
  std::memcpy(in.a, a, sizeof in.a);
  std::memcpy(in.b, b, sizeof in.b);
  std::memcpy(in.c.f, c, sizeof in.c.f);
  auto out = warp_collective<MmaOutF32>(
      what, 0xffffffffu, in,
      [what](const MmaIn* const* ins, MmaOutF32* const* outs, uint32_t participants) {
        require_full_warp(what, participants);
        double A[16][16], B[16][8], C[16][8];
        for (int lane = 0; lane < 32; ++lane) {
          for (int i = 0; i < 8; ++i) {
            auto p = layout::mma_m16n8k16_a(lane, i);
            A[p.row][p.col] = ToFloat(half_of(ins[lane]->a[i / 2], i));
          }
          for (int i = 0; i < 4; ++i) {
            auto p = layout::mma_m16n8k16_b(lane, i);
            B[p.row][p.col] = ToFloat(half_of(ins[lane]->b[i / 2], i));
            auto q = layout::mma_m16n8_c(lane, i);
            C[q.row][q.col] = ins[lane]->c.f[i];
          }
        }
        for (int lane = 0; lane < 32; ++lane) {
          for (int i = 0; i < 4; ++i) {
            auto q = layout::mma_m16n8_c(lane, i);
            double acc = C[q.row][q.col];
            for (int k = 0; k < 16; ++k) acc += A[q.row][k] * B[k][q.col];
            outs[lane]->d[i] = float(acc);
          }
        }
      });
  std::memcpy(d, out.d, sizeof out.d);
}

// Exact in int64 (32 products of at most 2^14 plus C), then wrapped to int32 as the
// instruction without .satfinite does.
constexpr const char* kMmaS8 = "mma.sync.m16n8k32.s32.s8.s8.s32";

inline void mma_m16n8k32_s8(int32_t (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
                            const int32_t (&c)[4]) {
  MmaIn in;
  std::memcpy(in.a, a, sizeof in.a);
  std::memcpy(in.b, b, sizeof in.b);
  std::memcpy(in.c.i, c, sizeof in.c.i);
  auto out = warp_collective<MmaOutS32>(
      kMmaS8, 0xffffffffu, in,
      [](const MmaIn* const* ins, MmaOutS32* const* outs, uint32_t participants) {
        require_full_warp(kMmaS8, participants);
        int64_t A[16][32], B[32][8], C[16][8];
        for (int lane = 0; lane < 32; ++lane) {
          for (int i = 0; i < 16; ++i) {
            auto p = layout::mma_m16n8k32_a(lane, i);
            A[p.row][p.col] = byte_of(ins[lane]->a[i / 4], i);
          }
          for (int i = 0; i < 8; ++i) {
            auto p = layout::mma_m16n8k32_b(lane, i);
            B[p.row][p.col] = byte_of(ins[lane]->b[i / 4], i);
          }
          for (int i = 0; i < 4; ++i) {
            auto q = layout::mma_m16n8_c(lane, i);
            C[q.row][q.col] = ins[lane]->c.i[i];
          }
        }
        for (int lane = 0; lane < 32; ++lane) {
          for (int i = 0; i < 4; ++i) {
            auto q = layout::mma_m16n8_c(lane, i);
            int64_t acc = C[q.row][q.col];
            for (int k = 0; k < 32; ++k) acc += A[q.row][k] * B[k][q.col];
            outs[lane]->d[i] = int32_t(uint32_t(uint64_t(acc)));  // modulo 2^32
          }
        }
      });
  std::memcpy(d, out.d, sizeof out.d);
}

// ldmatrix.m8n8.xN{.trans}.b16: lanes 0..8N-1 supply row addresses (16-byte aligned, as the
// ISA requires); the other lanes' addresses are not used, so they are not checked either.
template <int N, bool Trans>
inline void ldmatrix(const char* what, uint32_t (&r)[N], const void* row) {
  struct Out {
    uint32_t r[N];
  };
  auto out = warp_collective<Out>(
      what, 0xffffffffu, row,
      [what](const void* const* const* ins, Out* const* outs, uint32_t participants) {
        require_full_warp(what, participants);
        for (int lane = 0; lane < 8 * N; ++lane) {
          if (reinterpret_cast<uintptr_t>(*ins[lane]) % 16 != 0)
            fail(std::string(what) + ": row address of lane " + std::to_string(lane) +
                 " is not 16-byte aligned");
        }
        for (int lane = 0; lane < 32; ++lane) {
          for (int j = 0; j < N; ++j) {
            uint32_t reg = 0;
            for (int e = 0; e < 2; ++e) {
              auto p =
                  Trans ? layout::ldmatrix_m8n8_trans(lane, e) : layout::ldmatrix_m8n8(lane, e);
              const char* src = static_cast<const char*>(*ins[layout::ldmatrix_row_lane(j, p.row)]);
              uint16_t h;
              std::memcpy(&h, src + 2 * p.col, sizeof h);
              reg |= uint32_t(h) << (16 * e);
            }
            outs[lane]->r[j] = reg;
          }
        }
      });
  std::memcpy(r, out.r, sizeof out.r);
}

}  // namespace ptx_detail
}  // namespace emu

namespace ptx {

inline void mma_m16n8k16_bf16_f32(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
                                  const float (&c)[4]) {
  emu::ptx_detail::mma_m16n8k16_f32<emu::ptx_detail::bf16_to_float>(
      "mma.sync.m16n8k16.f32.bf16.bf16.f32", d, a, b, c);
}

inline void mma_m16n8k16_f16_f32(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
                                 const float (&c)[4]) {
  emu::ptx_detail::mma_m16n8k16_f32<emu::ptx_detail::f16_to_float>(
      "mma.sync.m16n8k16.f32.f16.f16.f32", d, a, b, c);
}

inline void mma_m16n8k32_s8_s32(int32_t (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
                                const int32_t (&c)[4]) {
  emu::ptx_detail::mma_m16n8k32_s8(d, a, b, c);
}

inline void ldmatrix_x1(uint32_t (&r)[1], const void* row) {
  emu::ptx_detail::ldmatrix<1, false>("ldmatrix.sync.m8n8.x1.b16", r, row);
}
inline void ldmatrix_x2(uint32_t (&r)[2], const void* row) {
  emu::ptx_detail::ldmatrix<2, false>("ldmatrix.sync.m8n8.x2.b16", r, row);
}
inline void ldmatrix_x4(uint32_t (&r)[4], const void* row) {
  emu::ptx_detail::ldmatrix<4, false>("ldmatrix.sync.m8n8.x4.b16", r, row);
}
inline void ldmatrix_x1_trans(uint32_t (&r)[1], const void* row) {
  emu::ptx_detail::ldmatrix<1, true>("ldmatrix.sync.m8n8.x1.trans.b16", r, row);
}
inline void ldmatrix_x2_trans(uint32_t (&r)[2], const void* row) {
  emu::ptx_detail::ldmatrix<2, true>("ldmatrix.sync.m8n8.x2.trans.b16", r, row);
}
inline void ldmatrix_x4_trans(uint32_t (&r)[4], const void* row) {
  emu::ptx_detail::ldmatrix<4, true>("ldmatrix.sync.m8n8.x4.trans.b16", r, row);
}

// The runtime checks the ISA's operand rules: addresses aligned to the copy size, src-size
// within 0..cp-size.
inline void cp_async_16(void* smem, const void* gmem) { emu::async_copy(smem, gmem, 16, 16); }
inline void cp_async_8(void* smem, const void* gmem) { emu::async_copy(smem, gmem, 8, 8); }
inline void cp_async_4(void* smem, const void* gmem) { emu::async_copy(smem, gmem, 4, 4); }
inline void cp_async_16_zfill(void* smem, const void* gmem, int src_bytes) {
  emu::async_copy(smem, gmem, 16, src_bytes);
}

inline void cp_async_commit() { emu::async_commit(); }

template <int N>
inline void cp_async_wait() {
  static_assert(N >= 0, "cp.async.wait_group takes a non-negative count");
  emu::async_wait(N);
}

inline void cp_async_wait_all() { emu::async_wait_all(); }

// The runtime checks the id (0..15) and that the count is a multiple of 32 within the block;
// a count of 0, which it reads as "every thread of the block", is no bar.sync operand.
inline void bar_sync(int id, int nthreads) {
  if (nthreads <= 0) emu::fail("bar.sync: thread count " + std::to_string(nthreads) + " <= 0");
  emu::barrier(id, nthreads);
}

}  // namespace ptx
}  // namespace fl
