"""conv2d: fastlayers against torch.nn.functional.conv2d (oneDNN on CPU, cuDNN on GPU).

Shapes: the 3x3 and 1x1 convolutions of ResNet-50's four stages (batch 8 on CPU, 32 on
GPU) and MobileNet's depthwise 3x3 convolutions, NCHW and channels_last. Modes: forward,
backward (both gradients of a graph built once) and full (forward + backward). Work per pass:
2 N K P Q C R S / groups FLOPs; backward counts both gradients (twice the forward), full
three times. On GPU each gradient is also timed on its own (grad_input, grad_weight, rows of
the backward mode), in bfloat16, plus float32 forwards of two layers (the SIMT path; torch
may use TF32 there). torch.compile is no alternative here (it calls cuDNN too). The roofline
is a large matrix multiply in the rows' dtype, measured at start.

    python bench/bench_conv.py [--device cpu|cuda] [--quick] [--mode M,..] [--json PATH] [--plot PATH]
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
from fastlayers.ops import conv2d as cv  # noqa: E402

OP = "conv2d"
MODES = ("forward", "backward", "full")
# (name, C, K, H, kernel, stride, groups); H = W.
RESNET = [
    ("res2 3x3", 64, 64, 56, 3, 1, 1),
    ("res2 1x1", 256, 64, 56, 1, 1, 1),
    ("res3 3x3", 128, 128, 28, 3, 1, 1),
    ("res3 1x1", 128, 512, 28, 1, 1, 1),
    ("res4 3x3", 256, 256, 14, 3, 1, 1),
    ("res4 1x1", 1024, 256, 14, 1, 1, 1),
    ("res5 3x3", 512, 512, 7, 3, 1, 1),
    ("res5 1x1", 512, 2048, 7, 1, 1, 1),
]
DEPTHWISE = [
    ("mbv2 dw 32@112", 32, 32, 112, 3, 1, 32),
    ("mbv2 dw 96@112 s2", 96, 96, 112, 3, 2, 96),
    ("mbv2 dw 144@56", 144, 144, 56, 3, 1, 144),
    ("mbv2 dw 384@14", 384, 384, 14, 3, 1, 384),
    ("mbv2 dw 960@7", 960, 960, 7, 3, 1, 960),
]
LAYOUTS = {"NCHW": torch.contiguous_format, "channels_last": torch.channels_last}
# Rows per mode on GPU: the targets are per gradient there, each its own implicit GEMM.
CUDA_PASSES = {"forward": ("forward",), "backward": ("grad_input", "grad_weight", "backward"), "full": ("full",)}
WORK = {"forward": 1, "grad_input": 1, "grad_weight": 1, "backward": 2, "full": 3}  # times the forward's FLOPs


class Case(NamedTuple):
    layer: tuple  # an entry of RESNET or DEPTHWISE
    batch: int
    dtype: torch.dtype
    layout: str
    modes: tuple[str, ...]  # the modes this case is timed in, when asked for

    @property
    def label(self) -> str:
        return f"{self.layer[0]} N{self.batch} {common.dtype_name(self.dtype)} {self.layout}"


def cases(device: str, quick: bool) -> list[Case]:
    """The layers benchmarked on `device`, each in its layouts."""
    if device == "cpu":
        layers = [RESNET[0], DEPTHWISE[2]] if quick else RESNET + DEPTHWISE
        return [Case(layer, 8, torch.float32, layout, MODES) for layer in layers for layout in LAYOUTS]
    if quick:
        layers = (RESNET[0], RESNET[1], DEPTHWISE[2])
        return [Case(layer, 32, torch.bfloat16, "channels_last", MODES) for layer in layers]
    out = [Case(layer, 32, torch.bfloat16, layout, MODES) for layer in RESNET + DEPTHWISE for layout in LAYOUTS]
    out += [Case(layer, 32, torch.float32, "channels_last", ("forward",)) for layer in RESNET[:2]]
    return out


def roofline(ceilings: common.Ceilings, dtype) -> dict[str, float]:
    return ceilings.compute_roofline(dtype, common.compute_unit(ceilings.device))


def bench_case(device, case: Case, modes, roofline, progress) -> list[common.Result]:
    name, c, k, h, r, stride, groups = case.layer
    pad = r // 2
    x = torch.randn(case.batch, c, h, h, device=device, dtype=case.dtype)
    x = x.contiguous(memory_format=LAYOUTS[case.layout])
    w = torch.randn(k, c // groups, r, r, device=device, dtype=case.dtype) / (c // groups * r * r) ** 0.5

    def ours(x, w):
        return cv.conv2d(x, w, None, stride, pad, 1, groups)

    def theirs(x, w):
        return F.conv2d(x, w, None, stride, pad, 1, groups)

    with torch.no_grad():
        got, want = ours(x, w), theirs(x, w)
    torch.testing.assert_close(got, want, rtol=2e-2, atol=2e-2)
    grad_out = torch.randn_like(want)
    p = want.shape[-1]
    flops = 2.0 * case.batch * k * p * p * (c // groups) * r * r
    config = f"{name} N{case.batch}"
    dt = common.dtype_name(case.dtype)
    unit = common.compute_unit(device)
    cuda = torch.device(device).type == "cuda"
    rows = []
    for mode in case.modes:
        if not common.wants(mode, modes):
            continue
        for timed in CUDA_PASSES[mode] if cuda else (mode,):
            passes = [common.pass_fn(timed, f, (x, w), grad_out) for f in (ours, theirs)]
            fl_s, torch_s = common.time_fns(passes, device)
            fl_ms, torch_ms = fl_s * 1e3, torch_s * 1e3
            row = common.Result(
                OP, timed, config, dt, case.layout, fl_ms, torch_ms, flops * WORK[timed], unit, roofline
            )
            progress.row(row)
            rows.append(row)
    return rows


def run(device: str, quick: bool = False, *, modes=None, ceilings=None, progress=None, compiled=True):
    """All rows for `device` in `modes` (default: all). `ceilings` (a common.Ceilings) is
    measured here when not given; `compiled` is accepted for a uniform call and unused."""
    ceilings = ceilings or common.Ceilings(device)
    progress = progress or common.Progress()
    torch.manual_seed(0)
    was_strict = fastlayers.is_strict()
    fastlayers.set_strict(True)  # a silent fallback would time torch against itself
    try:
        return [
            row
            for case in progress.over(OP, cases(device, quick))
            for row in bench_case(device, case, modes, roofline(ceilings, case.dtype), progress)
        ]
    finally:
        fastlayers.set_strict(was_strict)


def main(argv=None):
    common.main(run, __doc__.splitlines()[0], argv, quick_help="fewer layers")


if __name__ == "__main__":
    main()
