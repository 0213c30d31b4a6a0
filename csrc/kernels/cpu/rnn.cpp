// RNN CPU entry points: the baseline variant, and dispatch to the best variant.
#include "fastlayers/rnn.h"

#include "kernels/cpu/isa.h"

#define FL_ISA_NS base
#include "kernels/cpu/rnn_impl.h"
#undef FL_ISA_NS

namespace fl {
namespace cpu {

#if FL_CPU_X86_VARIANTS
namespace avx2 {
void rnn_forward(const RnnFwdParams& p, const ParallelFor& pfor);
void rnn_backward(const RnnBwdParams& p, const ParallelFor& pfor);
}  // namespace avx2
namespace avx512 {
void rnn_forward(const RnnFwdParams& p, const ParallelFor& pfor);
void rnn_backward(const RnnBwdParams& p, const ParallelFor& pfor);
}  // namespace avx512
#endif

void rnn_forward(const RnnFwdParams& p, const ParallelFor& pfor) {
  switch (runtime_isa()) {
#if FL_CPU_X86_VARIANTS
    case Isa::kAvx512: return avx512::rnn_forward(p, pfor);
    case Isa::kAvx2: return avx2::rnn_forward(p, pfor);
#endif
    default: return base::rnn_forward(p, pfor);
  }
}

void rnn_backward(const RnnBwdParams& p, const ParallelFor& pfor) {
  switch (runtime_isa()) {
#if FL_CPU_X86_VARIANTS
    case Isa::kAvx512: return avx512::rnn_backward(p, pfor);
    case Isa::kAvx2: return avx2::rnn_backward(p, pfor);
#endif
    default: return base::rnn_backward(p, pfor);
  }
}

}  // namespace cpu
}  // namespace fl
