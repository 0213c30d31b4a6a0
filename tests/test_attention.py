"""scaled_dot_product_attention against torch's math SDPA in float64, from one case list."""

import math
import random
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

import emu_support
import fastlayers.functional as FF
from conftest import HAS_CUDA, HAS_EMU, device_dtype_params, torch_device
from fastlayers.ops import attention as at

DTYPES = {"cpu": at.CPU_DTYPES, "emu": at.CUDA_DTYPES, "cuda": at.CUDA_DTYPES}


@dataclass(frozen=True)
class Case:
    b: int
    hq: int
    hkv: int
    lq: int
    lk: int
    d: int
    dv: int
    causal: bool = False
    mask: str = ""  # "" | bool:<shape> | float:<shape>; shape letters b h q k, 1 for broadcast
    layout: str = "contiguous"  # contiguous | packed (q, k, v transposed views of one qkv tensor)

    def __str__(self):
        s = f"b{self.b}-h{self.hq}x{self.hkv}-l{self.lq}x{self.lk}-d{self.d}x{self.dv}"
        return s + ("-causal" if self.causal else "") + (f"-{self.mask}" if self.mask else "") + f"-{self.layout}"


CASES = [
    Case(2, 3, 3, 17, 97, 40, 40),
    Case(1, 2, 2, 97, 17, 72, 72, causal=True),
    Case(1, 2, 2, 128, 128, 64, 64, causal=True),
    Case(2, 2, 2, 1, 17, 96, 96),
    Case(1, 1, 1, 1, 1, 64, 64),
    Case(1, 2, 2, 17, 1, 128, 128),
    Case(1, 1, 1, 33, 65, 256, 256),
    Case(1, 4, 1, 17, 33, 64, 32),  # GQA, Dv != D
    Case(2, 6, 2, 31, 31, 40, 40, causal=True),
    Case(1, 1, 1, 1025, 97, 16, 16),
    Case(2, 3, 3, 17, 97, 64, 64, mask="bool:bhqk"),
    Case(2, 3, 3, 17, 97, 64, 64, mask="float:bhqk"),
    Case(2, 3, 3, 17, 33, 40, 40, mask="bool:qk"),
    Case(2, 3, 3, 17, 33, 40, 40, mask="float:1k"),
    Case(2, 3, 3, 17, 33, 40, 40, mask="bool:b1qk"),
    Case(2, 3, 3, 17, 33, 40, 40, mask="float:h1k"),
    Case(2, 4, 2, 19, 23, 64, 64, mask="bool:bh1k"),
    Case(2, 3, 3, 17, 33, 64, 64, layout="packed"),
    Case(2, 4, 4, 33, 33, 64, 64, causal=True, layout="packed"),
    Case(0, 2, 2, 17, 17, 64, 64),
]


def _mask_shape(spec, c):
    dims = {"b": c.b, "h": c.hq, "q": c.lq, "k": c.lk, "1": 1}
    return tuple(dims[x] for x in spec)


def make_inputs(c: Case, device, dtype, requires_grad=False, seed=0):
    device = torch_device(device)
    g = torch.Generator().manual_seed(seed)
    if c.layout == "packed":
        # q, k, v as transposed views of one [B, L, 3, H, E] projection (non-contiguous).
        qkv = torch.randn(c.b, c.lq, 3, c.hq, c.d, generator=g).to(device, dtype)
        q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))
        assert not q.is_contiguous() or q.numel() == 0
    else:
        q = torch.randn(c.b, c.hq, c.lq, c.d, generator=g).to(device, dtype)
        k = torch.randn(c.b, c.hkv, c.lk, c.d, generator=g).to(device, dtype)
        v = torch.randn(c.b, c.hkv, c.lk, c.dv, generator=g).to(device, dtype)
    mask = None
    if c.mask:
        kind, spec = c.mask.split(":")
        shape = _mask_shape(spec, c)
        if kind == "bool":
            mask = torch.rand(shape, generator=g) > 0.3
        else:
            mask = (torch.randn(shape, generator=g) * 2).to(dtype)
        mask = mask.to(device)
    ts = [t.detach().requires_grad_(requires_grad) for t in (q, k, v)]
    return (*ts, mask)


