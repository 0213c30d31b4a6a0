"""RNN: fastlayers.nn.RNN against torch.nn.RNN (its own CPU kernels on CPU, cuDNN on GPU).

Shapes: one tanh layer, sequence 128 (CPU) or 256 (GPU), hidden 256 on CPU and 256, 512,
1024 on GPU, batch 1, 8 and 64; and bidirectional layers (both directions in one launch) at
batch 1 and 8 (CPU: hidden 256 float32; GPU: hidden 512 float16). Modes: forward (no
grad), backward (the gradients of every parameter and the input, of a graph built once) and
full (forward + backward). Work: 2 T B D H (I + H) FLOPs (D directions) for the forward (the
input projection and the recurrence), twice that for the backward, three times for full; the
roofline is a large matrix multiply in the same dtype. On CUDA a second baseline (one
direction) is the recurrence written as a loop over a torch.compile'd cell (one input GEMM,
then per step a fused GEMM + tanh): torch.compile of nn.RNN itself would call cuDNN again
(with --quick for the first shape only, to bound the compile time).

    python bench/bench_rnn.py [--device cpu|cuda] [--quick] [--mode M,..] [--json PATH] [--plot PATH]
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

OP = "rnn"
MODES = ("forward", "backward", "full")
WORK = {"forward": 1, "backward": 2, "full": 3}  # times the forward's FLOPs


class Case(NamedTuple):
    seq: int
    batch: int
    input_size: int
    hidden: int
    dtype: torch.dtype
    bidirectional: bool = False

    @property
    def config(self) -> str:
        return f"T{self.seq} B{self.batch} I{self.input_size} H{self.hidden}" + (" bidir" if self.bidirectional else "")

    @property
    def label(self) -> str:
        return f"{self.config} {common.dtype_name(self.dtype)}"


def cases(device: str, quick: bool) -> list[Case]:
    """The sequences benchmarked on `device`."""
    if device == "cpu":
        batches = (1, 8) if quick else (1, 8, 64)
        bidir = [] if quick else [Case(128, b, 256, 256, torch.float32, True) for b in (1, 8)]
        return [Case(128, b, 256, 256, torch.float32) for b in batches] + bidir
    hidden = (256,) if quick else (256, 512, 1024)
    dtypes = (torch.float16,) if quick else (torch.float16, torch.float32)
    bidir = [] if quick else [Case(256, b, 512, 512, torch.float16, True) for b in (1, 8)]
    return [Case(256, b, h, h, dt) for dt in dtypes for h in hidden for b in (1, 8, 64)] + bidir


def roofline(ceilings: common.Ceilings, dtype) -> dict[str, float]:
    return ceilings.compute_roofline(dtype, common.compute_unit(ceilings.device))


def _step(xw_t, h, w_hh):
    return torch.tanh(torch.addmm(xw_t, h, w_hh.T))


def compiled_cell_loop(ref: torch.nn.RNN):
    """x [T, B, I] -> outputs [T, B, H] of `ref` (one tanh layer, h0 = 0), as a loop over a
    compiled cell. The first step, tanh of the input projection alone (h0 = 0), runs eagerly:
    its h needs no gradient, which would be a second graph to compile."""
    step = common.compiled(_step)
    w_ih, w_hh, b_ih, b_hh = ref.weight_ih_l0, ref.weight_hh_l0, ref.bias_ih_l0, ref.bias_hh_l0

    def fn(x):
        xw = F.linear(x, w_ih, b_ih + b_hh)  # [T, B, H]: the input projection, one GEMM
        h = torch.tanh(xw[0])
        outs = [h]
        for t in range(1, x.shape[0]):
            h = step(xw[t], h, w_hh)
            outs.append(h)
        return torch.stack(outs)

    return fn


def bench_case(device, case: Case, modes, roofline, compile_baseline: bool, progress) -> list[common.Result]:
    seq, batch, isize, hidden, dtype, bidirectional = case
    dirs = 2 if bidirectional else 1
    torch.manual_seed(0)
    ref = torch.nn.RNN(isize, hidden, device=device, dtype=dtype, bidirectional=bidirectional)
    ours = fastlayers.nn.RNN.from_torch(ref)
    x = torch.randn(seq, batch, isize, device=device, dtype=dtype)
    with torch.no_grad():
        torch.testing.assert_close(ours(x)[0], ref(x)[0], rtol=2e-2, atol=2e-2)
    grad = torch.randn(seq, batch, dirs * hidden, device=device, dtype=dtype)
    loop = compiled_cell_loop(ref) if compile_baseline and not bidirectional else None
    flops = 2.0 * seq * batch * dirs * hidden * (isize + hidden)
    dt = common.dtype_name(dtype)
    unit = common.compute_unit(device)
    rows = []
    for mode in MODES:
        if not common.wants(mode, modes):
            continue

        def timed(module, fn=None, mode=mode):
            return common.pass_fn(mode, fn or (lambda x: module(x)[0]), (x,), grad, params=list(module.parameters()))

        fl_s, torch_s = common.time_fns([timed(ours), timed(ref)], device)
        fl_ms, times = fl_s * 1e3, [("torch", torch_s * 1e3, "")]
        if loop is not None:
            times.append(("torch.compile cell loop", *common.time_baseline(lambda: timed(ref, loop), device)))
        for name, ms, note in times:
            row = common.Result(
                OP, mode, case.config, dt, "seq-major", fl_ms, ms, flops * WORK[mode], unit, roofline, name, note
            )
            progress.row(row)
            rows.append(row)
    return rows


def run(device: str, quick: bool = False, *, modes=None, ceilings=None, progress=None, compiled=True):
    """All rows for `device` in `modes` (default: all). `ceilings` (a common.Ceilings) is
    measured here when not given; `compiled` adds the compiled cell loop baseline on CUDA."""
    ceilings = ceilings or common.Ceilings(device)
    progress = progress or common.Progress()
    was_strict = fastlayers.is_strict()
    fastlayers.set_strict(True)  # a silent fallback would time torch against itself
    rows = []
    try:
        for i, case in enumerate(progress.over(OP, cases(device, quick))):
            compile_baseline = compiled and torch.device(device).type == "cuda" and (i == 0 or not quick)
            rows += bench_case(device, case, modes, roofline(ceilings, case.dtype), compile_baseline, progress)
    finally:
        fastlayers.set_strict(was_strict)
    return rows


def main(argv=None):
    common.main(run, __doc__.splitlines()[0], argv, quick_help="batch 1 and 8 only (CPU), hidden 256 (GPU)")


if __name__ == "__main__":
    main()
