// Int8 GEMM and per-row quantisation on the CPU (fastlayers/int8_gemm.h).
//
// Three paths, picked at run time (FASTLAYERS_CPU_ISA caps the choice, so tests reach each):
// - AVX-512 VNNI: vpdpbusd multiplies unsigned by signed bytes and sums groups of four into
//   int32 lanes. a is fed as a + 128 (its sign bit flipped: an unsigned byte), and
//   128 * sum_k b[n, k] is subtracted at the end; int32 arithmetic wraps, so the result is
//   exact whenever the true sum fits in int32. From M = 64 on, a and b are packed into
//   panels of 16 rows (a 16 x 16 word transpose per 64 bytes of K) and a 16 x 16 tile
//   keeps one zmm accumulator per column of c: per group of four k one load of a and 16
//   vpdpbusd with b's word broadcast. Below M = 64, dot products straight from
//   the unpacked rows (4 x 6 accumulators).
// - AVX2: bytes widened to int16, vpmaddwd multiplies pairs and sums them into int32 lanes
//   (exact: |a b| <= 2^14). Micro-tile 4 rows x 16 columns.
// - Portable: int32 dot products of a row of a and a row of b.
// The packed paths put a and b in panels in the order the micro-kernel reads them (k
// grouped by 4 for VNNI, 2 for AVX2, zero-padded in M, N and K); tasks own stripes of b
// columns and apply the epilogue (int32 out, or scales, bias and the cast).

#include "fastlayers/int8_gemm.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <vector>

#include "kernels/cpu/isa.h"

#if FL_CPU_X86_VARIANTS
#include <immintrin.h>
#endif