def reference(q, k, v, mask, causal, gqa):
    """torch's math SDPA in float64 (rows whose keys are all masked: 0, as ours)."""
    q64, k64, v64 = q.double(), k.double(), v.double()
    if gqa:
        rep = q.shape[-3] // k.shape[-3]
        k64, v64 = k64.repeat_interleave(rep, -3), v64.repeat_interleave(rep, -3)
    m = mask
    if m is not None and m.dtype != torch.bool:
        m = m.double()
    out = F.scaled_dot_product_attention(q64, k64, v64, m, is_causal=causal)
    return torch.nan_to_num(out, nan=0.0)


def _err(a, b):
    return (a.double() - b.double()).abs().max().item() if a.numel() else 0.0


@pytest.mark.parametrize("device,dtype", device_dtype_params(DTYPES))
@pytest.mark.parametrize("case", CASES, ids=str)
def test_forward_and_backward_match_reference(case, device, dtype):
    q, k, v, mask = make_inputs(case, device, dtype, requires_grad=True)
    gqa = case.hq != case.hkv
    out = FF.scaled_dot_product_attention(q, k, v, mask, is_causal=case.causal, enable_gqa=gqa)
    qr, kr, vr = (t.detach().double().requires_grad_() for t in (q, k, v))
    ref = reference(qr, kr, vr, mask, case.causal, gqa)
    assert out.shape == ref.shape and out.dtype == dtype
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(torch_device(device), dtype)
    grads = torch.autograd.grad(out, (q, k, v), grad) if out.numel() else (torch.zeros_like(q),) * 3
    refs = torch.autograd.grad(ref, (qr, kr, vr), grad.double()) if ref.numel() else grads
    if dtype == torch.float64:
        torch.testing.assert_close(out.double(), ref, rtol=1e-10, atol=1e-10)
        for g, r in zip(grads, refs, strict=True):
            torch.testing.assert_close(g.double(), r, rtol=1e-9, atol=1e-9)
        return
    # Low precision: at most twice torch's own error in this dtype, plus 1e-5 (the
    # flash-attention rule), for the output and every gradient.
    qt, kt, vt = (t.detach().requires_grad_() for t in (q, k, v))
    mt = mask
    if gqa:
        rep = case.hq // case.hkv
        kt2, vt2 = kt.repeat_interleave(rep, -3), vt.repeat_interleave(rep, -3)
    else:
        kt2, vt2 = kt, vt
    tout = torch.nan_to_num(F.scaled_dot_product_attention(qt, kt2, vt2, mt, is_causal=case.causal), nan=0.0)
    assert _err(out, ref) <= 2 * _err(tout, ref) + 1e-5
    if out.numel():
        tgrads = torch.autograd.grad(tout, (qt, kt, vt), grad)
        for g, tg, r in zip(grads, tgrads, refs, strict=True):
            assert _err(g, r) <= 2 * _err(tg, r) + 1e-5


def test_fully_masked_rows_give_zero_output_and_gradients():
    q, k, v = (torch.randn(1, 2, 5, 8, dtype=torch.float64, requires_grad=True) for _ in range(3))
    mask = torch.ones(5, 5, dtype=torch.bool)
    mask[1] = False  # query row 1 attends nothing
    out = FF.scaled_dot_product_attention(q, k, v, mask)
    torch_out = F.scaled_dot_product_attention(q, k, v, mask)
    # torch 2.14's CPU SDPA also gives 0 for such a row (its safe softmax); older versions
    # and some backends give NaN. Ours is 0 on every device.
    assert torch.equal(out[:, :, 1], torch.zeros_like(out[:, :, 1]))
    torch.testing.assert_close(out[:, :, [0, 2, 3, 4]], torch_out[:, :, [0, 2, 3, 4]])
    g = torch.zeros_like(out)
    g[:, :, 1] = 1.0
    gq, gk, gv = torch.autograd.grad(out, (q, k, v), g)
    assert not gq.isnan().any() and gq.abs().sum() == 0 and gk.abs().sum() == 0 and gv.abs().sum() == 0


