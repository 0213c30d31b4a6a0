// max_pool2d CPU entry points: the baseline variant, and dispatch to the best variant.
#include "fastlayers/max_pool2d.h"

#include "kernels/cpu/isa.h"

#define FL_ISA_NS base
#include "kernels/cpu/max_pool2d_impl.h"
#undef FL_ISA_NS

namespace fl {
namespace cpu {

#if FL_CPU_X86_VARIANTS
namespace avx2 {
void max_pool2d_forward(const MaxPool2dFwdParams& p, const ParallelFor& pfor);
void max_pool2d_backward(const MaxPool2dBwdParams& p, const ParallelFor& pfor);
}  // namespace avx2
namespace avx512 {
void max_pool2d_forward(const MaxPool2dFwdParams& p, const ParallelFor& pfor);
void max_pool2d_backward(const MaxPool2dBwdParams& p, const ParallelFor& pfor);
}  // namespace avx512
#endif

void max_pool2d_forward(const MaxPool2dFwdParams& p, const ParallelFor& pfor) {
#if FL_CPU_X86_VARIANTS
  switch (runtime_isa()) {
    case Isa::kAvx512: return avx512::max_pool2d_forward(p, pfor);
    case Isa::kAvx2: return avx2::max_pool2d_forward(p, pfor);
    default: break;
  }
#endif
  base::max_pool2d_forward(p, pfor);
}

void max_pool2d_backward(const MaxPool2dBwdParams& p, const ParallelFor& pfor) {
#if FL_CPU_X86_VARIANTS
  switch (runtime_isa()) {
    case Isa::kAvx512: return avx512::max_pool2d_backward(p, pfor);
    case Isa::kAvx2: return avx2::max_pool2d_backward(p, pfor);
    default: break;
  }
#endif
  base::max_pool2d_backward(p, pfor);
}

const char* max_pool2d_isa() { return isa_name(runtime_isa()); }

}  // namespace cpu
}  // namespace fl
