"""max_pool2d: fastlayers against torch.nn.functional.max_pool2d, forward, backward and full.

Max-pooling is memory-bound, so each row reports GB/s and its fraction of two measured
ceilings: a copy into a preallocated tensor, and clone() (allocation + copy), which an op that
allocates its output pays too. Bytes moved per call: forward reads the input and writes the
values; backward reads grad_output and the int64 indices and writes grad_input; full is the
sum of the two.

    python bench/bench_maxpool.py [--device cpu|cuda] [--quick] [--json PATH]
"""

import argparse
import os
import sys

if not __package__:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import fastlayers  # noqa: E402
from bench import common  # noqa: E402

KERNEL, STRIDE, PADDING = 3, 2, 1  # the ResNet stem's pooling
MODES = ("forward", "backward", "full")
LAYOUTS = {"NCHW": torch.contiguous_format, "channels_last": torch.channels_last}


def cases(device: str, quick: bool):
    """(shape, dtype) pairs benchmarked on `device`, each in every layout."""
    if device == "cpu":
        return [((32, 64, 112, 112), torch.float32)]
    dtypes = [torch.float16] if quick else [torch.float16, torch.bfloat16, torch.float32]
    return [(shape, dtype) for dtype in dtypes for shape in ((32, 64, 112, 112), (64, 128, 112, 112))]


def _fastlayers_pool(x):
    return fastlayers.functional.max_pool2d(x, KERNEL, STRIDE, PADDING)


def _torch_pool(x):
    return F.max_pool2d(x, KERNEL, STRIDE, PADDING)


def _timed_call(mode, pool, x, grad_out):
    """The callable timed for `mode`; both implementations go through the same autograd path."""
    if mode == "forward":

        def forward():
            with torch.no_grad():
                return pool(x)

        return forward
    leaf = x.detach().requires_grad_()
    if mode == "backward":
        # The graph is built once and replayed, so only the backward (autograd's dispatch and
        # the backward kernel, which allocates grad_input) is timed.
        out = pool(leaf)
        return lambda: torch.autograd.grad(out, leaf, grad_out, retain_graph=True)
    return lambda: torch.autograd.grad(pool(leaf), leaf, grad_out)


def bench_case(device, shape, dtype, layout, roofline):
    """Rows for the three modes of one input; raises if fastlayers' values differ from torch's."""
    x = torch.randn(shape, device=device, dtype=dtype).contiguous(memory_format=LAYOUTS[layout])
    with torch.no_grad():
        expected = _torch_pool(x)
        got = _fastlayers_pool(x)
    if not torch.equal(got, expected):
        raise RuntimeError(f"max_pool2d {shape} {dtype} {layout}: fastlayers and torch values differ")
    grad_out = torch.randn_like(expected)

    in_bytes = x.numel() * x.element_size()
    out_bytes = expected.numel() * expected.element_size()
    index_bytes = expected.numel() * torch.empty((), dtype=torch.int64).element_size()
    work = {"forward": in_bytes + out_bytes, "backward": out_bytes + index_bytes + in_bytes}
    work["full"] = work["forward"] + work["backward"]

    config = "x".join(map(str, shape)) + f" k{KERNEL} s{STRIDE} p{PADDING}"
    dtype_name = str(dtype).removeprefix("torch.")
    rows = []
    for mode in MODES:
        seconds = {}
        for name, pool in (("fastlayers", _fastlayers_pool), ("torch", _torch_pool)):
            seconds[name] = common.time_fn(_timed_call(mode, pool, x, grad_out), device)
        row = common.Result(
            op="max_pool2d",
            mode=mode,
            config=config,
            dtype=dtype_name,
            layout=layout,
            fl_ms=seconds["fastlayers"] * 1e3,
            torch_ms=seconds["torch"] * 1e3,
            work=work[mode],
            roofline=roofline,
        )
        print(
            f"{mode:8s} {config} {dtype_name} {layout}: fastlayers {row.fl_ms:.4g} ms, torch {row.torch_ms:.4g} ms",
            file=sys.stderr,
            flush=True,
        )
        rows.append(row)
    return rows


def run(device: str, quick: bool = False, bandwidth=None):
    """All rows for `device` ("cpu" or "cuda"). `bandwidth` is measure_copy_bandwidth(device),
    measured here when not given."""
    if bandwidth is None:
        bandwidth = common.measure_copy_bandwidth(device)
    roofline = common.bandwidth_roofline(bandwidth)
    torch.manual_seed(0)
    was_strict = fastlayers.is_strict()
    # A silent fallback would time torch against itself.
    fastlayers.set_strict(True)
    try:
        return [
            row
            for shape, dtype in cases(device, quick)
            for layout in LAYOUTS
            for row in bench_case(device, shape, dtype, layout, roofline)
        ]
    finally:
        fastlayers.set_strict(was_strict)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="on CUDA, float16 only (CPU always runs float32 only)")
    parser.add_argument("--json", metavar="PATH", help="also write the rows and the environment to PATH")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")

    bandwidth = common.measure_copy_bandwidth(args.device)
    rows = run(args.device, args.quick, bandwidth)
    env = common.environment(args.device, bandwidth)
    print(common.summary(env))
    common.print_table(rows)
    if args.json:
        common.write_json(rows, args.json, env)


if __name__ == "__main__":
    main()