def test_input_shapes_like_torch():
    """2-D, 3-D and 5-D inputs; the batch dimensions of query, key and value broadcast
    together (query's too, as torch's); GQA on 3-D; forward and gradients."""
    g = torch.Generator().manual_seed(3)
    for qs, ks, vs, ms, gqa in [
        ((7, 16), (9, 16), (9, 16), None, False),
        ((3, 7, 16), (3, 9, 16), (3, 9, 16), None, False),
        ((2, 3, 4, 7, 16), (2, 3, 4, 9, 16), (2, 3, 4, 9, 16), None, False),
        ((2, 4, 7, 16), (1, 4, 9, 16), (1, 4, 9, 16), None, False),  # key/value batch broadcast
        ((4, 7, 16), (2, 4, 9, 16), (2, 4, 9, 16), None, False),  # query gains the batch of key/value
        ((1, 3, 7, 16), (2, 1, 9, 16), (2, 3, 9, 16), (3, 1, 9), False),  # all three broadcast
        ((7, 16), (2, 3, 9, 16), (3, 9, 16), (1, 7, 9), False),
        ((6, 7, 16), (2, 9, 16), (2, 9, 16), None, True),
        ((2, 4, 7, 16), (2, 2, 9, 16), (1, 2, 9, 16), None, True),
    ]:
        q, k, v = (torch.randn(s, generator=g, dtype=torch.float64, requires_grad=True) for s in (qs, ks, vs))
        mask = None if ms is None else torch.randn(ms, generator=g, dtype=torch.float64)
        out = FF.scaled_dot_product_attention(q, k, v, mask, enable_gqa=gqa)
        ref = F.scaled_dot_product_attention(q, k, v, mask, enable_gqa=gqa)
        torch.testing.assert_close(out, ref)
        w = torch.randn(ref.shape, generator=g, dtype=torch.float64)
        grads = zip(torch.autograd.grad(out, (q, k, v), w), torch.autograd.grad(ref, (q, k, v), w), strict=True)
        for a, b in grads:
            torch.testing.assert_close(a, b)


def test_scale_argument():
    q, k, v = (torch.randn(1, 2, 5, 8, dtype=torch.float64) for _ in range(3))
    torch.testing.assert_close(
        FF.scaled_dot_product_attention(q, k, v, scale=0.3), F.scaled_dot_product_attention(q, k, v, scale=0.3)
    )


def _op_args(c: Case, dtype, dropout=0.0, seed=0, requires_grad=True):
    q, k, v, mask = make_inputs(c, "cpu", dtype, requires_grad=requires_grad, seed=seed)
    so = torch.tensor([1234, 5], dtype=torch.int64) if dropout > 0 else None
    return (q, k, v, mask, dropout, c.causal, 1.0 / math.sqrt(c.d), so)


# The CPU backward has two schedules (csrc/kernels/cpu/attention_impl.h): split passes
# below 4 (batch, key/value head) pairs, one fused pass from 4 on. Both are covered.
GRAD_CASES = [
    Case(1, 2, 2, 5, 7, 4, 3),
    Case(1, 2, 1, 6, 6, 4, 4, causal=True),
    Case(2, 1, 1, 4, 5, 3, 3, mask="float:bhqk"),
    Case(1, 2, 2, 5, 6, 4, 4, mask="bool:qk"),
    Case(2, 4, 2, 5, 6, 4, 3, causal=True),  # fused
    Case(4, 1, 1, 3, 70, 4, 4, mask="bool:bhqk"),  # fused, two key tiles
]


@pytest.mark.parametrize("dropout", [0.0, 0.4])
@pytest.mark.parametrize("case", GRAD_CASES, ids=str)
def test_gradcheck_cpu_float64(case, dropout):
    """With a fixed seed the dropout mask is a fixed function: backward must regenerate it."""
    args = _op_args(case, torch.float64, dropout)
    q, k, v, rest = args[0], args[1], args[2], args[3:]
    assert torch.autograd.gradcheck(lambda a, b, c: at._forward(a, b, c, *rest)[0], (q, k, v))


@pytest.mark.parametrize("case", GRAD_CASES + [Case(0, 2, 2, 3, 3, 4, 4)], ids=str)
def test_opcheck_cpu(case):
    torch.library.opcheck(at._forward, _op_args(case, torch.float32))
    torch.library.opcheck(at._forward, _op_args(case, torch.float32, dropout=0.2))
    q, k, v, mask, p, causal, scale, so = _op_args(case, torch.float32, requires_grad=False)
    out, lse = at._forward(q, k, v, mask, p, causal, scale, so)
    go = torch.randn_like(out)
    torch.library.opcheck(at._backward, (go, q, k, v, out, lse, mask, p, causal, scale, so))


