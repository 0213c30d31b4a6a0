"""Int8 GEMM: fastlayers against torch, side by side (inference only: forward mode).

int8_mm against torch._int_mm (int8 x int8 -> int32; on CUDA cuBLASLt), counting 2 M N K
integer ops; Int8Linear (per-token quantisation + int8 GEMM + fused dequantisation and
bias) against nn.Linear in float32 (CPU) or bfloat16 (CUDA), counting 2 M N K as well.
Shapes: CPU M = 512, K = N = 4096; CUDA M = N = K in {4096, 8192} (--quick: 4096). The
roofline is torch._int_mm on a large square matrix, measured at start.

    python bench/bench_int8.py [--device cpu|cuda] [--quick] [--json PATH] [--plot PATH]
"""

import os
import sys
from typing import NamedTuple

if not __package__:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

import fastlayers  # noqa: E402
import fastlayers.quant as Q  # noqa: E402
from bench import common  # noqa: E402

OP = "int8"
MODES = ("forward",)


class Case(NamedTuple):
    m: int
    n: int
    k: int
    dtype: torch.dtype = torch.int8  # the GEMM's, whose ceiling the rows carry

    @property
    def label(self) -> str:
        return f"M{self.m} N{self.n} K{self.k}"


def cases(device: str, quick: bool) -> list[Case]:
    """The GEMM shapes benchmarked on `device`."""
    if device == "cpu":
        return [Case(512, 4096, 4096)]
    return [Case(4096, 4096, 4096)] if quick else [Case(4096, 4096, 4096), Case(8192, 8192, 8192)]


def unit(device) -> str:
    return "GOPS" if torch.device(device).type == "cpu" else "TOPS"


def roofline(ceilings: common.Ceilings, dtype) -> dict[str, float]:
    return ceilings.compute_roofline(dtype, unit(ceilings.device))


def bench_case(device, case: Case, roofline, progress) -> list[common.Result]:
    m, n, k, _ = case
    a = torch.randint(-128, 128, (m, k), dtype=torch.int8, device=device)
    b = torch.randint(-128, 128, (n, k), dtype=torch.int8, device=device)
    bt = b.T  # torch._int_mm takes [K, N]: the same weight as a column-major view
    assert torch.equal(Q.int8_mm(a, b), torch._int_mm(a, bt))
    ms_fl, ms_t = (t * 1e3 for t in common.time_fns([lambda: Q.int8_mm(a, b), lambda: torch._int_mm(a, bt)], device))
    work = 2.0 * m * n * k
    rows = [
        common.Result(
            "int8_mm", "forward", case.label, "int8", "NT", ms_fl, ms_t, work, unit(device), roofline, "torch._int_mm"
        )
    ]
    progress.row(rows[-1])
    if torch.device(device).type == "cuda" and m != 4096:
        return rows
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    lin = torch.nn.Linear(k, n, device=device, dtype=dtype)
    qlin = fastlayers.nn.Int8Linear.from_float(lin)
    x = torch.randn(m, k, device=device, dtype=dtype)
    with torch.no_grad():
        err = Q.sqnr_db(lin(x), qlin(x))
        ms_fl, ms_t = (t * 1e3 for t in common.time_fns([lambda: qlin(x), lambda: lin(x)], device))
    dt = common.dtype_name(dtype)
    rows.append(
        common.Result(
            "Int8Linear", "forward", case.label, dt, "row-major", ms_fl, ms_t, work, unit(device), roofline, "nn.Linear"
        )
    )
    progress.row(rows[-1])
    progress.note(f"Int8Linear {case.label}: SQNR {err:.1f} dB against nn.Linear")
    return rows


def run(device: str, quick: bool = False, *, modes=None, ceilings=None, progress=None, compiled=True):
    """All rows for `device`; none unless `modes` (default: all) has forward. `ceilings` (a
    common.Ceilings) is measured here when not given; `compiled` is accepted for a uniform
    call and unused (torch.compile of a GEMM is the GEMM)."""
    if not any(common.wants(mode, modes) for mode in MODES):
        return []
    ceilings = ceilings or common.Ceilings(device)
    progress = progress or common.Progress()
    torch.manual_seed(0)
    return [
        row
        for case in progress.over(OP, cases(device, quick))
        for row in bench_case(device, case, roofline(ceilings, case.dtype), progress)
    ]


def main(argv=None):
    common.main(run, __doc__.splitlines()[0], argv, quick_help="on CUDA, M = N = K = 4096 only")


if __name__ == "__main__":
    main()
