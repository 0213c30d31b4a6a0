"""Attention: fastlayers against torch's scaled_dot_product_attention, forward, backward, full.

On CPU rows compare with torch's default SDPA (its flash kernel) and, as a second
baseline, torch's unfused math path (SDPBackend.MATH). On CUDA (bfloat16, H = 16,
B * L = 16k tokens) they compare with torch's flash backend (SDPBackend.FLASH_ATTENTION,
forced), its cuDNN backend (SDPBackend.CUDNN_ATTENTION, where this torch and GPU have it) and
the math path written out (QK^T, softmax, PV) compiled by torch.compile (with --quick for
the first shape only, to bound the compile time). Rates are FLOP/s counting
4 * B * H * Lq * Lk * D per forward (half that when causal), 2.5x that per backward and 3.5x
per full pass; the roofline is a large matrix multiply in the same dtype.

    python bench/bench_attention.py [--device cpu|cuda] [--quick] [--mode M,..] [--json PATH] [--plot PATH]
"""

import os
import sys
from typing import NamedTuple

if not __package__:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.nn.attention import SDPBackend, sdpa_kernel  # noqa: E402

import fastlayers  # noqa: E402
from bench import common  # noqa: E402

OP = "attention"
MODES = ("forward", "backward", "full")
WORK = {"forward": 1.0, "backward": 2.5, "full": 3.5}  # times the forward's FLOPs


class Case(NamedTuple):
    batch: int
    heads: int
    length: int
    head_dim: int
    causal: bool
    dtype: torch.dtype

    @property
    def config(self) -> str:
        return f"B{self.batch} H{self.heads} L{self.length} D{self.head_dim}" + (" causal" if self.causal else "")

    @property
    def label(self) -> str:
        return f"{self.config} {common.dtype_name(self.dtype)}"


def cases(device: str, quick: bool) -> list[Case]:
    """The attention shapes benchmarked on `device`."""
    if device == "cpu":
        return [Case(1, 8, 1024, 64, causal, torch.float32) for causal in (False, True)]
    tokens = 16384
    lengths = (4096,) if quick else (1024, 4096, 16384)
    dims = (64, 128)
    return [Case(tokens // n, 16, n, d, c, torch.bfloat16) for n in lengths for d in dims for c in (False, True)]


def roofline(ceilings: common.Ceilings, dtype) -> dict[str, float]:
    return ceilings.compute_roofline(dtype, common.compute_unit(ceilings.device))


# Baselines per device: (name, SDPA backend forced, or None for torch's default choice).
BASELINES = {
    "cpu": (("torch", None), ("torch math", SDPBackend.MATH)),
    "cuda": (("torch flash", SDPBackend.FLASH_ATTENTION), ("torch cudnn", SDPBackend.CUDNN_ATTENTION)),
}
# Agreement demanded before timing: fastlayers against the first baseline.
AGREE = {torch.float32: 1e-4, torch.bfloat16: 3e-2, torch.float16: 5e-3}


def _fl(q, k, v, causal):
    return fastlayers.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)


def _baseline(backend):
    def fn(q, k, v, causal):
        if backend is None:
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal)

    return fn


def _math(q, k, v, causal):
    """Attention as a user writes it without SDPA: what torch.compile is given to fuse."""
    scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
    if causal:
        lq, lk = scores.shape[-2:]
        mask = torch.ones(lq, lk, dtype=torch.bool, device=q.device).triu(1)
        scores = scores.masked_fill(mask, float("-inf"))
    return torch.softmax(scores.float(), dim=-1).to(q.dtype) @ v


def _usable(name, fn, q, k, v, causal) -> bool:
    """Whether an SDPA backend takes these inputs here (cuDNN needs a recent GPU and build)."""
    try:
        with torch.no_grad():
            fn(q[:1, :1, :128], k[:1, :1, :128], v[:1, :1, :128], causal)
    except RuntimeError as err:
        print(f"bench_attention: {name} unavailable: {str(err).splitlines()[0]}", file=sys.stderr)
        return False
    return True


def bench_case(device, case: Case, modes, roofline, compile_baseline: bool, progress) -> list[common.Result]:
    b, h, length, d, causal, dtype = case
    q, k, v = (torch.randn(b, h, length, d, device=device, dtype=dtype) for _ in range(3))
    baselines = {}
    for name, backend in BASELINES[torch.device(device).type]:
        fn = _baseline(backend)
        if _usable(name, fn, q, k, v, causal):
            baselines[name] = fn
    first = next(iter(baselines))
    with torch.no_grad():
        tol = AGREE[dtype]
        torch.testing.assert_close(_fl(q, k, v, causal), baselines[first](q, k, v, causal), rtol=tol, atol=tol)
    compiled_math = common.compiled(_math) if compile_baseline else None
    grad = torch.randn_like(q)
    flops = 4 * b * h * length * length * d * (0.5 if causal else 1.0)
    dt = common.dtype_name(dtype)
    unit = common.compute_unit(device)
    rows = []
    for mode in MODES:
        if not common.wants(mode, modes):
            continue

        def timed(fn, mode=mode):
            return common.pass_fn(mode, lambda q, k, v: fn(q, k, v, causal), (q, k, v), grad)

        fl_s, *base_s = common.time_fns([timed(_fl)] + [timed(fn) for fn in baselines.values()], device)
        fl_ms = fl_s * 1e3
        times = [(name, t * 1e3, "") for name, t in zip(baselines, base_s, strict=True)]
        if compiled_math is not None:
            times.append(("torch.compile math", *common.time_baseline(lambda: timed(compiled_math), device)))
        for name, ms, note in times:
            row = common.Result(
                "sdpa", mode, case.config, dt, "BHLD", fl_ms, ms, flops * WORK[mode], unit, roofline, name, note
            )
            progress.row(row)
            rows.append(row)
    return rows


def run(device: str, quick: bool = False, *, modes=None, ceilings=None, progress=None, compiled=True):
    """All rows for `device` in `modes` (default: all). `ceilings` (a common.Ceilings) is
    measured here when not given; `compiled` adds the compiled math baseline on CUDA."""
    ceilings = ceilings or common.Ceilings(device)
    progress = progress or common.Progress()
    torch.manual_seed(0)
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
    common.main(run, __doc__.splitlines()[0], argv, quick_help="on CUDA, L = 4096 only")


if __name__ == "__main__":
    main()