@pytest.mark.parametrize("kwargs", [dict(), dict(is_causal=True), dict(mask="bool"), dict(mask="float")], ids=str)
def test_backward_schedules_give_the_same_bits(kwargs):
    """4 heads in one call take the fused backward; each head alone takes the split passes.
    Both sum in the same order, so the gradients are identical."""
    g = torch.Generator().manual_seed(7)
    q, k, v = (torch.randn(1, 4, 150, 40, generator=g) for _ in range(3))
    mask = None
    if kwargs.get("mask") == "bool":
        mask = torch.rand(1, 4, 150, 150, generator=g) > 0.2
    elif kwargs.get("mask") == "float":
        mask = torch.randn(1, 4, 150, 150, generator=g)
    causal = kwargs.get("is_causal", False)
    go = torch.randn(1, 4, 150, 40, generator=g)
    args = (None if mask is None else mask, 0.0, causal, 0.2, None)
    out, lse = at._forward(q, k, v, *args)
    together = at._backward(go, q, k, v, out, lse, *args)
    for h in range(4):
        sl = slice(h, h + 1)
        m = None if mask is None else mask[:, sl]
        a = (m, 0.0, causal, 0.2, None)
        alone = at._backward(go[:, sl], q[:, sl], k[:, sl], v[:, sl], out[:, sl], lse[:, sl], *a)
        for t, u in zip(together, alone, strict=True):
            assert torch.equal(t[:, sl], u)