namespace fl {
namespace cpu {
namespace {

enum class Path { kPortable, kAvx2, kVnni };

Path detect_path() {
#if FL_CPU_X86_VARIANTS
  const Isa isa = runtime_isa();
  if (isa == Isa::kAvx512 && __builtin_cpu_supports("avx512vnni")) return Path::kVnni;
  if (isa >= Isa::kAvx2) return Path::kAvx2;
#endif
  return Path::kPortable;
}

Path path() {
  static const Path p = detect_path();
  return p;
}

// The epilogue of `cols` outputs of row m from column n0: c[x] (minus 128 bsum[n0 + x] when
// bsum is given: the VNNI bias), then int32 out, or c * a_scale * b_scale + bias cast to
// the output type. Plain loops over the row, which the compiler vectorises.
inline void emit_row(const Int8GemmParams& p, int64_t m, int64_t n0, int cols, const int32_t* c,
                     const int32_t* bsum) {
  int32_t v[64];
  for (int x0 = 0; x0 < cols; x0 += 64) {
    const int w = std::min(64, cols - x0);
    for (int x = 0; x < w; ++x)
      v[x] = bsum ? int32_t(uint32_t(c[x0 + x]) - 128u * uint32_t(bsum[n0 + x0 + x])) : c[x0 + x];
    const int64_t i = m * p.N + n0 + x0;
    if (p.a_scale == nullptr) {
      std::memcpy(static_cast<int32_t*>(p.out) + i, v, sizeof(int32_t) * size_t(w));
      continue;
    }
    float f[64];
    const float as = p.a_scale[m];
    const float* bs = p.b_scale + n0 + x0;
    for (int x = 0; x < w; ++x) f[x] = float(v[x]) * as * bs[x];
    if (p.bias)
      for (int x = 0; x < w; ++x) f[x] += p.bias[n0 + x0 + x];
    if (p.out_dtype == DType::kBFloat16) {
      bf16* o = static_cast<bf16*>(p.out) + i;
      for (int x = 0; x < w; ++x) o[x] = to_bf16(f[x]);
    } else if (p.out_dtype == DType::kFloat16) {
      // IEEE binary16, rounded to nearest even by the compiler's _Float16 conversion.
      _Float16* o = static_cast<_Float16*>(p.out) + i;
      for (int x = 0; x < w; ++x) o[x] = static_cast<_Float16>(f[x]);
    } else {
      std::memcpy(static_cast<float*>(p.out) + i, f, sizeof(float) * size_t(w));
    }
  }
}

// Runs `tile(m0, n0, rows, cols)` over tasks of kTaskM x kTaskN outputs (8 x 4 tiles), MR x
// NR tiles each; a task's B panels (4 x NR x K bytes) stay in L2 while its row tiles pass.
template <int MR, int NR, typename Tile>
void for_tiles(const Int8GemmParams& p, const ParallelFor& pfor, Tile&& tile) {
  constexpr int64_t kTaskM = 8 * MR, kTaskN = 4 * NR;
  const int64_t tm = (p.M + kTaskM - 1) / kTaskM, tn = (p.N + kTaskN - 1) / kTaskN;
  pfor(0, tm * tn, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t m_end = std::min(p.M, (t / tn + 1) * kTaskM);
      const int64_t n_end = std::min(p.N, (t % tn + 1) * kTaskN);
      for (int64_t n0 = (t % tn) * kTaskN; n0 < n_end; n0 += NR)
        for (int64_t m0 = (t / tn) * kTaskM; m0 < m_end; m0 += MR)
          tile(m0, n0, int(std::min<int64_t>(MR, p.M - m0)), int(std::min<int64_t>(NR, p.N - n0)));
    }
  });
}

// ---------------------------------------------------------------------------------------
// Portable.

void gemm_portable(const Int8GemmParams& p, const ParallelFor& pfor) {
  for_tiles<4, 16>(p, pfor, [&](int64_t m0, int64_t n0, int rows, int cols) {
    for (int r = 0; r < rows; ++r) {
      const int8_t* a = p.a + (m0 + r) * p.lda;
      int32_t acc[16];
      for (int c = 0; c < cols; ++c) {
        const int8_t* b = p.b + (n0 + c) * p.ldb;
        int32_t s = 0;
        for (int64_t k = 0; k < p.K; ++k) s += int32_t(a[k]) * int32_t(b[k]);
        acc[c] = s;
      }
      emit_row(p, m0 + r, n0, cols, acc, nullptr);
    }
  });
}

#if FL_CPU_X86_VARIANTS

// A 64-byte aligned array: packed panels are read in whole cache lines (an unaligned zmm
// load touches two).
template <typename T>
struct AlignedBuffer {
  explicit AlignedBuffer(size_t n)
      : p(static_cast<T*>(std::aligned_alloc(64, (n * sizeof(T) + 63) / 64 * 64 + 64))) {
    if (!p) throw std::bad_alloc();
  }
  ~AlignedBuffer() { std::free(p); }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  T* data() const { return p; }
  T* p;
};

// Grow-only packing workspace per calling thread: a fresh 16 MB buffer per call would spend
// milliseconds faulting its pages in. Slot 0 holds a's panels, slot 1 b's, slot 2 a task's
// int32 accumulators.
template <typename T>
T* workspace(int slot, size_t n) {
  thread_local std::unique_ptr<AlignedBuffer<uint8_t>> buf[3];
  thread_local size_t cap[3] = {0, 0, 0};
  const size_t bytes = n * sizeof(T);
  if (bytes > cap[slot]) {
    buf[slot].reset();
    buf[slot] = std::make_unique<AlignedBuffer<uint8_t>>(bytes);
    cap[slot] = bytes;
  }
  return reinterpret_cast<T*>(buf[slot]->data());
}

// ---------------------------------------------------------------------------------------
// Packing. Panel of R rows of src (row stride ld, `rows` valid, K valid columns) into
// dst[Kg][R][G] (G consecutive k per row), element type D, converted by f, zero beyond.

template <int R, int G, typename D, typename F>
void pack_panel(const int8_t* src, int64_t ld, int rows, int64_t K, int64_t Kg, D* dst, F&& f,
                D pad) {
  // Whole groups of G columns of the valid rows: a G-element gather per (group, row), which
  // the compiler turns into one load and one (widening) store; then the ragged edges.
  const int64_t full = K / G;
  for (int64_t kg = 0; kg < full; ++kg)
    for (int r = 0; r < rows; ++r) {
      const int8_t* s = src + r * ld + kg * G;
      D* d = dst + (kg * R + r) * G;
      for (int g = 0; g < G; ++g) d[g] = f(s[g]);
    }
  for (int64_t kg = 0; kg < Kg; ++kg)
    for (int r = 0; r < R; ++r) {
      if (kg < full && r < rows) continue;
      for (int g = 0; g < G; ++g) {
        const int64_t k = kg * G + g;
        dst[(kg * R + r) * G + g] = (r < rows && k < K) ? f(src[r * ld + k]) : pad;
      }
    }
}

// The VNNI panels: 4-byte words of R rows of src into dst[K4][R][4], each word XOR `flip`
// (0x80808080 turns signed bytes into unsigned a + 128), padding words `pad`. Row by row:
// sequential reads, word stores R words apart. With `sums`, also each row's byte sum
// (while the row is in L1).
template <int R>
void pack_words(const int8_t* src, int64_t ld, int rows, int64_t K, int64_t K4, uint8_t* dst,
                uint32_t flip, uint32_t pad, int32_t* sums = nullptr) {
  const int64_t full = K / 4;
  for (int r = 0; r < R; ++r) {
    uint8_t* d = dst + 4 * r;
    if (r >= rows) {
      for (int64_t kg = 0; kg < K4; ++kg) std::memcpy(d + kg * 4 * R, &pad, 4);
      continue;
    }
    const int8_t* s = src + r * ld;
    if (sums) {
      int32_t sum = 0;
      for (int64_t k = 0; k < K; ++k) sum += s[k];
      sums[r] = sum;
    }
    for (int64_t kg = 0; kg < full; ++kg) {
      uint32_t w;
      std::memcpy(&w, s + 4 * kg, 4);
      w ^= flip;
      std::memcpy(d + kg * 4 * R, &w, 4);
    }
    if (full < K4) {  // the ragged last word: its bytes past K are padding
      uint8_t b[4];
      std::memcpy(b, &pad, 4);
      for (int64_t k = 4 * full; k < K; ++k) b[k - 4 * full] = uint8_t(s[k]) ^ uint8_t(flip);
      std::memcpy(d + full * 4 * R, b, 4);
    }
  }
}

// ---------------------------------------------------------------------------------------
// AVX-512 VNNI: dot products along K, straight from a's and b's rows (no packing). A tile
// of MR rows x NR columns keeps MR x NR zmm accumulators; per 64 bytes of K it loads MR
// rows of a (sign bit flipped: unsigned bytes) and NR of b, and issues MR x NR vpdpbusd.
// The K tail is a masked load (zero bytes of b add nothing); each accumulator is summed
// across its lanes at the end. Rows and columns past M and N repeat the last valid one and
// are not stored.

constexpr int kVnniMR = 4, kVnniNR = 6;

#define FL_VNNI_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))

FL_VNNI_TARGET void vnni_tile(const Int8GemmParams& p, int64_t m0, int64_t n0, int rows, int cols,
                              const int32_t* bsum) {
  const int8_t* ar[kVnniMR];
  const int8_t* br[kVnniNR];
#pragma GCC unroll 4
  for (int r = 0; r < kVnniMR; ++r) ar[r] = p.a + (m0 + (r < rows ? r : rows - 1)) * p.lda;
#pragma GCC unroll 6
  for (int n = 0; n < kVnniNR; ++n) br[n] = p.b + (n0 + (n < cols ? n : cols - 1)) * p.ldb;
  __m512i acc[kVnniMR][kVnniNR];
#pragma GCC unroll 4
  for (int r = 0; r < kVnniMR; ++r)
#pragma GCC unroll 6
    for (int n = 0; n < kVnniNR; ++n) acc[r][n] = _mm512_setzero_si512();
  // One loop; the K tail is a masked step (bytes outside the mask read as zero).
  const __m512i flip = _mm512_set1_epi8(char(0x80));
  for (int64_t k = 0; k < p.K; k += 64) {
    const __mmask64 mask = p.K - k >= 64 ? ~__mmask64(0) : (__mmask64(1) << (p.K - k)) - 1;
    __m512i av[kVnniMR];
#pragma GCC unroll 4
    for (int r = 0; r < kVnniMR; ++r)
      av[r] = _mm512_xor_si512(_mm512_maskz_loadu_epi8(mask, ar[r] + k), flip);
#pragma GCC unroll 6
    for (int n = 0; n < kVnniNR; ++n) {
      const __m512i bv = _mm512_maskz_loadu_epi8(mask, br[n] + k);
#pragma GCC unroll 4
      for (int r = 0; r < kVnniMR; ++r) acc[r][n] = _mm512_dpbusd_epi32(acc[r][n], av[r], bv);
    }
  }
  // Reduced with constant indices only: indexing acc by the run-time rows / cols would
  // make GCC keep every accumulator in memory.
  int32_t c[kVnniMR][kVnniNR];
#pragma GCC unroll 4
  for (int r = 0; r < kVnniMR; ++r)
#pragma GCC unroll 6
    for (int n = 0; n < kVnniNR; ++n) c[r][n] = _mm512_reduce_add_epi32(acc[r][n]);
  for (int r = 0; r < rows; ++r) emit_row(p, m0 + r, n0, cols, c[r], bsum);  // - 128 sum(b)
}

// sum_k b[n, k] for each row of b: vpdpbusd of ones (unsigned) with b.
FL_VNNI_TARGET void row_sums(const Int8GemmParams& p, int64_t n_begin, int64_t n_end,
                             int32_t* out) {
  const __m512i ones = _mm512_set1_epi8(1);
  for (int64_t n = n_begin; n < n_end; ++n) {
    const int8_t* row = p.b + n * p.ldb;
    __m512i acc = _mm512_setzero_si512();
    int64_t k = 0;
    for (; k + 64 <= p.K; k += 64)
      acc = _mm512_dpbusd_epi32(acc, ones, _mm512_loadu_si512(row + k));
    if (k < p.K)
      acc = _mm512_dpbusd_epi32(acc, ones,
                                _mm512_maskz_loadu_epi8((__mmask64(1) << (p.K - k)) - 1, row + k));
    out[n] = _mm512_reduce_add_epi32(acc);
  }
}

// Transposes 16 x 16 words in place: r[w] becomes word w of the 16 input vectors (vector i
// lane w -> vector w lane i). Four stages of unpacks and 128-bit lane shuffles.
FL_VNNI_TARGET inline void transpose16(__m512i (&r)[16]) {
  __m512i t[16];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
  }
#pragma GCC unroll 4
  for (int g = 0; g < 4; ++g) {
    r[4 * g] = _mm512_unpacklo_epi64(t[4 * g], t[4 * g + 2]);
    r[4 * g + 1] = _mm512_unpackhi_epi64(t[4 * g], t[4 * g + 2]);
    r[4 * g + 2] = _mm512_unpacklo_epi64(t[4 * g + 1], t[4 * g + 3]);
    r[4 * g + 3] = _mm512_unpackhi_epi64(t[4 * g + 1], t[4 * g + 3]);
  }
#pragma GCC unroll 4
  for (int j = 0; j < 4; ++j) {
    t[j] = _mm512_shuffle_i32x4(r[j], r[4 + j], 0x88);
    t[4 + j] = _mm512_shuffle_i32x4(r[j], r[4 + j], 0xdd);
    t[8 + j] = _mm512_shuffle_i32x4(r[8 + j], r[12 + j], 0x88);
    t[12 + j] = _mm512_shuffle_i32x4(r[8 + j], r[12 + j], 0xdd);
  }
#pragma GCC unroll 4
  for (int j = 0; j < 4; ++j) {
    r[j] = _mm512_shuffle_i32x4(t[j], t[8 + j], 0x88);
    r[4 + j] = _mm512_shuffle_i32x4(t[4 + j], t[12 + j], 0x88);
    r[8 + j] = _mm512_shuffle_i32x4(t[j], t[8 + j], 0xdd);
    r[12 + j] = _mm512_shuffle_i32x4(t[4 + j], t[12 + j], 0xdd);
  }
}

