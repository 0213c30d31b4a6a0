"""conv2d: fastlayers against torch.nn.functional.conv2d (oneDNN on CPU, cuDNN on GPU).

Shapes: the 3x3 and 1x1 convolutions of ResNet-50's four stages (batch 8 on CPU, 32 on
GPU) and MobileNet's depthwise 3x3 convolutions, NCHW and channels_last. Work per pass:
2 N K P Q C R S / groups FLOPs; backward counts both gradients (twice the forward). On GPU
each gradient is timed on its own (grad_input, grad_weight), in bfloat16, plus float32
forwards of two layers (the SIMT path; torch may use TF32 there). The roofline is a large
matrix multiply in the same dtype, measured at start.

    python bench/bench_conv.py [--device cpu|cuda] [--quick] [--json PATH]
"""

import os
import sys

if not __package__:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import fastlayers  # noqa: E402
from bench import common  # noqa: E402
from fastlayers.ops import conv2d as cv  # noqa: E402

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


def cases(device: str, quick: bool):
    """(layer, batch, dtype, layouts, modes) on `device`."""
    if device == "cpu":
        layers = [RESNET[0], RESNET[1], DEPTHWISE[0], DEPTHWISE[2]] if quick else RESNET + DEPTHWISE
        out = []
        for layer in layers:
            modes = ("forward",) if quick or layer[0].endswith("1x1") else ("forward", "backward")
            out.append((layer, 8, torch.float32, ("NCHW", "channels_last"), modes))
        return out
    # The targets are per gradient on GPU: each is its own implicit GEMM there.
    modes = ("forward", "grad_input", "grad_weight")
    if quick:
        layers = (RESNET[0], RESNET[1], DEPTHWISE[2])
        return [(layer, 32, torch.bfloat16, ("channels_last",), modes) for layer in layers]
    out = [(layer, 32, torch.bfloat16, ("channels_last", "NCHW"), modes) for layer in RESNET + DEPTHWISE]
    out += [(layer, 32, torch.float32, ("channels_last",), ("forward",)) for layer in RESNET[:2]]
    return out


def _timed(mode, conv, x, w, grad_out):
    if mode == "forward":

        def forward():
            with torch.no_grad():
                return conv(x, w)

        return forward
    xl, wl = x.detach().requires_grad_(), w.detach().requires_grad_()
    out = conv(xl, wl)
    wrt = {"backward": (xl, wl), "grad_input": (xl,), "grad_weight": (wl,)}[mode]
    return lambda: torch.autograd.grad(out, wrt, grad_out, retain_graph=True)


def bench_layer(device, layer, batch, dtype, layout, modes, ceiling):
    name, c, k, h, r, stride, groups = layer
    pad = r // 2
    x = torch.randn(batch, c, h, h, device=device, dtype=dtype).contiguous(memory_format=LAYOUTS[layout])
    w = torch.randn(k, c // groups, r, r, device=device, dtype=dtype) / (c // groups * r * r) ** 0.5

    def ours(x, w):
        return cv.conv2d(x, w, None, stride, pad, 1, groups)

    def theirs(x, w):
        return F.conv2d(x, w, None, stride, pad, 1, groups)

    with torch.no_grad():
        got, want = ours(x, w), theirs(x, w)
    torch.testing.assert_close(got, want, rtol=2e-2, atol=2e-2)
    grad_out = torch.randn_like(want)
    p = want.shape[-1]
    flops = 2.0 * batch * k * p * p * (c // groups) * r * r
    config = f"{name} N{batch}"
    dt = str(dtype).removeprefix("torch.")
    rows = []
    for mode in modes:
        ms = {
            n: common.time_fn(_timed(mode, f, x, w, grad_out), device) * 1e3
            for n, f in (("fastlayers", ours), ("torch", theirs))
        }
        work = flops * (2 if mode == "backward" else 1)
        unit = "GFLOP/s" if device == "cpu" else "TFLOP/s"
        rows.append(
            common.Result("conv2d", mode, config, dt, layout, ms["fastlayers"], ms["torch"], work, unit, ceiling)
        )
        print(
            f"{mode:8s} {config} {dt} {layout}: fastlayers {ms['fastlayers']:.4g} ms, torch {ms['torch']:.4g} ms",
            file=sys.stderr,
            flush=True,
        )
    return rows


def run(device: str, quick: bool = False):
    torch.manual_seed(0)
    unit = "GFLOP/s" if device == "cpu" else "TFLOP/s"
    dtype = torch.float32 if device == "cpu" else torch.bfloat16  # the roofline's dtype
    ceiling = {"matmul": common.measure_matmul_rate(device, dtype) / common.UNIT_SCALE[unit]}
    was_strict = fastlayers.is_strict()
    fastlayers.set_strict(True)  # a silent fallback would time torch against itself
    try:
        return [
            row
            for layer, batch, dt, layouts, modes in cases(device, quick)
            for layout in layouts
            for row in bench_layer(device, layer, batch, dt, layout, modes, ceiling)
        ]
    finally:
        fastlayers.set_strict(was_strict)


def main(argv=None):
    common.main(run, __doc__.splitlines()[0], argv, quick_help="fewer layers, forward only on CPU")


if __name__ == "__main__":
    main()
