"""Which CUDA kernels compiled into fastlayers._C ran under the SIMT emulator.

Reads the kernel symbols of _C (the host-side launch stubs nvcc emits, one per __global__
function instantiated) and build/emu_coverage.json (the kernels the emulated tests ran,
written by tests/emu_support.py), prints a table, and exits non-zero if a compiled kernel
never ran under `emu` and is not listed, with a reason, in tests/emu_coverage_allowlist.txt.

    python scripts/emu_coverage.py
"""

import glob
import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COVERAGE = os.path.join(ROOT, "build", "emu_coverage.json")
ALLOWLIST = os.path.join(ROOT, "tests", "emu_coverage_allowlist.txt")


def normalize(name: str) -> str:
    """`fl::cuda::(anonymous namespace)::k<float, 4, true>` from either a demangled symbol
    (with return type and parameters) or GCC's __PRETTY_FUNCTION__ spelling."""
    name = name.strip().replace("{anonymous}", "(anonymous namespace)")
    if name.startswith("void "):
        name = name[len("void ") :]
    if name.endswith(")"):  # drop the parameter list: the last balanced (...)
        depth = 0
        for i in range(len(name) - 1, -1, -1):
            depth += {")": 1, "(": -1}.get(name[i], 0)
            if depth == 0:
                name = name[:i]
                break
    return name.strip()


def compiled_kernels(so: str) -> list[str]:
    """Kernels in `so`: nvcc's host stub for kernel K is a local function named
    __device_stub__<mangled K>; its static locals carry that name with a length prefix."""
    syms = subprocess.run(["nm", so], capture_output=True, text=True, check=True).stdout
    mangled = set()
    for m in re.finditer(r"L(\d+)(__device_stub__\w+)", syms):
        local = m.group(2)[: int(m.group(1))]
        mangled.add("_" + local[len("__device_stub__") :])
    if not mangled:
        return []
    out = subprocess.run(["c++filt"], input="\n".join(sorted(mangled)), capture_output=True, text=True, check=True)
    return sorted({normalize(n) for n in out.stdout.splitlines() if n.strip()})


def allowlist() -> dict[str, str]:
    allowed = {}
    if os.path.exists(ALLOWLIST):
        for line in open(ALLOWLIST):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            name, _, reason = line.partition("#")
            if not reason.strip():
                sys.exit(f"{ALLOWLIST}: '{name.strip()}' has no reason (write it after a '#')")
            allowed[normalize(name)] = reason.strip()
    return allowed


def main() -> int:
    sys.path.insert(0, os.path.join(ROOT, "python"))
    from fastlayers import _build_info

    if not _build_info.with_cuda:
        print("emu coverage: this build of fastlayers._C has no CUDA kernels; nothing to check")
        return 0
    sos = glob.glob(os.path.join(ROOT, "python", "fastlayers", "_C*.so"))
    if not sos:
        print("emu coverage: fastlayers._C is not built")
        return 1
    kernels = compiled_kernels(sos[0])
    if not kernels:
        print(f"emu coverage: found no kernel symbols in {sos[0]} (was it stripped?)")
        return 1
    try:
        ran = {normalize(k) for k in json.load(open(COVERAGE))}
    except (OSError, ValueError):
        ran = set()
    allowed = allowlist()
    missing = []
    width = max(len(k) for k in kernels)
    print(f"{'CUDA kernel in _C':<{width}}  ran under emu")
    for k in kernels:
        if k in ran:
            status = "yes"
        elif k in allowed:
            status = f"no (allow-listed: {allowed[k]})"
        else:
            status = "NO"
            missing.append(k)
        print(f"{k:<{width}}  {status}")
    covered = sum(k in ran for k in kernels)
    print(f"emu coverage: {covered} of {len(kernels)} kernels ran under emu, {len(missing)} missing")
    for k in sorted(set(allowed) - set(kernels)):
        print(f"note: allow-list entry matches no compiled kernel: {k}")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
