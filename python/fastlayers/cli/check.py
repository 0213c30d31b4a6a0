"""`python -m fastlayers check`: every op against torch on every available device.

A fixed set of cases per op; prints a pass/fail table and returns non-zero on any failure.
A user runs it after installing on a new machine. Each new op adds its checks to CHECKS.
"""

import traceback

import torch
import torch.nn.functional as F

import fastlayers.functional as FF
import fastlayers.quant as Q
from fastlayers.nn.quantized import Int8Linear
from fastlayers.ops import attention as at
from fastlayers.ops import conv2d as cv
from fastlayers.ops import max_pool2d as mp
from fastlayers.ops import softmax as sm
from fastlayers.ops._common import cuda_built


def _devices():
    return ["cpu", "cuda"] if torch.cuda.is_available() and cuda_built() else ["cpu"]


def _check_max_pool2d(device, dtype, layout, kwargs, shape):
    x = torch.randn(shape, device=device).to(dtype)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    x.requires_grad_(True)
    out, idx = FF.max_pool2d(x, return_indices=True, **kwargs)
    ref, ref_idx = F.max_pool2d(x, return_indices=True, **kwargs)
    if not (torch.equal(out, ref) and torch.equal(idx, ref_idx)):
        return "forward differs"
    grad = torch.randn_like(out)
    (g,) = torch.autograd.grad(out, x, grad)
    (gr,) = torch.autograd.grad(ref, x, grad)
    tol = 1e-2 if dtype in (torch.float16, torch.bfloat16) else 1e-5
    if not torch.allclose(g.float(), gr.float(), rtol=tol, atol=tol):
        return "backward differs"
    return None


def _max_pool2d_cases(device):
    dtypes = mp.CPU_DTYPES if device == "cpu" else mp.CUDA_DTYPES
    configs = [
        ((4, 16, 17, 19), dict(kernel_size=3, stride=2, padding=1)),
        ((2, 8, 13, 13), dict(kernel_size=(2, 3), stride=(1, 2), dilation=(2, 1), ceil_mode=True)),
    ]
    for dtype in dtypes:
        for layout in ("contiguous", "channels_last"):
            for shape, kwargs in configs:
                label = f"{str(dtype).split('.')[-1]} {layout} {'x'.join(map(str, shape))} {kwargs}"
                yield label, lambda d=dtype, lay=layout, k=kwargs, s=shape: _check_max_pool2d(device, d, lay, k, s)


def _grads_differ(grads, refs, tol) -> bool:
    """Whether any gradient is off its float64 reference by more than tol, the absolute part
    scaled by the reference's magnitude (gradients of sums grow with the sizes)."""
    for a, r in zip(grads, refs, strict=True):
        if not torch.allclose(a.double(), r, rtol=tol, atol=tol * max(1.0, r.abs().max().item())):
            return True
    return False


