// Emulator stand-in for <cuda.h>: everything it provides comes from emu/simt.h.
#pragma once

#include "emu/simt.h"
