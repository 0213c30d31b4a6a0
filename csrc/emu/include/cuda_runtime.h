// Emulator stand-in for <cuda_runtime.h>: everything it provides comes from emu/simt.h.
#pragma once

#include "emu/simt.h"