// Packed: a and b in panels of 16 rows, k grouped by four per row ([K4][16][4] bytes: one
// zmm per group of four k), a's sign bit flipped. A tile of 16 rows of a x 16 rows of b
// keeps 16 zmm accumulators, one per column of c (its 16 rows in the lanes); per group of
// four k it loads one vector of a and issues 16 vpdpbusd whose b operand is one word of b
// broadcast to all lanes.
// The tile is transposed once at the end (transpose16) into rows of c.
constexpr int kPanel = 16;

// A panel of 16 rows of src into [K4][16][4] words XOR `flip`; with `sums`, each row's byte
// sum. Each 64-byte chunk of the 16 rows is one transpose16 (its 16 words are the next 16
// groups); K past the last whole chunk, and panels of fewer rows, take pack_words' scalar
// rules.
FL_VNNI_TARGET void pack_panel16(const int8_t* src, int64_t ld, int rows, int64_t K, int64_t K4,
                                 uint8_t* dst, uint32_t flip, uint32_t pad, int32_t* sums) {
  if (rows < kPanel) return pack_words<kPanel>(src, ld, rows, K, K4, dst, flip, pad, sums);
  const int64_t chunks = K / 64;
  const __m512i ones = _mm512_set1_epi8(1), x = _mm512_set1_epi32(int32_t(flip));
  __m512i sum = _mm512_setzero_si512();
  for (int64_t c = 0; c < chunks; ++c) {
    __m512i r[16];
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_si512(src + i * ld + 64 * c);
    transpose16(r);
#pragma GCC unroll 16
    for (int w = 0; w < 16; ++w) {
      if (sums) sum = _mm512_dpbusd_epi32(sum, ones, r[w]);
      _mm512_store_si512(dst + (16 * c + w) * 64, _mm512_xor_si512(r[w], x));
    }
  }
  if (sums) _mm512_storeu_si512(sums, sum);
  if (16 * chunks == K4) return;
  const int64_t k0 = 64 * chunks, k4t = K4 - 16 * chunks;  // the tail: < 64 columns
  alignas(64) uint8_t tail[16 * 64];
  int32_t tsum[kPanel];
  pack_words<kPanel>(src + k0, ld, kPanel, K - k0, k4t, tail, flip, pad, sums ? tsum : nullptr);
  std::memcpy(dst + 16 * chunks * 64, tail, size_t(k4t * 64));
  if (sums)
    for (int r = 0; r < kPanel; ++r) sums[r] += tsum[r];
}

