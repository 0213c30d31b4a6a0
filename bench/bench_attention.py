"""Attention: fastlayers against torch's scaled_dot_product_attention, forward and backward.

On CPU rows compare with torch's default SDPA (its flash kernel) and, as a second
baseline, torch's unfused math path (SDPBackend.MATH). On CUDA (bfloat16, H = 16,
B * L = 16k tokens) they compare with torch's flash backend (SDPBackend.FLASH_ATTENTION,
forced) and its cuDNN backend (SDPBackend.CUDNN_ATTENTION, where this torch and GPU have
it). Rates are FLOP/s counting 4 * B * H * Lq * Lk * D per forward (half that when causal)
and 2.5x that per backward.

    python bench/bench_attention.py [--device cpu] [--quick] [--json PATH]
"""

import os
import sys

if not __package__:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.nn.attention import SDPBackend, sdpa_kernel  # noqa: E402

import fastlayers  # noqa: E402
from bench import common  # noqa: E402

MODES = ("forward", "backward")


def cases(device: str, quick: bool):
    """(B, H, L, D, causal, dtype) on `device`."""
    if device == "cpu":
        return [(1, 8, 1024, 64, False, torch.float32), (1, 8, 1024, 64, True, torch.float32)]
    tokens = 16384
    lengths = (4096,) if quick else (1024, 4096, 16384)
    dims = (64, 128)
    return [(tokens // n, 16, n, d, c, torch.bfloat16) for n in lengths for d in dims for c in (False, True)]


# Baselines per device: (name, SDPA backend forced, or None for torch's default choice).
BASELINES = {
    "cpu": (("torch", None), ("math", SDPBackend.MATH)),
    "cuda": (("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION)),
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


def _timed(mode, fn, q, k, v, causal, grad):
    if mode == "forward":

        def forward():
            with torch.no_grad():
                return fn(q, k, v, causal)

        return forward
    leaves = [t.detach().requires_grad_() for t in (q, k, v)]
    out = fn(*leaves, causal)
    return lambda: torch.autograd.grad(out, leaves, grad, retain_graph=True)


def run(device: str, quick: bool = False):
    torch.manual_seed(0)
    was_strict = fastlayers.is_strict()
    fastlayers.set_strict(True)
    rows = []
    try:
        for b, h, length, d, causal, dtype in cases(device, quick):
            q, k, v = (torch.randn(b, h, length, d, device=device, dtype=dtype) for _ in range(3))
            fns = {"fastlayers": _fl}
            for name, backend in BASELINES[device]:
                fn = _baseline(backend)
                try:
                    with torch.no_grad():
                        fn(q[:1, :1, :128], k[:1, :1, :128], v[:1, :1, :128], causal)
                except RuntimeError as err:  # this backend does not take these inputs here
                    print(f"bench_attention: {name} unavailable: {str(err).splitlines()[0]}", file=sys.stderr)
                    continue
                fns[name] = fn
            first = next(n for n in fns if n != "fastlayers")
            with torch.no_grad():
                tol = AGREE[dtype]
                torch.testing.assert_close(_fl(q, k, v, causal), fns[first](q, k, v, causal), rtol=tol, atol=tol)
            grad = torch.randn_like(q)
            flops = 4 * b * h * length * length * d * (0.5 if causal else 1.0)
            config = f"B{b} H{h} L{length} D{d}" + (" causal" if causal else "")
            for mode in MODES:
                ms = {
                    name: common.time_fn(_timed(mode, fn, q, k, v, causal, grad), device) * 1e3
                    for name, fn in fns.items()
                }
                work = flops * (1.0 if mode == "forward" else 2.5)
                for baseline in (n for n in fns if n != "fastlayers"):
                    rows.append(
                        common.Result(
                            op="sdpa" if baseline == first else f"sdpa vs {baseline}",
                            mode=mode,
                            config=config,
                            dtype=str(dtype).removeprefix("torch."),
                            layout="BHLD",
                            fl_ms=ms["fastlayers"],
                            torch_ms=ms[baseline],
                            work=work,
                            unit="GFLOP/s" if device == "cpu" else "TFLOP/s",
                        )
                    )
                print(
                    f"{mode:8s} {config}: " + ", ".join(f"{n} {t:.4g} ms" for n, t in ms.items()),
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        fastlayers.set_strict(was_strict)
    return rows


def main(argv=None):
    common.main(run, __doc__.splitlines()[0], argv, quick_help="on CUDA, L = 4096 only")


if __name__ == "__main__":
    main()
