// Emulator stand-in for <cuda_bf16.h>: everything it provides comes from emu/simt.h.
#pragma once

#include "emu/simt.h"