// c (16 vectors, column n in c[n]) += a panel x b panel over K4 groups, or = when not
// `accumulate`; with `last`, c is left transposed: c[m] holds row m.
FL_VNNI_TARGET void vnni_packed_tile(const uint8_t* ap, const int8_t* bp, int64_t K4, int32_t* c,
                                     bool accumulate, bool last) {
  __m512i acc[kPanel];
#pragma GCC unroll 16
  for (int n = 0; n < kPanel; ++n)
    acc[n] = accumulate ? _mm512_load_si512(c + 16 * n) : _mm512_setzero_si512();
  for (int64_t k4 = 0; k4 < K4; ++k4) {
    const __m512i av = _mm512_load_si512(ap + k4 * 64);
    const int8_t* bw = bp + k4 * 64;
    // Unrolled, so the accumulators live in registers (a loop over n indexes them in memory).
#pragma GCC unroll 16
    for (int n = 0; n < kPanel; ++n) {
      int32_t w;
      std::memcpy(&w, bw + 4 * n, 4);
      acc[n] = _mm512_dpbusd_epi32(acc[n], av, _mm512_set1_epi32(w));
    }
  }
  if (last) transpose16(acc);
#pragma GCC unroll 16
  for (int n = 0; n < kPanel; ++n) _mm512_store_si512(c + 16 * n, acc[n]);
}

