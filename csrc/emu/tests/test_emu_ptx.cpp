// Checks the emulator's fragment layouts (fl::emu::layout in emu/ptx.h) against two sources
// that do not depend on it, for every (lane, element):
//   (a) the PTX ISA's formulas, transcribed here as the document states them;
//   (b) the thread-value layouts of CUTLASS/CuTe, which run on GPUs every day.
// A layout that is wrong the same way in a kernel and in the emulator would pass every
// emulated kernel test, so this test is what pins the layouts to the hardware's. Also checks
// the exact 16-bit float conversions the emulated mma uses. No runtime needed.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <initializer_list>
#include <string>
#include <vector>

#include "emu/ptx.h"

namespace {

namespace L = fl::emu::layout;

int g_checks = 0, g_failures = 0;

void check(bool ok, const std::string& what) {
  ++g_checks;
  if (!ok && ++g_failures <= 20) std::fprintf(stderr, "FAIL: %s\n", what.c_str());
}

std::string at(const char* name, int lane, int i) {
  return std::string(name) + " lane " + std::to_string(lane) + " element " + std::to_string(i);
}

// ------------------------------------------------------------------------------------------
// (a) The PTX ISA (parallel-thread-execution, section 9.7.14.5 "Matrix Fragments for mma"),
// written in its own case-by-case form rather than the compact bit arithmetic of ptx.h.

struct RC {
  int row, col;
};

// 9.7.14.5.8 "Matrix Fragments for mma.m16n8k16 with floating point type", A .f16/.bf16:
//   row = groupID for ai where 0 <= i < 2 || 4 <= i < 6, groupID + 8 otherwise
//   col = (threadID_in_group * 2) + (i & 0x1) for ai where i < 4, ... + 8 for ai where i >= 4
RC isa_m16n8k16_a(int laneid, int i) {
  int groupID = laneid >> 2, threadID_in_group = laneid % 4;
  int row = ((0 <= i && i < 2) || (4 <= i && i < 6)) ? groupID : groupID + 8;
  int col = i < 4 ? (threadID_in_group * 2) + (i & 0x1) : (threadID_in_group * 2) + (i & 0x1) + 8;
  return {row, col};
}

// Same section, B .f16/.bf16 (row = k, col = n):
//   row = (threadID_in_group * 2) + (i & 0x1) for bi where i < 2, ... + 8 for bi where i >= 2
//   col = groupID
RC isa_m16n8k16_b(int laneid, int i) {
  int groupID = laneid >> 2, threadID_in_group = laneid % 4;
  int row = i < 2 ? (threadID_in_group * 2) + (i & 0x1) : (threadID_in_group * 2) + (i & 0x1) + 8;
  return {row, groupID};
}

// Accumulators C/D of m16n8k16 (f32) and of m16n8k32 (s32), the same in both sections:
//   row = groupID for ci where i < 2, groupID + 8 for ci where i >= 2
//   col = (threadID_in_group * 2) + (i & 0x1) for ci where i = {0,..,3}
RC isa_m16n8_c(int laneid, int i) {
  int groupID = laneid >> 2, threadID_in_group = laneid % 4;
  return {i < 2 ? groupID : groupID + 8, (threadID_in_group * 2) + (i & 0x1)};
}

// 9.7.14.5.10 "Matrix Fragments for mma.m16n8k32", A .s8/.u8:
//   row = groupID for ai where 0 <= i < 4 || 8 <= i < 12, groupID + 8 otherwise
//   col = (threadID_in_group * 4) + (i & 0x3) for ai where i < 8, ... + 16 for ai where i >= 8
RC isa_m16n8k32_a(int laneid, int i) {
  int groupID = laneid >> 2, threadID_in_group = laneid % 4;
  int row = ((0 <= i && i < 4) || (8 <= i && i < 12)) ? groupID : groupID + 8;
  int col = i < 8 ? (threadID_in_group * 4) + (i & 0x3) : (threadID_in_group * 4) + (i & 0x3) + 16;
  return {row, col};
}

// Same section, B .s8/.u8 (row = k, col = n):
//   row = (threadID_in_group * 4) + (i & 0x3) for bi where i < 4, ... + 16 for bi where i >= 4
//   col = groupID
RC isa_m16n8k32_b(int laneid, int i) {
  int groupID = laneid >> 2, threadID_in_group = laneid % 4;
  int row = i < 4 ? (threadID_in_group * 4) + (i & 0x3) : (threadID_in_group * 4) + (i & 0x3) + 16;
  return {row, groupID};
}

// 9.7.14.5.15 "Warp-level matrix load instruction: ldmatrix", .m8n8 .b16: "Each address
// corresponds to the start of a matrix row. Addresses addr0-addr7 correspond to the rows of
// the first matrix, addresses addr8-addr15 to the rows of the second matrix, and so on";
// "Each thread in a warp loads fragments of a row, with thread 0 receiving the first fragment
// in its register r, and so on. A group of four threads loads an entire row of the matrix";
// each fragment is two 16-bit elements of one 32-bit register, and register j holds matrix j.
// "Optional qualifier .trans indicates that the matrix is loaded in column-major format":
// what a group of four threads receives is then a column of the 8x8 block in memory.
// Returns the memory position of element e of the lane's register: the row address lane
// (addr<n>) and the 16-bit element within that 16-byte row.
struct RowElem {
  int addr_lane, elem;
};
RowElem isa_ldmatrix(int laneid, int matrix, int e, bool trans) {
  int row = laneid / 4, col = 2 * (laneid % 4) + e;  // of the 8x8 matrix as loaded
  if (trans) return {8 * matrix + col, row};
  return {8 * matrix + row, col};
}

// ------------------------------------------------------------------------------------------
// (b) CuTe thread-value layouts: (thread, value) -> index, a flattened (shape):(stride) per
// mode, coordinates split colexicographically (first mode fastest), as cute::Layout does. For
// the mma atoms the index is column-major in the operand's (M, K), (N, K) or (M, N) tile; for
// ldmatrix it is a bit position, with the source rows laid end to end (128 bits each). CuTe
// keeps a thread's values contiguous and hands them to the instruction reinterpreted as its
// 32-bit registers, so value v is the ISA's element v (a_v, b_v, c_v), low half or byte first.

struct Mode {
  int shape, stride;
};

int eval(const std::vector<Mode>& modes, int x) {
  int index = 0;
  for (const Mode& m : modes) {
    index += (x % m.shape) * m.stride;
    x /= m.shape;
  }
  return index;
}

struct TV {
  std::vector<Mode> thr, val;
  int operator()(int t, int v) const { return eval(thr, t) + eval(val, v); }
};

// NVIDIA/cutlass include/cute/atom/mma_traits_sm80.hpp,
// MMA_Traits<SM80_16x8x16_F16F16F16F16_TN>, which the f32-accumulating f16 and bf16 atoms
// (SM80_16x8x16_F32F16F16F32_TN, SM80_16x8x16_F32BF16BF16F32_TN) inherit:
//   ALayout ((4,8),(2,2,2)):((32,1),(16,8,128))  (T32,V8) -> (M16,K16)
//   BLayout ((4,8),(2,2)):((16,1),(8,64))        (T32,V4) -> (N8,K16)
//   CLayout SM80_16x8_Row ((4,8),(2,2)):((32,1),(16,8))  (T32,V4) -> (M16,N8)
const TV kCuteA16816{{{4, 32}, {8, 1}}, {{2, 16}, {2, 8}, {2, 128}}};
const TV kCuteB16816{{{4, 16}, {8, 1}}, {{2, 8}, {2, 64}}};
const TV kCuteC16x8{{{4, 32}, {8, 1}}, {{2, 16}, {2, 8}}};

// Same file, MMA_Traits<SM80_16x8x32_S32S8S8S32_TN> (CLayout SM80_16x8_Row as above):
//   ALayout ((4,8),(4,2,2)):((64,1),(16,8,256))  (T32,V16) -> (M16,K32)
//   BLayout ((4,8),(4,2)):((32,1),(8,128))       (T32,V8) -> (N8,K32)
const TV kCuteA16832{{{4, 64}, {8, 1}}, {{4, 16}, {2, 8}, {2, 256}}};
const TV kCuteB16832{{{4, 32}, {8, 1}}, {{4, 8}, {2, 128}}};

// NVIDIA/cutlass include/cute/atom/copy_traits_sm75.hpp, DstLayout of the ldmatrix atoms,
// (thread, bit of the thread's registers) -> source bit; value v = bit + 32 * register:
//   SM75_U32x1_LDSM_N  (32,32):(32,1)                      ldmatrix .x1
//   SM75_U32x2_LDSM_N  (32,(32,2)):(32,(1,1024))           .x2
//   SM75_U32x4_LDSM_N  (32,(32,4)):(32,(1,1024))           .x4
//   SM75_U16x2_LDSM_T  ((4,8),(16,2)):((256,16),(1,128))   .x1.trans
//   SM75_U16x4_LDSM_T  ((4,8),(16,2,2)):((256,16),(1,128,1024))  .x2.trans
//   SM75_U16x8_LDSM_T  ((4,8),(16,2,4)):((256,16),(1,128,1024))  .x4.trans
// and their SrcLayouts ((8,4),128):((128,0),1), ((16,2),128):((128,0),1), (32,128):(128,1):
// source thread t < 8 * matrices supplies the 128 bits from bit 128 * t, i.e. row t.
TV cute_ldsm_dst(int matrices, bool trans) {
  if (!trans) return {{{32, 32}}, {{32, 1}, {matrices, 1024}}};
  return {{{4, 256}, {8, 16}}, {{16, 1}, {2, 128}, {matrices, 1024}}};
}
TV cute_ldsm_src(int matrices) {
  return {{{8 * matrices, 128}, {32 / (8 * matrices), 0}}, {{128, 1}}};
}

// ------------------------------------------------------------------------------------------

using LayoutFn = L::Coord (*)(int, int);
using IsaFn = RC (*)(int, int);

// ptx.h == ISA for every (lane, element); the map covers the rows x cols tile exactly once.
void check_mma_operand(const char* name, LayoutFn emu, IsaFn isa, int elems, int rows, int cols) {
  std::vector<int> hits(rows * cols, 0);
  for (int lane = 0; lane < 32; ++lane) {
    for (int i = 0; i < elems; ++i) {
      L::Coord e = emu(lane, i);
      RC r = isa(lane, i);
      check(e.row == r.row && e.col == r.col, at(name, lane, i) + ": emu/ptx.h vs the ISA");
      if (r.row >= 0 && r.row < rows && r.col >= 0 && r.col < cols) ++hits[r.row * cols + r.col];
    }
  }
  for (int x = 0; x < rows * cols; ++x)
    check(hits[x] == 1, std::string(name) + ": element " + std::to_string(x) + " held " +
                            std::to_string(hits[x]) + " times");
}

// CuTe == ISA. `col_major_rows` is the extent of CuTe's first mode: index = a + extent * b,
// where (a, b) is (row, col) of the ISA for A and C and (col, row) for B, whose CuTe tile is
// (N, K) while the ISA names B's coordinates (row = k, col = n).
void check_cute_mma(const char* name, const TV& cute, IsaFn isa, int elems, int extent,
                    bool isa_is_k_by_n) {
  for (int lane = 0; lane < 32; ++lane) {
    for (int i = 0; i < elems; ++i) {
      RC r = isa(lane, i);
      int want = isa_is_k_by_n ? r.col + extent * r.row : r.row + extent * r.col;
      check(cute(lane, i) == want, at(name, lane, i) + ": CuTe vs the ISA");
    }
  }
}

void check_ldmatrix(int matrices, bool trans) {
  std::string name = "ldmatrix.x" + std::to_string(matrices) + (trans ? ".trans" : "");
  const TV dst = cute_ldsm_dst(matrices, trans), src = cute_ldsm_src(matrices);
  for (int row = 0; row < 8 * matrices; ++row) {
    for (int bit = 0; bit < 128; ++bit)
      check(src(row, bit) == 128 * row + bit, name + ": CuTe source row " + std::to_string(row));
  }
  std::vector<int> hits(8 * matrices * 8, 0);
  for (int lane = 0; lane < 32; ++lane) {
    for (int j = 0; j < matrices; ++j) {
      for (int e = 0; e < 2; ++e) {
        RowElem r = isa_ldmatrix(lane, j, e, trans);
        L::Coord p = trans ? L::ldmatrix_m8n8_trans(lane, e) : L::ldmatrix_m8n8(lane, e);
        std::string where = at(name.c_str(), lane, 2 * j + e);
        check(L::ldmatrix_row_lane(j, p.row) == r.addr_lane && p.col == r.elem,
              where + ": emu/ptx.h vs the ISA");
        for (int bit = 0; bit < 16; ++bit)
          check(dst(lane, bit + 16 * e + 32 * j) == 128 * r.addr_lane + 16 * r.elem + bit,
                where + " bit " + std::to_string(bit) + ": CuTe vs the ISA");
        ++hits[r.addr_lane * 8 + r.elem];
      }
    }
  }
  for (size_t x = 0; x < hits.size(); ++x)
    check(hits[x] == 1, name + ": source element " + std::to_string(x) + " delivered " +
                            std::to_string(hits[x]) + " times");
}

uint32_t float_to_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

// Known values of the two 16-bit formats, and every f16 against the compiler's own _Float16
// conversion where the target has one.
void check_conversions() {
  using fl::emu::ptx_detail::bf16_to_float;
  using fl::emu::ptx_detail::f16_to_float;
  struct Known {
    uint16_t bits;
    float value;
  };
  for (Known k : {Known{0x3c00, 1.0f}, Known{0xc000, -2.0f}, Known{0x7bff, 65504.0f},
                  Known{0x0400, std::ldexp(1.0f, -14)}, Known{0x0001, std::ldexp(1.0f, -24)},
                  Known{0x03ff, std::ldexp(1023.0f, -24)}, Known{0x8000, -0.0f},
                  Known{0x7c00, INFINITY}, Known{0xfc00, -INFINITY}, Known{0x3555, 0x555p-12f}})
    check(float_to_bits(f16_to_float(k.bits)) == float_to_bits(k.value),
          "f16 " + std::to_string(k.bits));
  check(std::isnan(f16_to_float(0x7e00)) && std::isnan(f16_to_float(0xfc01)), "f16 NaN");
  for (Known k : {Known{0x3f80, 1.0f}, Known{0xc040, -3.0f}, Known{0x0001, 0x1p-133f},
                  Known{0x7f7f, 0x1.fep127f}, Known{0xff80, -INFINITY}, Known{0x3eab, 0x1.56p-2f}})
    check(float_to_bits(bf16_to_float(k.bits)) == float_to_bits(k.value),
          "bf16 " + std::to_string(k.bits));
  for (uint32_t h = 0; h < 0x10000; ++h)
    check(float_to_bits(bf16_to_float(uint16_t(h))) == h << 16, "bf16 " + std::to_string(h));
#if defined(__FLT16_MAX__)
  for (uint32_t h = 0; h < 0x10000; ++h) {
    _Float16 x;
    uint16_t b = uint16_t(h);
    std::memcpy(&x, &b, sizeof b);
    float want = float(x), got = f16_to_float(b);
    check(std::isnan(want) ? std::isnan(got) : float_to_bits(got) == float_to_bits(want),
          "f16 " + std::to_string(h) + " vs _Float16");
  }
#endif
}

}  // namespace

