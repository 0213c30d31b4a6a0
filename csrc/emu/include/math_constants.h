// Emulator stand-in for <math_constants.h>: everything it provides comes from emu/simt.h.
#pragma once

#include "emu/simt.h"
