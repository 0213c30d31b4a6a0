// max_pool2d CPU entry points: the baseline variant, and dispatch to the best variant.
#include "fastlayers/max_pool2d.h"

#include "kernels/cpu/isa.h"

#define FL_ISA_NS base
#include "kernels/cpu/max_pool2d_impl.h"
#undef FL_ISA_NS

namespace fl {
namespace cpu {

FL_CPU_DISPATCH(max_pool2d_forward, MaxPool2dFwdParams)
FL_CPU_DISPATCH(max_pool2d_backward, MaxPool2dBwdParams)

const char* max_pool2d_isa() { return isa_name(runtime_isa()); }

}  // namespace cpu
}  // namespace fl
