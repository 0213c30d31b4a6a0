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

FL_CPU_DISPATCH(attention_forward, AttentionFwdParams)
FL_CPU_DISPATCH(attention_backward, AttentionBwdParams)
FL_CPU_DISPATCH(attention_probs, AttentionProbsParams)

}  // namespace cpu
}  // namespace fl
