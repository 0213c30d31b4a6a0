// Attention CPU entry points: the baseline variant, and dispatch to the best variant.
#include "fastlayers/attention.h"

#include <bit>

#include "fastlayers/philox.h"
#include "kernels/cpu/isa.h"

#define FL_ISA_NS base
#include "kernels/cpu/attention_impl.h"
#undef FL_ISA_NS

namespace fl {
namespace cpu {

#if FL_CPU_X86_VARIANTS
namespace avx2 {
void attention_forward(const AttentionFwdParams& p, const ParallelFor& pfor);
void attention_backward(const AttentionBwdParams& p, const ParallelFor& pfor);
}  // namespace avx2
namespace avx512 {
void attention_forward(const AttentionFwdParams& p, const ParallelFor& pfor);
void attention_backward(const AttentionBwdParams& p, const ParallelFor& pfor);
}  // namespace avx512
#endif

void attention_forward(const AttentionFwdParams& p, const ParallelFor& pfor) {
#if FL_CPU_X86_VARIANTS
  switch (runtime_isa()) {
    case Isa::kAvx512: return avx512::attention_forward(p, pfor);
    case Isa::kAvx2: return avx2::attention_forward(p, pfor);
    default: break;
  }
#endif
  base::attention_forward(p, pfor);
}

void attention_backward(const AttentionBwdParams& p, const ParallelFor& pfor) {
#if FL_CPU_X86_VARIANTS
  switch (runtime_isa()) {
    case Isa::kAvx512: return avx512::attention_backward(p, pfor);
    case Isa::kAvx2: return avx2::attention_backward(p, pfor);
    default: break;
  }
#endif
  base::attention_backward(p, pfor);
}

}  // namespace cpu
}  // namespace fl