def test_torch_compile_fullgraph_matches_eager():
    torch._dynamo.reset()

    def f(q, k, v):
        return FF.scaled_dot_product_attention(q, k, v, is_causal=True) * 2

    q, k, v = (torch.randn(2, 3, 9, 16, requires_grad=True) for _ in range(3))
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    y, yc = f(q, k, v), compiled(q, k, v)
    torch.testing.assert_close(yc, y, rtol=0, atol=0)
    g = torch.randn_like(y)
    for a, b in zip(torch.autograd.grad(yc, (q, k, v), g), torch.autograd.grad(y, (q, k, v), g), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


BAD = [
    (dict(q=(2, 3, 5, 8), k=(2, 3, 5, 6)), {}, "same embedding size"),
    (dict(q=(2, 3, 5, 8), k=(2, 3, 5, 8), v=(2, 3, 4, 8)), {}, "key and value must have the same length"),
    (dict(q=(2, 4, 5, 8), k=(2, 3, 5, 8)), dict(enable_gqa=True), "must be a multiple"),
    (dict(q=(2, 3, 5, 8)), dict(is_causal=True, attn_mask=torch.ones(5, 5, dtype=torch.bool)), "is_causal"),
    (dict(q=(2, 3, 5, 8)), dict(attn_mask=torch.ones(4, 5, dtype=torch.bool)), "does not broadcast"),
    (dict(q=(2, 3, 5, 8)), dict(attn_mask=torch.ones(4, 2, 3, 5, 5, dtype=torch.bool)), "does not broadcast"),
    (dict(q=(2, 3, 5, 8), k=(3, 3, 5, 8)), {}, "batch dimensions of query"),
]


@pytest.mark.parametrize("shapes,kwargs,message", BAD, ids=[m for _, _, m in BAD])
def test_bad_arguments_raise(shapes, kwargs, message):
    q = torch.randn(shapes["q"])
    k = torch.randn(shapes.get("k", shapes["q"]))
    v = torch.randn(shapes.get("v", shapes.get("k", shapes["q"])))
    with pytest.raises(RuntimeError, match=message):
        FF.scaled_dot_product_attention(q, k, v, **kwargs)


def test_op_rejects_bad_arguments():
    q = torch.randn(1, 2, 3, 4)
    with pytest.raises(RuntimeError, match="dropout_p must be in"):
        at._forward(q, q, q, None, 1.0, False, 1.0, torch.tensor([1, 2]))
    with pytest.raises(RuntimeError, match="needs seed_offset"):
        at._forward(q, q, q, None, 0.5, False, 1.0, None)
    with pytest.raises(RuntimeError, match="must have the same dtype"):
        at._forward(q, q.double(), q, None, 0.0, False, 1.0, None)
    with pytest.raises(RuntimeError, match="attn_mask must be bool or have the dtype of query"):
        at._forward(q, q, q, torch.ones(3, 3, dtype=torch.int32), 0.0, False, 1.0, None)


def _rows_reference(q, k, v, rows, scale):
    """float64 attention for the given query rows alone."""
    s = (q[..., rows, :].double() @ k.double().transpose(-1, -2)) * scale
    return torch.softmax(s, -1) @ v.double()


def test_long_sequence_sampled_rows():
    """Lq = Lk = 32768: a float64 score matrix would need 8 GiB; check sampled rows."""
    torch.manual_seed(0)
    L, d = 32768, 16
    q, k, v = (torch.randn(1, 1, L, d) for _ in range(3))
    out = FF.scaled_dot_product_attention(q, k, v)
    rows = sorted(random.Random(0).sample(range(L), 24)) + [L - 1]
    ref = _rows_reference(q, k, v, rows, 1 / math.sqrt(d))
    torch.testing.assert_close(out[..., rows, :].double(), ref, rtol=1e-4, atol=1e-5)


def test_query_offsets_past_2_31():
    """bfloat16 q of more than 2^31 elements (64-bit index math). GQA with one key/value head
    and Dv = 1 keeps the rest small; q's pages beyond the written ones are never allocated
    (they read as zeros)."""
    h, lq, d = 2, 2**24 + 3, 64  # 2 * (2^24 + 3) * 64 > 2^31
    assert h * lq * d > 2**31
    q = torch.empty(1, h, lq, d, dtype=torch.bfloat16)
    tail = torch.randn(1, 1, 40, d).to(torch.bfloat16)
    q[:, -1:, -40:] = tail
    k = torch.randn(1, 1, 5, d).to(torch.bfloat16)
    v = torch.randn(1, 1, 5, 1).to(torch.bfloat16)
    out = FF.scaled_dot_product_attention(q, k, v, enable_gqa=True)
    ref = _rows_reference(tail, k, v, list(range(40)), 1 / math.sqrt(d))
    torch.testing.assert_close(out[:, -1:, -40:].double(), ref, rtol=2e-2, atol=2e-2)


# ---------------------------------------------------------------------------------------
# The lower-level entry (out, lse) and the probabilities recomputed from lse.


@pytest.mark.parametrize(
    "kwargs",
    [dict(), dict(is_causal=True), dict(mask="bool"), dict(mask="float"), dict(enable_gqa=True)],
    ids=str,
)
def test_probs_from_lse_match_softmax(kwargs):
    g = torch.Generator().manual_seed(4)
    hk = 2 if kwargs.get("enable_gqa") else 4
    q = torch.randn(2, 4, 9, 8, generator=g, dtype=torch.float64)
    k = torch.randn(2, hk, 70, 8, generator=g, dtype=torch.float64)
    v = torch.randn(2, hk, 70, 5, generator=g, dtype=torch.float64)
    mask = None
    if kwargs.get("mask") == "bool":
        mask = torch.rand(9, 70, generator=g) > 0.3
        mask[3] = False  # a row with no key: weights 0
    elif kwargs.get("mask") == "float":
        mask = torch.randn(2, 1, 9, 70, generator=g, dtype=torch.float64)
    causal, gqa = kwargs.get("is_causal", False), kwargs.get("enable_gqa", False)
    out, lse, so = at.attention_with_lse(q, k, v, mask, is_causal=causal, enable_gqa=gqa)
    assert lse.shape == (2, 4, 9) and so is None
    kr = k.repeat_interleave(4 // hk, 1)
    scores = q @ kr.transpose(-1, -2) / math.sqrt(8)
    if causal:
        scores = scores.masked_fill(torch.ones(9, 70, dtype=torch.bool).tril().logical_not(), float("-inf"))
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    ref = torch.nan_to_num(torch.softmax(scores, -1), nan=0.0)
    probs = at.attention_probs(q, k, lse, mask, is_causal=causal, enable_gqa=gqa)
    torch.testing.assert_close(probs, ref)
    torch.testing.assert_close(probs @ v.repeat_interleave(4 // hk, 1), out)
    rows = torch.tensor([8, 0, 3, 3])
    sub = at.attention_probs(q, k, lse, mask, is_causal=causal, rows=rows, enable_gqa=gqa)
    torch.testing.assert_close(sub, ref[:, :, rows])


def test_probs_with_dropout_are_the_weights_the_output_used():
    g = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(1, 2, 33, 8, generator=g, dtype=torch.float64) for _ in range(3))
    out, lse, so = at.attention_with_lse(q, k, v, dropout_p=0.4)
    w = at.attention_probs(q, k, lse, dropout_p=0.4, seed_offset=so)
    torch.testing.assert_close(w @ v, out)
    assert 0.3 < (w == 0).double().mean().item() < 0.5


@pytest.mark.parametrize("device", ["cpu", pytest.param("emu", marks=pytest.mark.skipif(not HAS_EMU, reason="emu"))])
def test_probs_gradient_is_as_accurate_as_torchs_softmax(device):
    """Large scores (inputs up to +-9, scores near 80): recomputed from a float32 lse, a row of
    weights carries a common factor 1 + e (e ~ 4e-6) that the softmax gradient's cancellation
    would magnify 10-100x; the backward divides each row by its sum. float32 gradient errors
    against float64, as a ratio to torch's float32 softmax's, median over 8 seeds."""

    def grads(fn, q, k, w, dtype):
        qq, kk = (t.to(dtype).requires_grad_() for t in (q, k))
        return torch.autograd.grad(fn(qq, kk), (qq, kk), w.to(dtype))

    def ours(q, k):
        _, lse, _ = at.attention_with_lse(q, k, k)
        return at.attention_probs(q, k, lse)

    def softmax(q, k):
        return torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(8), -1)

    ratios = []
    for seed in range(8):
        g = torch.Generator().manual_seed(seed)
        q, k = (torch.rand(2, 3, 6, 8, generator=g) * 18 - 9 for _ in range(2))
        w = torch.randn(2, 3, 6, 6, generator=g, dtype=torch.float64)
        exact = grads(softmax, q, k, w, torch.float64)
        errs = [
            max((a.double() - e).abs().max().item() for a, e in zip(got, exact, strict=True))
            for got in (grads(ours, q, k, w, torch.float32), grads(softmax, q, k, w, torch.float32))
        ]
        ratios.append(errs[0] / errs[1])
    ratios.sort()
    assert (ratios[3] + ratios[4]) / 2 <= 2.0, ratios


@pytest.mark.parametrize("dropout", [0.0, 0.3])
@pytest.mark.parametrize(
    "case", [Case(1, 2, 1, 5, 6, 4, 4, causal=True), Case(2, 2, 2, 4, 5, 3, 3, mask="float:bhqk")], ids=str
)
def test_probs_gradcheck(case, dropout):
    q, k, v, mask = make_inputs(case, "cpu", torch.float64, requires_grad=True)
    so = torch.tensor([7, 1], dtype=torch.int64) if dropout else None
    scale = 1 / math.sqrt(case.d)
    rows = torch.tensor([0, 2, 2])

    def weights(a, b):
        _, lse = at._forward(a, b, v.detach(), mask, dropout, case.causal, scale, so)
        return at._probs(a, b, lse, mask, dropout, case.causal, scale, so, rows)

    assert torch.autograd.gradcheck(weights, (q, k))
    _, lse = at._forward(q.detach(), k.detach(), v.detach(), mask, dropout, case.causal, scale, so)
    torch.library.opcheck(at._probs, (q, k, lse, mask, dropout, case.causal, scale, so, rows))


# ---------------------------------------------------------------------------------------
# Semantics on every device (float32 here; the case list above covers the dtypes).

F32 = device_dtype_params({d: (torch.float32,) for d in ("cpu", "emu", "cuda")})


def _randn(*shape, device, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(torch_device(device), dtype)


@pytest.mark.parametrize("device,dtype", F32)
def test_nan_propagates_on_every_device(device, dtype):
    q, k, v = (_randn(1, 1, 70, 8, device=device, seed=s) for s in range(3))
    v[0, 0, 3, 2] = float("nan")
    out = FF.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert out[0, 0, 3:].isnan().any(dim=-1).all()
    if device == "cpu":
        # Rows that mask the NaN's key out stay finite on the CPU. The CUDA kernels multiply
        # whole tiles, where a masked weight is an explicit 0 and 0 * NaN is NaN (as in
        # torch's CUDA flash kernels): a query row that masks key j may turn NaN there when
        # both lie in one (query tile, key tile) pair that is not skipped.
        assert not out[0, 0, :3].isnan().any()
    q[0, 0, 1, 0] = float("nan")
    assert FF.scaled_dot_product_attention(q, k, v)[0, 0, 1].isnan().all()


@pytest.mark.parametrize("device,dtype", device_dtype_params(DTYPES))
def test_fully_masked_rows_are_zero_with_zero_gradients(device, dtype):
    q, k, v = (_randn(2, 2, 70, 24, device=device, seed=s, dtype=dtype).requires_grad_() for s in range(3))
    mask = torch.rand(2, 1, 70, 70, generator=torch.Generator().manual_seed(3)) > 0.3
    mask[:, :, [1, 66]] = False  # query rows 1 and 66 attend nothing
    mask = mask.to(torch_device(device))
    out = FF.scaled_dot_product_attention(q, k, v, mask)
    assert torch.equal(out[:, :, [1, 66]], torch.zeros_like(out[:, :, [1, 66]]))
    dq, dk, dv = torch.autograd.grad(out, (q, k, v), torch.randn_like(out))
    assert torch.equal(dq[:, :, [1, 66]], torch.zeros_like(dq[:, :, [1, 66]]))
    assert all(g.isfinite().all() for g in (dq, dk, dv))


@pytest.mark.parametrize("device,dtype", F32)
def test_dropout_statistics_on_every_device(device, dtype):
    # Uniform attention (q = 0) over Lk one-hot values: out[i, j] = z_ij / ((1 - p) Lk).
    lq = lk = 160
    p = 0.3
    q = torch.zeros(2, 2, lq, 8, device=torch_device(device))
    k = _randn(2, 2, lk, 8, device=device)
    v = torch.eye(lk, device=torch_device(device)).expand(2, 2, lk, lk)
    out = FF.scaled_dot_product_attention(q, k, v, dropout_p=p)
    kept = (out > 0).double().mean().item()
    assert abs(kept - (1 - p)) < 0.012  # n = 102400: sd 0.0014
    assert abs((out * lk).mean().item() - 1.0) < 0.012
    torch.manual_seed(5)
    a = FF.scaled_dot_product_attention(q, k, v, dropout_p=p)
    b = FF.scaled_dot_product_attention(q, k, v, dropout_p=p)
    torch.manual_seed(5)
    c = FF.scaled_dot_product_attention(q, k, v, dropout_p=p)
    assert not torch.equal(a, b) and torch.equal(a, c)


@pytest.mark.parametrize("device,dtype", F32)
@pytest.mark.parametrize("kwargs", [dict(), dict(is_causal=True), dict(mask="float"), dict(gqa=True)], ids=str)
def test_dropout_backward_regenerates_the_forward_mask(device, dtype, kwargs):
    """The fused backward against autograd through the weights the forward used
    (attention_probs with the same seed: W @ v is the output), so forward, backward and the
    probabilities kernel must all drop the same elements."""
    hk = 1 if kwargs.get("gqa") else 2
    q = _randn(1, 2, 37, 16, device=device, seed=1).requires_grad_()
    k = _randn(1, hk, 45, 16, device=device, seed=2).requires_grad_()
    v = _randn(1, hk, 45, 16, device=device, seed=3).requires_grad_()
    mask = _randn(1, 2, 37, 45, device=device, seed=4) if kwargs.get("mask") else None
    causal, gqa = kwargs.get("is_causal", False), kwargs.get("gqa", False)
    out, lse, so = at.attention_with_lse(q, k, v, mask, dropout_p=0.4, is_causal=causal, enable_gqa=gqa)
    w = at.attention_probs(q, k, lse.detach(), mask, 0.4, causal, seed_offset=so, enable_gqa=gqa)
    via_w = w @ (v.repeat_interleave(2 // hk, 1) if gqa else v)
    torch.testing.assert_close(out, via_w, rtol=1e-5, atol=1e-5)
    go = _randn(*out.shape, device=device, seed=5)
    fused = torch.autograd.grad(out, (q, k, v), go)
    ref = torch.autograd.grad(via_w, (q, k, v), go)
    for a_, b_ in zip(fused, ref, strict=True):
        torch.testing.assert_close(a_, b_, rtol=1e-4, atol=1e-5)


PROBS_TOL = {
    torch.float64: dict(rtol=1e-10, atol=1e-12),
    torch.float32: dict(rtol=1e-5, atol=1e-6),
    torch.float16: dict(rtol=2e-3, atol=2e-4),
    torch.bfloat16: dict(rtol=1.6e-2, atol=2e-3),
}


@pytest.mark.parametrize("device,dtype", device_dtype_params(DTYPES))
@pytest.mark.parametrize("kwargs", [dict(is_causal=True), dict(mask="bool"), dict(enable_gqa=True)], ids=str)
def test_probs_match_softmax_on_every_device(device, dtype, kwargs):
    hk = 2 if kwargs.get("enable_gqa") else 4
    q = _randn(2, 4, 9, 8, device=device, seed=1, dtype=dtype)
    k = _randn(2, hk, 70, 8, device=device, seed=2, dtype=dtype)
    v = _randn(2, hk, 70, 5, device=device, seed=3, dtype=dtype)
    mask = None
    if kwargs.get("mask"):
        mask = torch.rand(9, 70, generator=torch.Generator().manual_seed(4)) > 0.3
        mask[3] = False
        mask = mask.to(torch_device(device))
    causal, gqa = kwargs.get("is_causal", False), kwargs.get("enable_gqa", False)
    out, lse, _ = at.attention_with_lse(q, k, v, mask, is_causal=causal, enable_gqa=gqa)
    kr = k.repeat_interleave(4 // hk, 1)
    scores = (q.double() @ kr.double().transpose(-1, -2)) / math.sqrt(8)
    if causal:
        scores = scores.masked_fill(~torch.ones(9, 70, dtype=torch.bool, device=q.device).tril(), float("-inf"))
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    ref = torch.nan_to_num(torch.softmax(scores, -1), nan=0.0)
    rows = torch.tensor([8, 0, 3, 3])
    probs = at.attention_probs(q, k, lse, mask, is_causal=causal, rows=rows, enable_gqa=gqa)
    assert probs.dtype == dtype
    torch.testing.assert_close(probs.double(), ref[:, :, rows], **PROBS_TOL[dtype])


@pytest.mark.skipif(not HAS_EMU, reason="FASTLAYERS_EMU=0")
@pytest.mark.parametrize("dtype", at.CUDA_DTYPES, ids=str)
@pytest.mark.parametrize(
    "kwargs", [dict(is_causal=True), dict(mask="bool"), dict(dropout_p=0.3), dict(gqa=True)], ids=str
)
def test_emulated_kernels_are_race_free_and_deterministic(dtype, kwargs):
    """Every schedule of the emulated threads gives the same bits: no shared-memory race,
    and a backward without atomics (deterministic whatever torch's setting)."""
    hk = 1 if kwargs.get("gqa") else 3
    q = _randn(1, 3, 41, 40, device="emu", seed=1, dtype=dtype)
    k = _randn(1, hk, 70, 40, device="emu", seed=2, dtype=dtype)
    v = _randn(1, hk, 70, 40, device="emu", seed=3, dtype=dtype)
    go = _randn(1, 3, 41, 40, device="emu", seed=4, dtype=dtype)
    mask = (torch.rand(41, 70, generator=torch.Generator().manual_seed(5)) > 0.3) if kwargs.get("mask") else None
    p = kwargs.get("dropout_p", 0.0)
    so = torch.tensor([11, 3]) if p else None
    args = (mask, p, kwargs.get("is_causal", False), 0.3, so)

    def run():
        out, lse = at._forward(q, k, v, *args)
        return (out, lse, *at._backward(go, q, k, v, out, lse, *args))

    with emu_support.emulated():
        emu_support.race_check(run)


@pytest.mark.parametrize("device,dtype", device_dtype_params({"emu": at.CUDA_DTYPES, "cuda": at.CUDA_DTYPES}))
def test_sanitizer_tiny(device, dtype):
    """Tiny shapes for compute-sanitizer (memcheck, racecheck) in scripts/gpu_check.sh: every
    head-dim instantiation, row tails, the cp.async and the plain-load paths (packed views
    with odd head dims), masks, dropout, GQA; forward, backward, probabilities."""
    for case, p in [
        (Case(1, 2, 1, 19, 37, 40, 24, mask="bool:qk"), 0.0),
        (Case(1, 2, 2, 33, 17, 72, 72, causal=True), 0.2),
        (Case(2, 1, 1, 5, 70, 200, 200, mask="float:bhqk"), 0.0),
        (Case(1, 2, 2, 9, 9, 13, 13, layout="packed"), 0.0),
    ]:
        q, k, v, mask = make_inputs(case, device, dtype, requires_grad=True)
        out, lse, so = at.attention_with_lse(
            q, k, v, mask, dropout_p=p, is_causal=case.causal, enable_gqa=case.hq != case.hkv
        )
        out.backward(torch.randn_like(out))
        at.attention_probs(
            q.detach(),
            k.detach(),
            lse,
            mask,
            p,
            case.causal,
            seed_offset=so,
            rows=torch.tensor([0, case.lq - 1]),
            enable_gqa=case.hq != case.hkv,
        )
        if device == "cuda":
            torch.cuda.synchronize()
        assert out.isfinite().all() and q.grad.isfinite().all()


@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA GPU")
@pytest.mark.parametrize("dtype", at.CUDA_DTYPES, ids=str)
def test_cuda_backward_is_deterministic(dtype):
    """No atomics: two backward passes give the same bits (torch's deterministic mode
    therefore needs no special path)."""
    q, k, v, _ = make_inputs(Case(2, 8, 2, 300, 300, 64, 64, causal=True), "cuda", dtype, requires_grad=True)
    out = FF.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    go = torch.randn_like(out)
    first = torch.autograd.grad(out, (q, k, v), go, retain_graph=True)
    second = torch.autograd.grad(out, (q, k, v), go)
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
