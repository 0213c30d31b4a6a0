// Emulator stand-in for <cooperative_groups.h>: everything it provides comes from emu/simt.h.
#pragma once

#include "emu/simt.h"
