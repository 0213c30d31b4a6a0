"""Int8 GEMM: fastlayers against torch, side by side.

int8_mm against torch._int_mm (int8 x int8 -> int32; on CUDA cuBLASLt), counting 2 M N K
integer ops; Int8Linear (per-token quantisation + int8 GEMM + fused dequantisation and
bias) against nn.Linear in float32 (CPU) or bfloat16 (CUDA), counting 2 M N K as well.
Shapes: CPU M = 512, K = N = 4096; CUDA M = N = K in {4096, 8192} (--quick: 4096).

    python bench/bench_int8.py [--device cpu] [--quick] [--json PATH]
"""

import os
import sys

if not __package__:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

import fastlayers  # noqa: E402
import fastlayers.quant as Q  # noqa: E402
from bench import common  # noqa: E402


def cases(device: str, quick: bool):
    """(M, N, K) on `device`."""
    if device == "cpu":
        return [(512, 4096, 4096)]
    return [(4096, 4096, 4096)] if quick else [(4096, 4096, 4096), (8192, 8192, 8192)]


def run(device: str, quick: bool = False):
    torch.manual_seed(0)
    rows = []
    unit = "GOPS" if device == "cpu" else "TOPS"
    for m, n, k in cases(device, quick):
        a = torch.randint(-128, 128, (m, k), dtype=torch.int8, device=device)
        b = torch.randint(-128, 128, (n, k), dtype=torch.int8, device=device)
        bt = b.T  # torch._int_mm takes [K, N]: the same weight as a column-major view
        assert torch.equal(Q.int8_mm(a, b), torch._int_mm(a, bt))
        ms_fl = common.time_fn(lambda a=a, b=b: Q.int8_mm(a, b), device) * 1e3
        ms_t = common.time_fn(lambda a=a, bt=bt: torch._int_mm(a, bt), device) * 1e3
        config = f"M{m} N{n} K{k}"
        rows.append(common.Result("int8_mm", "forward", config, "int8", "NT", ms_fl, ms_t, 2.0 * m * n * k, unit))
        print(f"int8_mm {config}: fastlayers {ms_fl:.4g} ms, torch._int_mm {ms_t:.4g} ms", file=sys.stderr)
        if device == "cuda" and m != 4096:
            continue
        dtype = torch.float32 if device == "cpu" else torch.bfloat16
        lin = torch.nn.Linear(k, n, device=device, dtype=dtype)
        qlin = fastlayers.nn.Int8Linear.from_float(lin)
        x = torch.randn(m, k, device=device, dtype=dtype)
        with torch.no_grad():
            err = Q.sqnr_db(lin(x), qlin(x))
            ms_fl = common.time_fn(lambda f=qlin, x=x: f(x), device) * 1e3
            ms_t = common.time_fn(lambda f=lin, x=x: f(x), device) * 1e3
        dt = str(dtype).removeprefix("torch.")
        rows.append(
            common.Result(
                "Int8Linear vs Linear", "forward", config, dt, "row-major", ms_fl, ms_t, 2.0 * m * n * k, unit
            )
        )
        print(
            f"Int8Linear {config}: fastlayers {ms_fl:.4g} ms, nn.Linear {ms_t:.4g} ms (SQNR {err:.1f} dB)",
            file=sys.stderr,
        )
    return rows


def main(argv=None):
    common.main(run, __doc__.splitlines()[0], argv, quick_help="on CUDA, M = N = K = 4096 only")


if __name__ == "__main__":
    main()
