// max_pool2d CPU kernels compiled for AVX2 + FMA (see isa.h).
#include "fastlayers/max_pool2d.h"
#include "kernels/cpu/isa.h"

#if FL_CPU_X86_VARIANTS
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define FL_ISA_NS avx2
#include "kernels/cpu/max_pool2d_impl.h"
#undef FL_ISA_NS
#pragma GCC pop_options
#endif