def _check_conv2d(device, dtype, layout, shape, kwargs):
    g = torch.Generator().manual_seed(0)
    n, c, h, w, k, r = shape
    groups = kwargs.get("groups", 1)
    x = torch.randn(n, c, h, w, generator=g).to(device, dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    wt = (torch.randn(k, c // groups, r, r, generator=g) / (c // groups * r * r) ** 0.5).to(device, dtype)
    wt.requires_grad_()
    b = torch.randn(k, generator=g).to(device, dtype).requires_grad_()
    out = FF.conv2d(x, wt, b, **kwargs)
    xr, wr, br = (t.detach().double().requires_grad_() for t in (x, wt, b))
    ref = F.conv2d(xr, wr, br, **kwargs)
    tol = 3e-2 if dtype in (torch.float16, torch.bfloat16) else 1e-4
    if not torch.allclose(out.double(), ref, rtol=tol, atol=tol):
        return "forward differs"
    grad = torch.randn(out.shape, generator=g).to(device, dtype)
    grads = torch.autograd.grad(out, (x, wt, b), grad)
    refs = torch.autograd.grad(ref, (xr, wr, br), grad.double())
    if _grads_differ(grads, refs, tol):
        return "backward differs"
    return None


def _conv2d_cases(device):
    dtypes = cv.CPU_DTYPES if device == "cpu" else cv.CUDA_DTYPES
    configs = [
        ((2, 3, 17, 19, 8, 3), dict(stride=2, padding=1)),
        ((2, 16, 9, 9, 16, 3), dict(padding=1, groups=16)),
        ((2, 12, 8, 8, 24, 1), dict(groups=2)),
    ]
    for dtype in dtypes:
        for layout in ("contiguous", "channels_last"):
            for shape, kwargs in configs:
                label = f"{str(dtype).split('.')[-1]} {layout} NCHWKR={shape} {kwargs}"
                yield label, lambda d=dtype, lay=layout, s=shape, k=kwargs: _check_conv2d(device, d, lay, s, k)


def _check_attention(device, dtype, shapes, kwargs):
    (b, hq, hk, lq, lk, d) = shapes
    g = torch.Generator().manual_seed(0)
    q = torch.randn(b, hq, lq, d, generator=g).to(device, dtype).requires_grad_()
    k = torch.randn(b, hk, lk, d, generator=g).to(device, dtype).requires_grad_()
    v = torch.randn(b, hk, lk, d, generator=g).to(device, dtype).requires_grad_()
    out = FF.scaled_dot_product_attention(q, k, v, **kwargs)
    qr, kr, vr = (t.detach().double().requires_grad_() for t in (q, k, v))
    ref = F.scaled_dot_product_attention(qr, kr, vr, **kwargs)
    tol = 3e-2 if dtype in (torch.float16, torch.bfloat16) else 1e-4
    if not torch.allclose(out.double(), ref, rtol=tol, atol=tol):
        return "forward differs"
    grad = torch.randn(out.shape, generator=g).to(device, dtype)
    grads = torch.autograd.grad(out, (q, k, v), grad)
    refs = torch.autograd.grad(ref, (qr, kr, vr), grad.double())
    if not all(torch.allclose(a.double(), r, rtol=tol, atol=tol) for a, r in zip(grads, refs, strict=True)):
        return "backward differs"
    return None


def _attention_cases(device):
    dtypes = at.CPU_DTYPES if device == "cpu" else at.CUDA_DTYPES
    configs = [
        ((2, 4, 4, 37, 53, 64), dict()),
        ((1, 4, 2, 70, 70, 40), dict(is_causal=True, enable_gqa=True)),
    ]
    for dtype in dtypes:
        for shapes, kwargs in configs:
            label = f"{str(dtype).split('.')[-1]} BHqHkvLqLkD={shapes} {kwargs}"
            yield label, lambda t=dtype, s=shapes, k=kwargs: _check_attention(device, t, s, k)


def _check_softmax(device, dtype, shape, dim):
    x = (torch.randn(shape, generator=torch.Generator().manual_seed(0)) * 3).to(device, dtype).requires_grad_()
    out = FF.softmax(x, dim)
    xr = x.detach().double().requires_grad_()
    ref = F.softmax(xr, dim)
    tol = 1e-2 if dtype in (torch.float16, torch.bfloat16) else 1e-5
    if not torch.allclose(out.double(), ref, rtol=tol, atol=tol):
        return "forward differs"
    grad = torch.randn_like(out)
    (g,) = torch.autograd.grad(out, x, grad)
    (gr,) = torch.autograd.grad(ref, xr, grad.double())
    if not torch.allclose(g.double(), gr, rtol=tol, atol=tol):
        return "backward differs"
    return None


def _softmax_cases(device):
    dtypes = sm.CPU_DTYPES if device == "cpu" else sm.CUDA_DTYPES
    for dtype in dtypes:
        for shape, dim in (((8, 1000), -1), ((4, 37, 9), 1)):
            label = f"{str(dtype).split('.')[-1]} {'x'.join(map(str, shape))} dim={dim}"
            yield label, lambda t=dtype, s=shape, d=dim: _check_softmax(device, t, s, d)


def _check_int8(device, shape):
    m, n, k = shape
    g = torch.Generator().manual_seed(0)
    a = torch.randint(-128, 128, (m, k), generator=g, dtype=torch.int8).to(device)
    b = torch.randint(-128, 128, (n, k), generator=g, dtype=torch.int8).to(device)
    if not torch.equal(Q.int8_mm(a, b).cpu(), (a.cpu().long() @ b.cpu().long().T).int()):
        return "int8_mm differs from the int64 product"
    lin = torch.nn.Linear(k, n).to(device)
    x = torch.randn(m, k, generator=g).to(device)
    with torch.no_grad():
        sqnr = Q.sqnr_db(lin(x), Int8Linear.from_float(lin)(x))
    return None if sqnr >= 30 else f"Int8Linear SQNR {sqnr:.1f} dB < 30"


def _int8_cases(device):
    for shape in ((1, 33, 70), (37, 300, 129), (256, 256, 512)):
        yield f"M N K = {shape}", lambda s=shape: _check_int8(device, s)


def _check_rnn(device, dtype, kwargs, lengths):
    from torch.nn.utils.rnn import pack_padded_sequence

    from fastlayers.nn import RNN

    g = torch.Generator().manual_seed(0)
    ref = torch.nn.RNN(5, 12, dtype=torch.float64, **kwargs)
    ours = RNN(5, 12, device=device, dtype=dtype, **kwargs)
    ours.load_state_dict({k: v.to(dtype) for k, v in ref.state_dict().items()})
    x = torch.randn(7, 3, 5, generator=g, dtype=torch.float64)
    xs = x.to(device, dtype).requires_grad_()
    xr = x.clone().requires_grad_()
    if lengths:
        xs_in = pack_padded_sequence(xs, torch.tensor(lengths), enforce_sorted=False)
        xr_in = pack_padded_sequence(xr, torch.tensor(lengths), enforce_sorted=False)
    else:
        xs_in, xr_in = xs, xr
    (out, hn), (rout, rhn) = ours(xs_in), ref(xr_in)
    if lengths:
        out, rout = out.data, rout.data
    tol = 3e-2 if dtype in (torch.float16, torch.bfloat16) else 1e-4
    if not (
        torch.allclose(out.double(), rout, rtol=tol, atol=tol) and torch.allclose(hn.double(), rhn, rtol=tol, atol=tol)
    ):
        return "forward differs"
    grads = torch.autograd.grad(out.sum() + hn.sum(), [xs, *ours.parameters()])
    refs = torch.autograd.grad(rout.sum() + rhn.sum(), [xr, *ref.parameters()])
    if _grads_differ(grads, refs, tol):
        return "backward differs"
    return None


def _rnn_cases(device):
    from fastlayers.ops import rnn as R

    dtypes = R.CPU_DTYPES if device == "cpu" else R.CUDA_DTYPES
    configs = [
        (dict(), None),
        (dict(num_layers=2, bidirectional=True, nonlinearity="relu"), None),
        (dict(bidirectional=True), (7, 2, 5)),
    ]
    for dtype in dtypes:
        for kwargs, lengths in configs:
            label = f"{str(dtype).split('.')[-1]} {kwargs} lengths={lengths}"
            yield label, lambda d=dtype, k=kwargs, n=lengths: _check_rnn(device, d, k, n)


CHECKS = {
    "conv2d": _conv2d_cases,
    "RNN": _rnn_cases,
    "max_pool2d": _max_pool2d_cases,
    "int8_mm / Int8Linear": _int8_cases,
    "scaled_dot_product_attention": _attention_cases,
    "softmax": _softmax_cases,
}


def collect() -> list[tuple[str, str, str, str]]:
    """Runs every check: rows of (op, device, case, "PASS" or "FAIL (why)")."""
    torch.manual_seed(0)
    rows = []
    for op, cases in CHECKS.items():
        for device in _devices():
            for label, fn in cases(device):
                try:
                    err = fn()
                except Exception as e:  # a crash is a failure to report, not to hide
                    err = f"{type(e).__name__}: {e}".splitlines()[0]
                    traceback.print_exc()
                rows.append((op, device, label, "PASS" if err is None else f"FAIL ({err})"))
    return rows


def print_rows(rows) -> int:
    """The pass/fail table; returns the number of failures."""
    failures = sum(not r[3].startswith("PASS") for r in rows)
    w = [max(len(r[i]) for r in rows) for i in range(3)]
    print(f"{'op':<{w[0]}}  {'device':<{w[1]}}  {'case':<{w[2]}}  result")
    for r in rows:
        print(f"{r[0]:<{w[0]}}  {r[1]:<{w[1]}}  {r[2]:<{w[2]}}  {r[3]}")
    print(f"{len(rows) - failures} passed, {failures} failed")
    return failures


def run() -> int:
    return 1 if print_rows(collect()) else 0