#undef FL_VNNI_TARGET

// Rows of a at which packing b pays for itself (measured: M = 8 unpacked takes a tenth of
// the time packing b alone does at K = N = 4096).
constexpr int64_t kPackMinM = 64;

void gemm_vnni(const Int8GemmParams& p, const ParallelFor& pfor) {
  std::vector<int32_t> bsum(size_t(p.N));
  if (p.M < kPackMinM) {
    pfor(0, p.N, 64, [&](int64_t b, int64_t e) { row_sums(p, b, e, bsum.data()); });
    for_tiles<kVnniMR, kVnniNR>(p, pfor, [&](int64_t m0, int64_t n0, int rows, int cols) {
      vnni_tile(p, m0, n0, rows, cols, bsum.data());
    });
    return;
  }
  // a is packed once, in parallel. b is packed inside the tasks: a task owns a stripe of
  // eight b panels (128 columns), packs them into its thread's workspace (where they stay
  // in L2, with their row sums) and runs every row panel of a against them, so the packed
  // b never makes a round trip through memory.
  const int64_t K4 = (p.K + 3) / 4;
  const int64_t mp = (p.M + kPanel - 1) / kPanel, np = (p.N + kPanel - 1) / kPanel;
  const size_t panel = size_t(K4 * 4 * kPanel);
  uint8_t* const ap = workspace<uint8_t>(0, size_t(mp) * panel);
  pfor(0, mp, 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i)
      pack_panel16(p.a + i * kPanel * p.lda, p.lda,
                   int(std::min<int64_t>(kPanel, p.M - i * kPanel)), p.K, K4,
                   ap + size_t(i) * panel, 0x80808080u, 0x80808080u, nullptr);
  });
  // Blocked over M and K: the accumulators of kBlockM rows x the stripe live in the
  // workspace (in L2), and each 512-k block of a b panel (8 KB) stays in L1 while every row
  // panel of the M block passes over it.
  constexpr int64_t kStripe = 8, kBlockM = 256, kBlockK4 = 128;
  pfor(0, (np + kStripe - 1) / kStripe, 1, [&](int64_t b, int64_t e) {
    uint8_t* const bp = workspace<uint8_t>(1, kStripe * panel);
    int32_t* const acc = workspace<int32_t>(2, size_t(kStripe * kBlockM * kPanel));
    for (int64_t t = b; t < e; ++t) {
      const int64_t i0 = t * kStripe, i_end = std::min(np, i0 + kStripe);
      for (int64_t i = i0; i < i_end; ++i)
        pack_panel16(p.b + i * kPanel * p.ldb, p.ldb,
                     int(std::min<int64_t>(kPanel, p.N - i * kPanel)), p.K, K4,
                     bp + size_t(i - i0) * panel, 0u, 0u, bsum.data() + i * kPanel);
      for (int64_t mb = 0; mb < p.M; mb += kBlockM) {
        const int64_t mt = (std::min(kBlockM, p.M - mb) + kPanel - 1) / kPanel;
        for (int64_t kb = 0; kb < K4; kb += kBlockK4) {
          const int64_t kn = std::min(kBlockK4, K4 - kb);
          for (int64_t i = i0; i < i_end; ++i)
            for (int64_t j = 0; j < mt; ++j)
              vnni_packed_tile(
                  ap + size_t(mb / kPanel + j) * panel + kb * 64,
                  reinterpret_cast<const int8_t*>(bp + size_t(i - i0) * panel) + kb * 64, kn,
                  acc + ((i - i0) * mt + j) * kPanel * kPanel, kb > 0, kb + kn == K4);
        }
        for (int64_t i = i0; i < i_end; ++i) {
          const int64_t n0 = i * kPanel;
          const int cols = int(std::min<int64_t>(kPanel, p.N - n0));
          for (int64_t j = 0; j < mt; ++j) {
            const int32_t* c = acc + ((i - i0) * mt + j) * kPanel * kPanel;
            const int64_t m0 = mb + j * kPanel;
            const int rows = int(std::min<int64_t>(kPanel, p.M - m0));
            for (int r = 0; r < rows; ++r)
              emit_row(p, m0 + r, n0, cols, c + r * kPanel, bsum.data());
          }
        }
      }
    }
  });
}

