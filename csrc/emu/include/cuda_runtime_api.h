// Emulator stand-in for <cuda_runtime_api.h>: everything it provides comes from emu/simt.h.
#pragma once

#include "emu/simt.h"
