// RNN CPU kernels compiled for AVX-512 (F, BW, VL) (see isa.h).
#include "fastlayers/rnn.h"
#include "kernels/cpu/isa.h"

#if FL_CPU_X86_VARIANTS
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx2,fma")
#define FL_ISA_NS avx512
#include "kernels/cpu/rnn_impl.h"
#undef FL_ISA_NS
#pragma GCC pop_options
#endif