// ---------------------------------------------------------------------------------------
// AVX2.

constexpr int kAvx2MR = 4, kAvx2NR = 16;

__attribute__((target("avx2"))) void avx2_tile(const int16_t* ap, const int16_t* bp, int64_t K2,
                                               int32_t (&c)[kAvx2MR][kAvx2NR]) {
  __m256i acc[kAvx2MR][2];
#pragma GCC unroll 4
  for (int r = 0; r < kAvx2MR; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_si256();
  for (int64_t k2 = 0; k2 < K2; ++k2) {
    const __m256i b0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bp + k2 * 32));
    const __m256i b1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bp + k2 * 32 + 16));
    const int16_t* a = ap + k2 * 2 * kAvx2MR;
#pragma GCC unroll 4
    for (int r = 0; r < kAvx2MR; ++r) {
      int32_t w;
      std::memcpy(&w, a + 2 * r, 4);
      const __m256i av = _mm256_set1_epi32(w);
      acc[r][0] = _mm256_add_epi32(acc[r][0], _mm256_madd_epi16(av, b0));
      acc[r][1] = _mm256_add_epi32(acc[r][1], _mm256_madd_epi16(av, b1));
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < kAvx2MR; ++r) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(c[r]), acc[r][0]);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(c[r] + 8), acc[r][1]);
  }
}

