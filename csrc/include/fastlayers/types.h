// Torch-free scalar types and helpers shared by the CPU kernels.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <stdexcept>

// Functions of the kernel headers that device code calls too (the emulator compiles device
// code as plain C++, so it needs no annotation there).
#if defined(__CUDACC__)
#define FL_HOST_DEVICE __host__ __device__
#else
#define FL_HOST_DEVICE
#endif

namespace fl {

// Element types the kernels are instantiated for. The glue maps at::ScalarType onto it.
enum class DType : int { kFloat32, kFloat64, kFloat16, kBFloat16 };

// bfloat16 as stored by torch (c10::BFloat16 has the same layout: the top 16 bits of a
// float32). Defined here so CPU kernels need no torch header.
struct bf16 {
  uint16_t bits;
};

inline float to_float(bf16 v) {
  uint32_t u = uint32_t(v.bits) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// Round to nearest even, NaN kept quiet: the rounding c10::BFloat16 uses.
inline bf16 to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  if (std::isnan(f)) return bf16{uint16_t((u >> 16) | 0x40)};
  u += 0x7fffu + ((u >> 16) & 1u);
  return bf16{uint16_t(u >> 16)};
}

// Accumulation type of a storage type: float for 16-bit types, else itself.
template <typename T>
struct acc_type {
  using type = T;
};
template <>
struct acc_type<bf16> {
  using type = float;
};
template <typename T>
using acc_t = typename acc_type<T>::type;

template <typename T>
inline acc_t<T> load(const T* p) {
  return *p;
}
template <>
inline float load<bf16>(const bf16* p) {
  return to_float(*p);
}

template <typename T>
inline void store(T* p, acc_t<T> v) {
  *p = v;
}
template <>
inline void store<bf16>(bf16* p, float v) {
  *p = to_bf16(v);
}

// Calls f(T{}) with T the storage type of `t`, for the CPU kernels' types (float, double,
// bf16); the glue admits no other, and any other throws. Kernels dispatch with
//   dispatch_cpu_types(p.s.dtype, [&](auto tag) { kernel<decltype(tag)>(p, pfor); });
template <typename F>
inline void dispatch_cpu_types(DType t, F&& f) {
  switch (t) {
    case DType::kFloat32: return f(float{});
    case DType::kFloat64: return f(double{});
    case DType::kBFloat16: return f(bf16{});
    default: throw std::invalid_argument("fastlayers CPU kernel: unsupported dtype");
  }
}

// torch's max rule: a NaN always wins, so NaN propagates, and the last NaN seen is kept.
template <typename A>
inline bool max_takes(A candidate, A current) {
  return candidate > current || candidate != candidate;
}

}  // namespace fl
