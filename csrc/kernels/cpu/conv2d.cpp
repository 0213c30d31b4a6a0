// conv2d CPU entry points: the baseline variant, and dispatch to the best variant.
#include "fastlayers/conv2d.h"

#include "kernels/cpu/isa.h"

#define FL_ISA_NS base
#include "kernels/cpu/conv2d_impl.h"
#undef FL_ISA_NS

namespace fl {
namespace cpu {

#if FL_CPU_X86_VARIANTS
namespace avx2 {
void conv2d_forward(const Conv2dFwdParams& p, const ParallelFor& pfor, const Gemm& gemm);
void conv2d_backward(const Conv2dBwdParams& p, const ParallelFor& pfor, const Gemm& gemm);
}  // namespace avx2
namespace avx512 {
void conv2d_forward(const Conv2dFwdParams& p, const ParallelFor& pfor, const Gemm& gemm);
void conv2d_backward(const Conv2dBwdParams& p, const ParallelFor& pfor, const Gemm& gemm);
}  // namespace avx512
#endif

void conv2d_forward(const Conv2dFwdParams& p, const ParallelFor& pfor, const Gemm& gemm) {
  switch (runtime_isa()) {
#if FL_CPU_X86_VARIANTS
    case Isa::kAvx512: return avx512::conv2d_forward(p, pfor, gemm);
    case Isa::kAvx2: return avx2::conv2d_forward(p, pfor, gemm);
#endif
    default: return base::conv2d_forward(p, pfor, gemm);
  }
}

void conv2d_backward(const Conv2dBwdParams& p, const ParallelFor& pfor, const Gemm& gemm) {
  switch (runtime_isa()) {
#if FL_CPU_X86_VARIANTS
    case Isa::kAvx512: return avx512::conv2d_backward(p, pfor, gemm);
    case Isa::kAvx2: return avx2::conv2d_backward(p, pfor, gemm);
#endif
    default: return base::conv2d_backward(p, pfor, gemm);
  }
}

}  // namespace cpu
}  // namespace fl
