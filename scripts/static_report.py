"""Static report on the CUDA kernels of the built extension, from its sm_90 machine code.

For every kernel in fastlayers/_C: registers, static shared memory, stack and local memory
(ptxas puts spilled registers there, so both must be 0), and the number of tensor-core
instructions (HMMA for floating point, IMMA for integers). Checks that no kernel uses local
memory or a stack frame, that the float16/bfloat16 attention and conv GEMM kernels contain HMMA and that
the int8 GEMM contains IMMA.

    python scripts/static_report.py [--so PATH] [--json PATH]

cuobjdump comes from CUDA_HOME, PATH, or else the triton wheel (which ships it), fetched
from the package index into build/tools once. Exit status 1 when a check fails.
"""

import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = os.path.join(ROOT, "build", "tools")
ARCH = "sm_90"
# Kernels that must contain HMMA: the attention and implicit-GEMM conv kernels on half types
# (the float32 paths, the probability and delta kernels and the direct conv kernels are SIMT
# by design).
HMMA_REQUIRED = re.compile(r"(attention_(fwd|bwd_dq|bwd_dkdv)|conv_mma)<(__half|__nv_bfloat16),")
IMMA_REQUIRED = re.compile(r"int8_gemm_mma")


def cuobjdump() -> str:
    for cand in (
        os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "bin", "cuobjdump"),
        shutil.which("cuobjdump"),
        os.path.join(TOOLS, "cuobjdump"),
    ):
        if cand and os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    os.makedirs(TOOLS, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", tmp, "triton"],
            check=True,
        )
        (wheel,) = glob.glob(os.path.join(tmp, "triton-*.whl"))
        with zipfile.ZipFile(wheel) as z:
            for tool in ("cuobjdump", "nvdisasm"):
                dst = os.path.join(TOOLS, tool)
                with z.open(f"triton/backends/nvidia/bin/{tool}") as src, open(dst, "wb") as out:
                    shutil.copyfileobj(src, out)
                os.chmod(dst, 0o755)
    return os.path.join(TOOLS, "cuobjdump")


def demangle(names):
    out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True, check=True).stdout
    return [re.sub(r"\(anonymous namespace\)::", "", n).split("(")[0] for n in out.splitlines()]


def report(so: str):
    tool = cuobjdump()
    res = subprocess.run([tool, "-arch", ARCH, "-res-usage", so], capture_output=True, text=True, check=True).stdout
    kernels = {}
    for m in re.finditer(r"Function (\S+):\s*\n\s*REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", res):
        kernels[m.group(1)] = dict(
            regs=int(m.group(2)), stack=int(m.group(3)), shared=int(m.group(4)), local=int(m.group(5)), hmma=0, imma=0
        )
    sass = subprocess.run([tool, "-arch", ARCH, "-sass", so], capture_output=True, text=True, check=True).stdout
    current = None
    for line in sass.splitlines():
        m = re.match(r"\s*Function : (\S+)", line)
        if m:
            current = m.group(1)
        elif current in kernels:
            kernels[current]["hmma"] += "HMMA" in line
            kernels[current]["imma"] += "IMMA" in line
    names = sorted(kernels)
    return [dict(kernel=d, **kernels[n]) for n, d in zip(names, demangle(names), strict=True)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--so", help="the extension (default: python/fastlayers/_C*.so)")
    parser.add_argument("--json", metavar="PATH", help="also write the rows to PATH")
    args = parser.parse_args(argv)
    so = args.so
    if so is None:
        import fastlayers

        if not fastlayers.build_info()["with_cuda"]:
            print("static_report: this build of fastlayers has no CUDA kernels; nothing to check")
            return
        so = next(iter(glob.glob(os.path.join(ROOT, "python", "fastlayers", "_C*.so"))), None)
        if so is None:
            sys.exit("static_report: no built extension (run make build)")
    rows = report(so)
    if not rows:
        sys.exit(f"static_report: no {ARCH} kernels in {so} (a CPU-only build?)")
    failures = []
    print(
        f"{'kernel (' + ARCH + ')':72s} {'regs':>4s} {'smem':>6s} {'stack':>5s} {'local':>5s} {'HMMA':>5s} {'IMMA':>5s}"
    )
    for r in sorted(rows, key=lambda r: r["kernel"]):
        print(
            f"{r['kernel']:72s} {r['regs']:4d} {r['shared']:6d} {r['stack']:5d} {r['local']:5d} "
            f"{r['hmma']:5d} {r['imma']:5d}"
        )
        if r["stack"] or r["local"]:
            failures.append(f"{r['kernel']}: stack {r['stack']} / local {r['local']} bytes (register spills)")
        if HMMA_REQUIRED.search(r["kernel"]) and r["hmma"] == 0:
            failures.append(f"{r['kernel']}: no HMMA instruction")
        if IMMA_REQUIRED.search(r["kernel"]) and r["imma"] == 0:
            failures.append(f"{r['kernel']}: no IMMA instruction")
    print(f"{len(rows)} kernels; smem is static shared memory (the GEMM and attention tiles are dynamic)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    for f in failures:
        print("FAIL", f)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
