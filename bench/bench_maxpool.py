"""max_pool2d: fastlayers against torch.nn.functional.max_pool2d, forward, backward and full.

Max-pooling is memory-bound, so each row reports GB/s and its fraction of two measured
ceilings: a copy into a preallocated tensor, and clone() (allocation + copy), which an op that
allocates its output pays too. Bytes moved per call: forward reads the input and writes the
values; backward reads grad_output and the int64 indices and writes grad_input; full is the
sum of the two. On CUDA a second baseline is torch.compile'd F.max_pool2d (Inductor's Triton
kernels; with --quick for the first shape only, to bound the compile time).

    python bench/bench_maxpool.py [--device cpu|cuda] [--quick] [--mode M,..] [--json PATH] [--plot PATH]
"""

import os
import sys
from typing import NamedTuple

if not __package__:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import fastlayers  # noqa: E402
from bench import common  # noqa: E402

OP = "max_pool2d"
MODES = ("forward", "backward", "full")
KERNEL, STRIDE, PADDING = 3, 2, 1  # the ResNet stem's pooling
LAYOUTS = {"NCHW": torch.contiguous_format, "channels_last": torch.channels_last}


class Case(NamedTuple):
    shape: tuple[int, int, int, int]
    dtype: torch.dtype
    layout: str

    @property
    def label(self) -> str:
        return f"{'x'.join(map(str, self.shape))} {common.dtype_name(self.dtype)} {self.layout}"


def cases(device: str, quick: bool) -> list[Case]:
    """The inputs benchmarked on `device`, each shape in every layout."""
    if device == "cpu":
        pairs = [((32, 64, 112, 112), torch.float32)]
    else:
        dtypes = (torch.float16,) if quick else (torch.float16, torch.bfloat16, torch.float32)
        pairs = [(shape, dtype) for dtype in dtypes for shape in ((32, 64, 112, 112), (64, 128, 112, 112))]
    return [Case(shape, dtype, layout) for shape, dtype in pairs for layout in LAYOUTS]


def roofline(ceilings: common.Ceilings, dtype) -> dict[str, float]:
    return ceilings.memory_roofline()


def _fastlayers_pool(x):
    return fastlayers.functional.max_pool2d(x, KERNEL, STRIDE, PADDING)


def _torch_pool(x):
    return F.max_pool2d(x, KERNEL, STRIDE, PADDING)


def bench_case(device, case: Case, modes, roofline, compile_baseline: bool, progress) -> list[common.Result]:
    """Rows for the modes of one input; raises if fastlayers' values differ from torch's."""
    x = torch.randn(case.shape, device=device, dtype=case.dtype).contiguous(memory_format=LAYOUTS[case.layout])
    with torch.no_grad():
        expected = _torch_pool(x)
        got = _fastlayers_pool(x)
    if not torch.equal(got, expected):
        raise RuntimeError(f"max_pool2d {case.label}: fastlayers and torch values differ")
    grad_out = torch.randn_like(expected)

    in_bytes = x.numel() * x.element_size()
    out_bytes = expected.numel() * expected.element_size()
    index_bytes = expected.numel() * torch.empty((), dtype=torch.int64).element_size()
    work = {"forward": in_bytes + out_bytes, "backward": out_bytes + index_bytes + in_bytes}
    work["full"] = work["forward"] + work["backward"]

    compiled_pool = common.compiled(_torch_pool) if compile_baseline else None
    config = "x".join(map(str, case.shape)) + f" k{KERNEL} s{STRIDE} p{PADDING}"
    dtype_name = common.dtype_name(case.dtype)
    rows = []
    for mode in MODES:
        if not common.wants(mode, modes):
            continue
        fl_ms, torch_ms = (
            t * 1e3
            for t in common.time_fns(
                [common.pass_fn(mode, f, (x,), grad_out) for f in (_fastlayers_pool, _torch_pool)], device
            )
        )
        baselines = [("torch", torch_ms, "")]
        if compiled_pool is not None:
            c_ms, note = common.time_baseline(lambda m=mode: common.pass_fn(m, compiled_pool, (x,), grad_out), device)
            baselines.append(("torch.compile", c_ms, note))
        for baseline, ms, note in baselines:
            row = common.Result(
                op=OP,
                mode=mode,
                config=config,
                dtype=dtype_name,
                layout=case.layout,
                fl_ms=fl_ms,
                torch_ms=ms,
                work=work[mode],
                roofline=roofline,
                baseline=baseline,
                note=note,
            )
            progress.row(row)
            rows.append(row)
    return rows


def run(device: str, quick: bool = False, *, modes=None, ceilings=None, progress=None, compiled=True):
    """All rows for `device` ("cpu" or "cuda") in `modes` (default: all). `ceilings` (a
    common.Ceilings) is measured here when not given; `compiled` adds the torch.compile
    baseline on CUDA."""
    ceilings = ceilings or common.Ceilings(device)
    progress = progress or common.Progress()
    torch.manual_seed(0)
    was_strict = fastlayers.is_strict()
    # A silent fallback would time torch against itself.
    fastlayers.set_strict(True)
    rows = []
    try:
        for i, case in enumerate(progress.over(OP, cases(device, quick))):
            compile_baseline = compiled and torch.device(device).type == "cuda" and (i == 0 or not quick)
            rows += bench_case(device, case, modes, roofline(ceilings, case.dtype), compile_baseline, progress)
    finally:
        fastlayers.set_strict(was_strict)
    return rows


def main(argv=None):
    common.main(run, __doc__.splitlines()[0], argv, quick_help="on CUDA, float16 only (CPU always runs float32 only)")


if __name__ == "__main__":
    main()
