"""RNN: fastlayers.nn.RNN against torch.nn.RNN (its own CPU kernels on CPU, cuDNN on GPU).

Shapes: one tanh layer, sequence 128 (CPU) or 256 (GPU), hidden 256 on CPU and 256, 512,
1024 on GPU, batch 1, 8 and 64. Modes: forward (no grad) and full (forward + backward of
every parameter and the input). Work: 2 T B H (I + H) FLOPs for the forward (the input
projection and the recurrence), twice that for the backward.

    python bench/bench_rnn.py [--device cpu|cuda] [--quick] [--json PATH]
"""

import os
import sys

if not __package__:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

import fastlayers  # noqa: E402
from bench import common  # noqa: E402


def cases(device: str, quick: bool):
    """(seq, batch, input, hidden, dtype) on `device`."""
    if device == "cpu":
        batches = (1, 8) if quick else (1, 8, 64)
        return [(128, b, 256, 256, torch.float32) for b in batches]
    hidden = (256,) if quick else (256, 512, 1024)
    dtypes = (torch.float16,) if quick else (torch.float16, torch.float32)
    return [(256, b, h, h, dt) for dt in dtypes for h in hidden for b in (1, 8, 64)]


def bench_case(device, seq, batch, isize, hidden, dtype):
    torch.manual_seed(0)
    ref = torch.nn.RNN(isize, hidden, device=device, dtype=dtype)
    ours = fastlayers.nn.RNN.from_torch(ref)
    x = torch.randn(seq, batch, isize, device=device, dtype=dtype)
    with torch.no_grad():
        torch.testing.assert_close(ours(x)[0], ref(x)[0], rtol=2e-2, atol=2e-2)
    flops = 2.0 * seq * batch * hidden * (isize + hidden)
    config = f"T{seq} B{batch} I{isize} H{hidden}"
    dt = str(dtype).removeprefix("torch.")
    unit = "GFLOP/s" if device == "cpu" else "TFLOP/s"
    rows = []
    for mode in ("forward", "full"):

        def make(module, mode=mode):
            if mode == "forward":

                def fwd():
                    with torch.no_grad():
                        return module(x)

                return fwd
            xl = x.detach().requires_grad_()
            params = list(module.parameters())

            def full():
                out, hn = module(xl)
                return torch.autograd.grad(out.sum() + hn.sum(), [xl, *params])

            return full

        ms = {n: common.time_fn(make(m), device) * 1e3 for n, m in (("fastlayers", ours), ("torch", ref))}
        work = flops * (1 if mode == "forward" else 3)
        rows.append(common.Result("rnn", mode, config, dt, "seq-major", ms["fastlayers"], ms["torch"], work, unit))
        print(
            f"{mode:8s} {config} {dt}: fastlayers {ms['fastlayers']:.4g} ms, torch {ms['torch']:.4g} ms",
            file=sys.stderr,
            flush=True,
        )
    return rows


def run(device: str, quick: bool = False):
    was_strict = fastlayers.is_strict()
    fastlayers.set_strict(True)  # a silent fallback would time torch against itself
    try:
        return [row for c in cases(device, quick) for row in bench_case(device, *c)]
    finally:
        fastlayers.set_strict(was_strict)


def main(argv=None):
    common.main(run, __doc__.splitlines()[0], argv, quick_help="batch 1 and 8 only (CPU), hidden 256 (GPU)")


if __name__ == "__main__":
    main()