int main() {
  check_mma_operand("m16n8k16 A", L::mma_m16n8k16_a, isa_m16n8k16_a, 8, 16, 16);
  check_mma_operand("m16n8k16 B", L::mma_m16n8k16_b, isa_m16n8k16_b, 4, 16, 8);
  check_mma_operand("m16n8 C/D", L::mma_m16n8_c, isa_m16n8_c, 4, 16, 8);
  check_mma_operand("m16n8k32 A", L::mma_m16n8k32_a, isa_m16n8k32_a, 16, 16, 32);
  check_mma_operand("m16n8k32 B", L::mma_m16n8k32_b, isa_m16n8k32_b, 8, 32, 8);

  check_cute_mma("m16n8k16 A", kCuteA16816, isa_m16n8k16_a, 8, 16, false);
  check_cute_mma("m16n8k16 B", kCuteB16816, isa_m16n8k16_b, 4, 8, true);
  check_cute_mma("m16n8 C/D", kCuteC16x8, isa_m16n8_c, 4, 16, false);
  check_cute_mma("m16n8k32 A", kCuteA16832, isa_m16n8k32_a, 16, 16, false);
  check_cute_mma("m16n8k32 B", kCuteB16832, isa_m16n8k32_b, 8, 8, true);

  for (int matrices : {1, 2, 4}) {
    check_ldmatrix(matrices, false);
    check_ldmatrix(matrices, true);
  }

  check_conversions();

  std::printf("test_emu_ptx: %s, %d checks, %d failures\n", g_failures ? "FAIL" : "ok", g_checks,
              g_failures);
  return g_failures ? 1 : 0;
}
