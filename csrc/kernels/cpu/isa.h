// Instruction-set variants of the CPU kernels. Each kernel source is compiled once per
// variant (the *_avx2.cpp / *_avx512.cpp wrappers set a target pragma), and the entry
// point picks the best variant the running CPU supports, once.
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "fastlayers/parallel.h"
#include "fastlayers/types.h"

// The AVX variants need GCC's per-function target pragmas and an x86-64 target.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define FL_CPU_X86_VARIANTS 1
#else
#define FL_CPU_X86_VARIANTS 0
#endif

// GCC's generic vector extensions (vector_size, __builtin_shuffle, __builtin_convertvector)
// for loops the auto-vectoriser misses; lowered to the instruction set of each variant.
#if defined(__GNUC__) && !defined(__clang__)
#define FL_CPU_VECTOR_EXT 1
#else
#define FL_CPU_VECTOR_EXT 0
#endif

namespace fl {
namespace cpu {

enum class Isa { kBase, kAvx2, kAvx512 };

inline Isa detect_isa() {
  Isa best = Isa::kBase;
#if FL_CPU_X86_VARIANTS
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl"))
    best = Isa::kAvx512;
  else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    best = Isa::kAvx2;
#endif
  // FASTLAYERS_CPU_ISA=base|avx2|avx512 caps the choice, so tests can run every variant.
  if (const char* cap = std::getenv("FASTLAYERS_CPU_ISA")) {
    const std::string c(cap);
    const Isa want = c == "base" ? Isa::kBase : c == "avx2" ? Isa::kAvx2 : Isa::kAvx512;
    if (want < best) best = want;
  }
  return best;
}

inline Isa runtime_isa() {
  static const Isa isa = detect_isa();
  return isa;
}

inline const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kAvx512: return "avx512";
    case Isa::kAvx2: return "avx2";
    default: return "baseline";
  }
}

}  // namespace cpu
}  // namespace fl

// In namespace fl::cpu of an op's baseline .cpp: declares the op's AVX2 and AVX-512 variants
// of `fn(const Params&, const ParallelFor&)` and defines fl::cpu::fn, which calls the best one
// the CPU supports (or base::fn).
#if FL_CPU_X86_VARIANTS
#define FL_CPU_DISPATCH(fn, Params)                   \
  namespace avx2 {                                    \
  void fn(const Params& p, const ParallelFor& pfor);  \
  }                                                   \
  namespace avx512 {                                  \
  void fn(const Params& p, const ParallelFor& pfor);  \
  }                                                   \
  void fn(const Params& p, const ParallelFor& pfor) { \
    switch (runtime_isa()) {                          \
      case Isa::kAvx512: return avx512::fn(p, pfor);  \
      case Isa::kAvx2: return avx2::fn(p, pfor);      \
      default: return base::fn(p, pfor);              \
    }                                                 \
  }
#else
#define FL_CPU_DISPATCH(fn, Params) \
  void fn(const Params& p, const ParallelFor& pfor) { base::fn(p, pfor); }
#endif