void gemm_avx2(const Int8GemmParams& p, const ParallelFor& pfor) {
  const int64_t K2 = (p.K + 1) / 2;
  const int64_t mp = (p.M + kAvx2MR - 1) / kAvx2MR, np = (p.N + kAvx2NR - 1) / kAvx2NR;
  int16_t* const ap = workspace<int16_t>(0, size_t(mp * K2 * 2 * kAvx2MR));
  int16_t* const bp = workspace<int16_t>(1, size_t(np * K2 * 2 * kAvx2NR));
  const auto widen = [](int8_t x) { return int16_t(x); };
  pfor(0, mp, 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i)
      pack_panel<kAvx2MR, 2, int16_t>(p.a + i * kAvx2MR * p.lda, p.lda,
                                      int(std::min<int64_t>(kAvx2MR, p.M - i * kAvx2MR)), p.K, K2,
                                      ap + i * K2 * 2 * kAvx2MR, widen, int16_t(0));
  });
  pfor(0, np, 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i)
      pack_panel<kAvx2NR, 2, int16_t>(p.b + i * kAvx2NR * p.ldb, p.ldb,
                                      int(std::min<int64_t>(kAvx2NR, p.N - i * kAvx2NR)), p.K, K2,
                                      bp + i * K2 * 2 * kAvx2NR, widen, int16_t(0));
  });
  for_tiles<kAvx2MR, kAvx2NR>(p, pfor, [&](int64_t m0, int64_t n0, int rows, int cols) {
    int32_t c[kAvx2MR][kAvx2NR];
    avx2_tile(ap + (m0 / kAvx2MR) * K2 * 2 * kAvx2MR, bp + (n0 / kAvx2NR) * K2 * 2 * kAvx2NR, K2,
              c);
    for (int r = 0; r < rows; ++r) emit_row(p, m0 + r, n0, cols, c[r], nullptr);
  });
}

#endif  // FL_CPU_X86_VARIANTS

// ---------------------------------------------------------------------------------------
// Quantisation.

template <typename T>
void quantize_t(const QuantizeRowsParams& p, const ParallelFor& pfor) {
  const T* x = static_cast<const T*>(p.x);
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, p.n));
  pfor(0, p.rows, grain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const T* row = x + r * p.ld;
      // Branch-free loops the compiler vectorises: a max, and a count of NaNs (which
      // propagate to the scale).
      float amax = 0.f;
      int32_t nans = 0;
      for (int64_t j = 0; j < p.n; ++j) {
        const float v = std::fabs(float(load(row + j)));
        amax = v > amax ? v : amax;
        nans += v != v;
      }
      if (nans) amax = std::numeric_limits<float>::quiet_NaN();
      const float scale = amax == 0.f ? 1.f : amax / 127.f;
      p.scale[r] = scale;
      int8_t* q = p.q + r * p.n;
      // Clamp, then round half to even by adding and subtracting 1.5 * 2^23 (exact for
      // |v| <= 127, and SSE2 has no rounding instruction the loop could use); NaN -> 0.
      constexpr float kMagic = 12582912.0f;
      for (int64_t j = 0; j < p.n; ++j) {
        float v = float(load(row + j)) / scale;
        v = v == v ? v : 0.f;
        v = v > 127.f ? 127.f : (v < -127.f ? -127.f : v);
        q[j] = int8_t(int32_t((v + kMagic) - kMagic));
      }
    }
  });
}

}  // namespace

void int8_gemm(const Int8GemmParams& p, const ParallelFor& pfor) {
  if (p.M == 0 || p.N == 0) return;
#if FL_CPU_X86_VARIANTS
  switch (path()) {
    case Path::kVnni: return gemm_vnni(p, pfor);
    case Path::kAvx2: return gemm_avx2(p, pfor);
    default: break;
  }
#endif
  gemm_portable(p, pfor);
}

const char* int8_gemm_path() {
  switch (path()) {
    case Path::kVnni: return "avx512-vnni";
    case Path::kAvx2: return "avx2";
    default: return "portable";
  }
}

void quantize_rows(const QuantizeRowsParams& p, const ParallelFor& pfor) {
  dispatch_cpu_types(p.dtype, [&](auto tag) { quantize_t<decltype(tag)>(p, pfor); });
}

}  // namespace cpu
}  // namespace fl
