// Softmax CPU entry points: the baseline variant, and dispatch to the best variant.
#include "fastlayers/softmax.h"

#include "kernels/cpu/isa.h"

#define FL_ISA_NS base
#include "kernels/cpu/softmax_impl.h"
#undef FL_ISA_NS

namespace fl {
namespace cpu {

FL_CPU_DISPATCH(softmax_forward, SoftmaxFwdParams)
FL_CPU_DISPATCH(softmax_backward, SoftmaxBwdParams)

}  // namespace cpu
}  // namespace fl
