"""nn.MultiheadAttention against torch's, on the same state_dict, over its arguments."""

import itertools

import pytest
import torch

import fastlayers
from conftest import device_dtype_params, torch_device

E, H, L, S, N = 16, 4, 5, 7, 3

# float64 on the CPU (exact comparisons); float32 through the CUDA kernels (emulated or not).
DEVICE_DTYPES = device_dtype_params({"cpu": (torch.float64,), "emu": (torch.float32,), "cuda": (torch.float32,)})
TOL = {torch.float64: {}, torch.float32: dict(rtol=1e-4, atol=2e-5)}

CONFIGS = [
    dict(),
    dict(batch_first=True),
    dict(bias=False),
    dict(add_bias_kv=True),
    dict(add_zero_attn=True),
    dict(kdim=6, vdim=10),
    dict(add_bias_kv=True, add_zero_attn=True, batch_first=True),
]
CALLS = [
    dict(),
    dict(need_weights=False),
    dict(average_attn_weights=False),
    dict(kpm="bool"),
    dict(kpm="float", need_weights=False),
    dict(mask="bool2"),
    dict(mask="float3", need_weights=False),
    dict(mask="causal", is_causal=True),
    dict(mask="causal", is_causal=True, need_weights=False),
    dict(mask="bool2", kpm="bool", need_weights=False),
    dict(unbatched=True),
    dict(unbatched=True, need_weights=False, kpm="bool"),
]


def _pair(cfg, dtype=torch.float64, device="cpu"):
    torch.manual_seed(0)
    ref = torch.nn.MultiheadAttention(E, H, dtype=dtype, **cfg).eval().to(device)
    ours = fastlayers.nn.MultiheadAttention(E, H, dtype=dtype, **cfg).eval().to(device)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def _inputs(cfg, call, g, dtype=torch.float64, device="cpu"):
    q, k, v, kw = _inputs64(cfg, call, g)
    cast = lambda t: t.to(device, dtype if t.is_floating_point() else t.dtype)  # noqa: E731
    return cast(q), cast(k), cast(v), {x: cast(t) if isinstance(t, torch.Tensor) else t for x, t in kw.items()}


def _inputs64(cfg, call, g):
    kd, vd = cfg.get("kdim", E), cfg.get("vdim", E)
    tgt, src = (L, N), (S, N)
    if call.get("unbatched"):
        tgt, src = (L,), (S,)
    elif cfg.get("batch_first"):
        tgt, src = (N, L), (N, S)
    q = torch.randn(*tgt, E, generator=g, dtype=torch.float64)
    k = torch.randn(*src, kd, generator=g, dtype=torch.float64)
    v = torch.randn(*src, vd, generator=g, dtype=torch.float64)
    kw = {x: call[x] for x in ("need_weights", "average_attn_weights", "is_causal") if x in call}
    if "kpm" in call:
        shape = (S,) if call.get("unbatched") else (N, S)
        pad = torch.rand(shape, generator=g) < 0.3
        pad[..., 0] = False  # every row keeps a key: torch gives NaN otherwise
        kw["key_padding_mask"] = (
            pad if call["kpm"] == "bool" else torch.zeros(shape, dtype=torch.float64).masked_fill(pad, -1e9)
        )
    if call.get("mask") == "bool2":
        m = torch.rand(L, S, generator=g) < 0.3
        m[:, 0] = False
        kw["attn_mask"] = m
    elif call.get("mask") == "float3":
        kw["attn_mask"] = torch.randn(N * H, L, S, generator=g, dtype=torch.float64)
    elif call.get("mask") == "causal":
        kw["attn_mask"] = torch.triu(torch.full((L, S), float("-inf"), dtype=torch.float64), 1)
    return q, k, v, kw


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
@pytest.mark.parametrize("cfg,call", list(itertools.product(CONFIGS, CALLS)), ids=str)
def test_matches_torch(cfg, call, device, dtype):
    if call.get("unbatched") and cfg.get("add_bias_kv"):
        pytest.skip("torch does not support add_bias_kv with unbatched input")
    dev = torch_device(device)
    ref, ours = _pair(cfg, dtype, dev)
    g = torch.Generator().manual_seed(1)
    q, k, v, kw = _inputs(cfg, call, g, dtype, dev)
    tol = TOL[dtype]
    qs, ks, vs = (t.clone().requires_grad_() for t in (q, k, v))
    qr, kr, vr = (t.clone().requires_grad_() for t in (q, k, v))
    out, w = ours(qs, ks, vs, **kw)
    rout, rw = ref(qr, kr, vr, **kw)
    torch.testing.assert_close(out, rout, **tol)
    if rw is None:
        assert w is None
    else:
        torch.testing.assert_close(w, rw, **tol)
    go = torch.randn(out.shape, generator=g, dtype=torch.float64).to(dev, dtype)
    loss = (out * go).sum() + (0 if w is None else w.sum() * 0.5)
    rloss = (rout * go).sum() + (0 if rw is None else rw.sum() * 0.5)
    ours_grads = torch.autograd.grad(loss, [qs, ks, vs, *ours.parameters()])
    ref_grads = torch.autograd.grad(rloss, [qr, kr, vr, *ref.parameters()])
    for a, b in zip(ours_grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b, **tol)


def test_state_dict_and_from_torch():
    ref = torch.nn.MultiheadAttention(E, H, kdim=6, vdim=10, add_bias_kv=True, batch_first=True)
    ours = fastlayers.nn.MultiheadAttention.from_torch(ref)
    assert isinstance(ours, torch.nn.MultiheadAttention)
    assert list(ours.state_dict()) == list(ref.state_dict())
    q, k, v = torch.randn(2, L, E), torch.randn(2, S, 6), torch.randn(2, S, 10)
    torch.testing.assert_close(ours(q, k, v)[0], ref.eval()(q, k, v)[0])


@pytest.mark.parametrize("need_weights", [True, False])
def test_fully_padded_rows_give_zero(need_weights):
    ref, ours = _pair(dict(batch_first=True))
    q, k, v = (torch.randn(2, L, E, dtype=torch.float64) for _ in range(3))
    kpm = torch.zeros(2, L, dtype=torch.bool)
    kpm[1] = True  # every key of batch 1 is padding
    out, w = ours(q, k, v, key_padding_mask=kpm, need_weights=need_weights)
    rout, _ = ref(q, k, v, key_padding_mask=kpm, need_weights=True)
    assert rout[1].isnan().all()  # torch
    torch.testing.assert_close(out[0], rout[0])
    # Ours: attention output 0, so the layer returns the out-projection's bias.
    torch.testing.assert_close(out[1], ours.out_proj.bias.expand(L, E))
    if need_weights:
        assert torch.equal(w[1], torch.zeros_like(w[1]))


@pytest.mark.parametrize("need_weights", [True, False])
def test_dropout(need_weights):
    torch.manual_seed(0)
    m = fastlayers.nn.MultiheadAttention(E, H, dropout=0.5, batch_first=True).train()
    x = torch.randn(4, 64, E)
    a, wa = m(x, x, x, need_weights=need_weights, average_attn_weights=False)
    b, _ = m(x, x, x, need_weights=need_weights)
    assert not torch.allclose(a, b)  # a fresh mask per call
    e, _ = m.eval()(x, x, x)
    # Dropout is unbiased: the mean output matches eval mode's within noise.
    assert (a.mean() - e.mean()).abs() < 0.05
    if need_weights:  # the returned weights are those after dropout: about half are zero
        assert 0.45 < (wa == 0).float().mean().item() < 0.55
