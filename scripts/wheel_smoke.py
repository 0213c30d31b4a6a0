"""Smoke test of an installed fastlayers wheel: `python -I scripts/wheel_smoke.py WHEEL`.

Run by `make ci-wheel` in a venv holding only torch and the wheel, from a temporary folder,
so the package comes from site-packages and nothing of the source tree is importable.
Checks what the wheel holds (no test-only sources, emulator or tests), that its version
names the installed torch, then one op of each kind against torch on the CPU, forward and
backward, in strict mode (a fallback to torch raises). Exits non-zero on any failure.
"""

import importlib.metadata
import os
import sys
import sysconfig
import zipfile

# Paths a wheel must not contain: sources, the SIMT emulator, tests, benchmarks.
FORBIDDEN = ("csrc/", "emu", "tests/", "bench/", "scripts/")
FORBIDDEN_SUFFIXES = (".cpp", ".cu", ".cuh", ".h", ".o")


def check_wheel(path):
    names = zipfile.ZipFile(path).namelist()
    print(f"{os.path.basename(path)}: {os.path.getsize(path) / 2**20:.1f} MiB, {len(names)} files")
    bad = [n for n in names if any(f in n for f in FORBIDDEN) or n.endswith(FORBIDDEN_SUFFIXES)]
    assert not bad, f"test-only or source files in the wheel: {bad}"
    assert any(n.startswith("fastlayers/_C.") and n.endswith(".so") for n in names), "no fastlayers/_C*.so"
    assert "fastlayers/_build_info.py" in names, "no fastlayers/_build_info.py"


def check_install():
    import torch

    import fastlayers
    from fastlayers import _build_info
    from fastlayers._loader import local_tag

    site = sysconfig.get_paths()["platlib"]
    assert fastlayers.__file__.startswith(site), f"fastlayers imported from {fastlayers.__file__}, not {site}"
    assert not any(os.path.isdir(os.path.join(p, "csrc")) for p in sys.path if p), f"a source tree on {sys.path}"
    dist = importlib.metadata.version("fastlayers")
    tag = local_tag(torch.__version__, torch.version.cuda, _build_info.with_cuda)
    assert dist == fastlayers.__version__ == f"{_build_info.version.split('+')[0]}+{tag}", (
        dist,
        fastlayers.__version__,
        tag,
    )
    print(f"fastlayers {dist} from {os.path.dirname(fastlayers.__file__)}, torch {torch.__version__}")
    print(f"build info: {fastlayers.build_info()}")


def _close(name, ours, ref, tol=1e-4):
    import torch

    ours, ref = (t.detach().double() for t in (ours, ref))
    err = (ours - ref).abs().max().item()
    assert torch.allclose(ours, ref, rtol=tol, atol=tol), f"{name}: max error {err:.3g}"
    return err


def _grads(out, inputs, grad):
    import torch

    return torch.autograd.grad(out, inputs, grad)


def check_ops():
    import torch
    import torch.nn.functional as F

    import fastlayers
    import fastlayers.functional as FF
    from fastlayers.ops.positional_encoding import sinusoidal_table

    fastlayers.set_strict(True)
    torch.manual_seed(0)

    def leaf(*shape):
        return torch.randn(*shape).requires_grad_()

    def both(name, fn_ours, fn_ref, inputs):
        ours, ref = fn_ours(*inputs), fn_ref(*inputs)
        errs = [_close(f"{name} forward", ours, ref)]
        grad = torch.randn_like(ref)
        for a, b in zip(_grads(ours, inputs, grad), _grads(ref, inputs, grad), strict=True):
            errs.append(_close(f"{name} backward", a, b))
        print(f"  {name:<30} forward and backward match torch (max error {max(errs):.2g})")

    print("ops on cpu, strict:")
    both(
        "conv2d",
        lambda x, w, b: FF.conv2d(x, w, b, stride=2, padding=1),
        lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=1),
        [leaf(2, 3, 17, 19), leaf(8, 3, 3, 3), leaf(8)],
    )
    both(
        "max_pool2d",
        lambda x: FF.max_pool2d(x, 3, 2, 1),
        lambda x: F.max_pool2d(x, 3, 2, 1),
        [leaf(2, 4, 13, 15)],
    )
    both(
        "scaled_dot_product_attention",
        lambda q, k, v: FF.scaled_dot_product_attention(q, k, v, is_causal=True),
        lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
        [leaf(2, 4, 37, 64), leaf(2, 4, 37, 64), leaf(2, 4, 37, 64)],
    )
    both("softmax", lambda x: FF.softmax(x, -1), lambda x: F.softmax(x, -1), [leaf(8, 1000)])
    pe = fastlayers.nn.PositionalEncoding(32)
    both("positional encoding", pe, lambda x: x + sinusoidal_table(21, 32)[:, None, :], [leaf(21, 3, 32)])

    a = torch.randint(-128, 128, (37, 129), dtype=torch.int8)
    b = torch.randint(-128, 128, (70, 129), dtype=torch.int8)
    assert torch.equal(fastlayers.quant.int8_mm(a, b), (a.long() @ b.long().T).int()), "int8_mm differs"
    lin = torch.nn.Linear(129, 70)
    q = fastlayers.nn.Int8Linear.from_float(lin)
    x = leaf(37, 129)
    out, ref = q(x), lin(x)
    sqnr = fastlayers.quant.sqnr_db(ref, out)
    assert sqnr >= 30, f"Int8Linear SQNR {sqnr:.1f} dB < 30"
    grad = torch.randn_like(ref)
    (gx,) = _grads(out, [x], grad)
    _close("Int8Linear backward", gx, grad @ q.dequantized_weight(), tol=1e-5)
    print(f"  {'int8_mm / Int8Linear':<30} int8_mm exact, Int8Linear SQNR {sqnr:.1f} dB, backward matches")

    ref_rnn = torch.nn.RNN(5, 12, num_layers=2, bidirectional=True)
    ours_rnn = fastlayers.nn.RNN(5, 12, num_layers=2, bidirectional=True)
    ours_rnn.load_state_dict(ref_rnn.state_dict())
    both("RNN", lambda x: ours_rnn(x)[0], lambda x: ref_rnn(x)[0], [leaf(7, 3, 5)])


def main(argv):
    if len(argv) != 2:
        raise SystemExit(__doc__)
    check_wheel(argv[1])
    check_install()
    check_ops()
    print("wheel smoke test passed")


if __name__ == "__main__":
    main(sys.argv)
