"""nn.RNN, nn.RNNCell and the recurrence op against torch, from one case list."""

from dataclasses import dataclass

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import emu_support
import fastlayers
import fastlayers.functional as FF
from conftest import DEVICES, HAS_EMU, TOL, device_dtype_params, torch_device
from fastlayers.ops import rnn as R

DTYPES = {"cpu": R.CPU_DTYPES, "emu": R.CUDA_DTYPES, "cuda": R.CUDA_DTYPES}


@dataclass(frozen=True)
class Case:
    input_size: int
    hidden: int
    layers: int = 1
    nonlinearity: str = "tanh"
    bidirectional: bool = False
    batch_first: bool = False
    bias: bool = True
    batch: int = 3
    seq: int = 5
    h0: bool = True
    lengths: tuple | None = None  # a PackedSequence of these lengths (unsorted: enforce_sorted=False)
    unbatched: bool = False

    def __str__(self):
        parts = [f"i{self.input_size}h{self.hidden}L{self.layers}", self.nonlinearity, f"b{self.batch}s{self.seq}"]
        for flag in ("bidirectional", "batch_first", "unbatched"):
            if getattr(self, flag):
                parts.append(flag)
        if not self.bias:
            parts.append("nobias")
        if not self.h0:
            parts.append("noh0")
        if self.lengths:
            parts.append("packed" + "-".join(map(str, self.lengths)))
        return "_".join(parts)


CASES = [
    Case(4, 7),
    Case(4, 7, nonlinearity="relu"),
    Case(5, 64, layers=2, bidirectional=True),
    Case(3, 1, layers=3),
    Case(6, 300, seq=3, batch=2),
    Case(4, 16, batch_first=True, h0=False),
    Case(4, 16, batch=1, seq=50),
    Case(4, 16, seq=1),
    Case(4, 8, batch=0),
    Case(4, 8, layers=2, bidirectional=True, lengths=(5, 3, 3, 1), batch=4),
    Case(4, 8, batch_first=True, nonlinearity="relu", lengths=(2, 6, 4), bidirectional=True, seq=6),
    Case(4, 33, layers=2, lengths=(4, 4, 1), h0=False, seq=4),
    Case(4, 8, bias=False, bidirectional=True),
    Case(4, 8, unbatched=True, bidirectional=True, layers=2),
    Case(4, 8, unbatched=True, h0=False),
]


def make(case: Case, device, dtype, seed=0):
    """(fastlayers module, float64 torch reference, input, h0), sharing one state_dict."""
    g = torch.Generator().manual_seed(seed)
    kw = dict(
        nonlinearity=case.nonlinearity,
        bias=case.bias,
        batch_first=case.batch_first,
        bidirectional=case.bidirectional,
    )
    ref = torch.nn.RNN(case.input_size, case.hidden, case.layers, dtype=torch.float64, **kw)
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(torch.rand(p.shape, generator=g, dtype=torch.float64) * 2 / case.hidden**0.5 - 1 / case.hidden**0.5)
    dev = torch_device(device)
    ours = fastlayers.nn.RNN(case.input_size, case.hidden, case.layers, device=dev, dtype=dtype, **kw)
    ours.load_state_dict({k: v.to(dtype) for k, v in ref.state_dict().items()})
    shape = (case.batch, case.seq) if case.batch_first else (case.seq, case.batch)
    if case.unbatched:
        shape = (case.seq,)
    x = torch.randn(*shape, case.input_size, generator=g, dtype=torch.float64)
    dirs = 2 if case.bidirectional else 1
    h0 = None
    if case.h0:
        hshape = (case.layers * dirs, case.hidden) if case.unbatched else (case.layers * dirs, case.batch, case.hidden)
        h0 = torch.randn(*hshape, generator=g, dtype=torch.float64)
    return ours, ref, x, h0


def _pack(x, case):
    if case.lengths is None:
        return x
    return pack_padded_sequence(x, torch.tensor(case.lengths), batch_first=case.batch_first, enforce_sorted=False)


def _run(module, x, h0, case):
    """Outputs (padded data for packed input, h_n) and the leaves to differentiate."""
    out, hn = module(_pack(x, case), h0)
    if case.lengths is not None:
        out = out.data
    return out, hn


def _err(a, b):
    return (a.double() - b.double()).abs().max().item() if a.numel() else 0.0


@pytest.mark.parametrize("device,dtype", device_dtype_params(DTYPES))
@pytest.mark.parametrize("case", CASES, ids=str)
def test_rnn_matches_torch(case, device, dtype):
    ours, ref, x64, h64 = make(case, device, dtype)
    dev = torch_device(device)
    x = x64.to(dev, dtype).requires_grad_()
    h0 = h64.to(dev, dtype).requires_grad_() if h64 is not None else None
    xr = x64.clone().requires_grad_()
    hr = h64.clone().requires_grad_() if h64 is not None else None
    out, hn = _run(ours, x, h0, case)
    rout, rhn = _run(ref, xr, hr, case)
    assert out.shape == rout.shape and hn.shape == rhn.shape and out.dtype == dtype
    tol = TOL[dtype]
    low = dtype not in (torch.float32, torch.float64)
    if low:  # torch's own error in this dtype, on the same module
        tmod = torch.nn.RNN(
            case.input_size, case.hidden, case.layers, case.nonlinearity, case.bias, case.batch_first,
            0.0, case.bidirectional, dtype=dtype,
        )  # fmt: skip
        tmod.load_state_dict(ours.state_dict())
        tx = x.detach().clone().requires_grad_()
        th = h0.detach().clone().requires_grad_() if h0 is not None else None
        tout, thn = _run(tmod, tx, th, case)
        assert _err(out, rout) <= 2 * _err(tout, rout) + tol["atol"]
        assert _err(hn, rhn) <= 2 * _err(thn, rhn) + tol["atol"]
    else:
        torch.testing.assert_close(out.double(), rout, **tol)
        torch.testing.assert_close(hn.double(), rhn, **tol)
    if out.numel() == 0:
        return
    g = torch.Generator().manual_seed(1)
    gout = torch.randn(rout.shape, generator=g, dtype=torch.float64)
    ghn = torch.randn(rhn.shape, generator=g, dtype=torch.float64)
    leaves = [x] + ([h0] if h0 is not None else []) + list(ours.parameters())
    rleaves = [xr] + ([hr] if hr is not None else []) + list(ref.parameters())
    got = torch.autograd.grad((out, hn), leaves, (gout.to(dev, dtype), ghn.to(dev, dtype)))
    want = torch.autograd.grad((rout, rhn), rleaves, (gout, ghn))
    if low:
        tleaves = [tx] + ([th] if th is not None else []) + list(tmod.parameters())
        tgot = torch.autograd.grad((tout, thn), tleaves, (gout.to(dtype), ghn.to(dtype)))
        for a, t, r in zip(got, tgot, want, strict=True):
            scale = max(r.abs().max().item(), 1.0)
            assert _err(a, r) <= 2 * _err(t, r) + tol["atol"] * scale
    else:
        for a, r in zip(got, want, strict=True):
            torch.testing.assert_close(a.double(), r, rtol=tol["rtol"] * 10, atol=tol["atol"] * 10)


@pytest.mark.parametrize("device,dtype", device_dtype_params(DTYPES))
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("batched", [True, False])
def test_rnn_cell_matches_torch(device, dtype, nonlinearity, batched):
    dev = torch_device(device)
    ref = torch.nn.RNNCell(5, 9, nonlinearity=nonlinearity, dtype=torch.float64)
    ours = fastlayers.nn.RNNCell(5, 9, nonlinearity=nonlinearity, device=dev, dtype=dtype)
    ours.load_state_dict({k: v.to(dtype) for k, v in ref.state_dict().items()})
    x64 = torch.randn(4, 5, dtype=torch.float64) if batched else torch.randn(5, dtype=torch.float64)
    h64 = torch.randn(4, 9, dtype=torch.float64) if batched else torch.randn(9, dtype=torch.float64)
    x, h = x64.to(dev, dtype).requires_grad_(), h64.to(dev, dtype).requires_grad_()
    xr, hr = x64.clone().requires_grad_(), h64.clone().requires_grad_()
    out, rout = ours(x, h), ref(xr, hr)
    tol = {k: v * 4 for k, v in TOL[dtype].items()}
    torch.testing.assert_close(out.double(), rout, **tol)
    got = torch.autograd.grad(out.sum(), [x, h, *ours.parameters()])
    want = torch.autograd.grad(rout.sum(), [xr, hr, *ref.parameters()])
    for a, r in zip(got, want, strict=True):
        torch.testing.assert_close(a.double(), r, **tol)
    torch.testing.assert_close(ours(x).double(), ref(xr), **tol)  # hx defaults to zeros


def test_nan_and_inf_propagate():
    ref = torch.nn.RNN(3, 5, dtype=torch.float64)
    ours = fastlayers.nn.RNN(3, 5, dtype=torch.float64)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(4, 2, 3, dtype=torch.float64)
    x[1, 0, 0] = float("nan")
    x[2, 1, 1] = float("inf")
    for nl in ("tanh", "relu"):
        ref.nonlinearity = ours.nonlinearity = nl
        ref.mode = ours.mode = "RNN_TANH" if nl == "tanh" else "RNN_RELU"
        out, hn = ours(x)
        rout, rhn = ref(x)
        assert torch.equal(out.isnan(), rout.isnan()) and torch.equal(hn.isnan(), rhn.isnan())
        torch.testing.assert_close(out, rout, equal_nan=True)


def _op_inputs(reverse, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    bs = torch.tensor([3, 3, 2, 1])
    h = 5
    xw = torch.randn(int(bs.sum()), h, generator=g, dtype=dtype)
    h0 = torch.randn(3, h, generator=g, dtype=dtype)
    w = torch.randn(h, h, generator=g, dtype=dtype) / h**0.5
    b = torch.randn(h, generator=g, dtype=dtype)
    return xw, bs, h0, w, b


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("relu", [False, True])
def test_gradcheck_cpu_float64(reverse, relu):
    xw, bs, h0, w, b = _op_inputs(reverse)
    if relu:  # keep the pre-activations away from relu's kink
        xw = xw + 3.0 * xw.sign()
    leaves = [t.requires_grad_() for t in (xw, h0, w, b)]

    def f(xw, h0, w, b):
        return R._rec(xw, bs, h0, w, b, relu, reverse)

    assert torch.autograd.gradcheck(f, leaves)


def _bidir_inputs(dtype, device, h=5, seed=1):
    """Inputs of the two-direction form: xw [rows, 2h], h0 [2, B, h], w [2, h, h], b [2, h]."""
    g = torch.Generator().manual_seed(seed)
    bs = torch.tensor([3, 3, 2, 1])
    rows = int(bs.sum())

    def rnd(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(device, dtype)

    return rnd(rows, 2 * h), bs, rnd(2, 3, h), rnd(2, h, h, scale=h**-0.5), rnd(2, h)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("relu", [False, True])
def test_both_directions_in_one_call_equal_two_calls(device, relu):
    """The two-direction form (one launch) gives the bits of two one-direction calls, the
    second reversed, forward and backward."""
    dev = torch_device(device)
    dtype = torch.float32
    xw, bs, h0, w, b = _bidir_inputs(dtype, dev)
    h = w.shape[-1]
    go, ghn = torch.randn_like(xw), torch.randn_like(h0)
    out, hn = R._rec(xw, bs, h0, w, b, relu, False)
    grads = R._rec_backward(go, ghn, out, h0, w, bs, relu, False)
    parts, part_grads = [], []
    for d in range(2):
        cols = slice(d * h, (d + 1) * h)
        o, n = R._rec(xw[:, cols].contiguous(), bs, h0[d], w[d], b[d], relu, d == 1)
        parts.append((o, n))
        part_grads.append(R._rec_backward(go[:, cols].contiguous(), ghn[d], o, h0[d], w[d], bs, relu, d == 1))
    assert out.shape == xw.shape and hn.shape == h0.shape
    assert torch.equal(out, torch.cat([p[0] for p in parts], 1))
    assert torch.equal(hn, torch.stack([p[1] for p in parts]))
    gz, gh0, gw, gb = grads
    assert torch.equal(gz, torch.cat([g[0] for g in part_grads], 1))
    for got, i in ((gh0, 1), (gw, 2), (gb, 3)):
        torch.testing.assert_close(got, torch.stack([g[i] for g in part_grads]), rtol=1e-6, atol=1e-6)


def test_gradcheck_both_directions_cpu_float64():
    xw, bs, h0, w, b = _bidir_inputs(torch.float64, "cpu")
    leaves = [t.requires_grad_() for t in (xw, h0, w, b)]
    assert torch.autograd.gradcheck(lambda *a: R._rec(a[0], bs, a[1], a[2], a[3], False, False), leaves)


@pytest.mark.parametrize("form", ["forward", "reverse", "both directions"])
def test_opcheck_cpu(form):
    if form == "both directions":
        xw, bs, h0, w, b = _bidir_inputs(torch.float32, "cpu")
    else:
        xw, bs, h0, w, b = _op_inputs(form == "reverse", dtype=torch.float32)
    reverse, relu = form == "reverse", form == "both directions"
    for t in (xw, h0, w, b):
        t.requires_grad_()
    torch.library.opcheck(R._rec, (xw, bs, h0, w, b, relu, reverse))
    out, hn = R._rec(xw, bs, h0, w, b, relu, reverse)
    for ghn in (torch.randn_like(hn), None):
        torch.library.opcheck(
            R._rec_backward, (torch.randn_like(out), ghn, out.detach(), h0.detach(), w.detach(), bs, relu, reverse)
        )


def test_both_directions_shape_errors():
    xw, bs, h0, w, b = _bidir_inputs(torch.float32, "cpu")
    with pytest.raises(RuntimeError, match="weight_hh must be"):
        R._rec(xw, bs, h0, torch.randn(3, 5, 5), b, False, False)
    with pytest.raises(RuntimeError, match="h0 must be"):
        R._rec(xw, bs, h0[0], w, b, False, False)
    with pytest.raises(RuntimeError, match="input_proj must be"):
        R._rec(xw[:, :5], bs, h0, w, b, False, False)
    with pytest.raises(RuntimeError, match="bias must be"):
        R._rec(xw, bs, h0, w, b[0], False, False)


def test_torch_compile_fullgraph_matches_eager():
    torch._dynamo.reset()
    m = fastlayers.nn.RNN(4, 16, num_layers=2, bidirectional=True, batch_first=True)
    x = torch.randn(3, 7, 4, requires_grad=True)
    compiled = torch.compile(m, fullgraph=True, backend="aot_eager")
    out, hn = compiled(x)
    eout, ehn = m(x)
    torch.testing.assert_close(out, eout)
    torch.testing.assert_close(hn, ehn)
    (g,) = torch.autograd.grad(out.sum() + hn.sum(), x)
    (eg,) = torch.autograd.grad(eout.sum() + ehn.sum(), x)
    torch.testing.assert_close(g, eg)


def test_dropout_between_layers_is_inverted_dropout():
    """With dropout p, training: layer 2 sees layer 1's output with each element zeroed with
    probability p and the rest scaled by 1 / (1 - p) (statistically); eval: no dropout."""
    torch.manual_seed(0)
    p = 0.3
    m = fastlayers.nn.RNN(8, 512, num_layers=2, dropout=p)
    with torch.no_grad():  # layer 2: the identity on its input's first 512 features
        m.weight_ih_l1.copy_(torch.eye(512))
        m.weight_hh_l1.zero_()
        m.bias_ih_l1.zero_()
        m.bias_hh_l1.zero_()
        m.nonlinearity = "relu"
        m.mode = "RNN_RELU"
    x = torch.randn(6, 4, 8)
    m.eval()
    clean, _ = m(x)
    m.train()
    noisy, _ = m(x)
    nz = clean > 0
    kept = noisy[nz] != 0
    frac = 1 - kept.float().mean().item()
    n = nz.sum().item()
    assert abs(frac - p) < 4 * (p * (1 - p) / n) ** 0.5, (frac, n)
    torch.testing.assert_close(noisy[nz][kept], clean[nz][kept] / (1 - p))
    m.eval()
    again, _ = m(x)
    assert torch.equal(again, clean)
    # The masks come from torch's generator (through the seed passed to the op): the same seed
    # gives the same output, eager or compiled without graph breaks; the next draw differs.
    m.train()
    torch.manual_seed(5)
    first, _ = m(x)
    torch.manual_seed(5)
    assert torch.equal(m(x)[0], first)
    assert not torch.equal(m(x)[0], first)
    torch._dynamo.reset()
    compiled = torch.compile(m, fullgraph=True, backend="aot_eager")
    torch.manual_seed(5)
    assert torch.equal(compiled(x)[0], first)


@pytest.mark.parametrize("kwargs", [dict(), dict(num_layers=2, bidirectional=True, nonlinearity="relu", bias=False)])
def test_module_matches_torch_state_dict_and_from_torch(kwargs):
    ref = torch.nn.RNN(4, 6, **kwargs)
    ours = fastlayers.nn.RNN(4, 6, **kwargs)
    assert list(ours.state_dict()) == list(ref.state_dict())
    assert repr(ours) == repr(ref)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(5, 2, 4)
    torch.testing.assert_close(ours(x)[0], ref(x)[0])
    shared = fastlayers.nn.RNN.from_torch(ref)
    assert all(a is b for a, b in zip(shared.parameters(), ref.parameters(), strict=True))
    torch.testing.assert_close(shared(x)[1], ref(x)[1])
    cell = torch.nn.RNNCell(4, 6)
    fc = fastlayers.nn.RNNCell.from_torch(cell)
    assert fc.weight_ih is cell.weight_ih
    torch.testing.assert_close(fc(x[0]), cell(x[0]))


@pytest.mark.parametrize(
    "make_call, error, message",
    [
        (lambda m: m(torch.randn(5, 2, 3)), RuntimeError, "input.size\\(-1\\) must be equal to input_size"),
        (lambda m: m(torch.randn(5, 2, 4), torch.randn(1, 3, 6)), RuntimeError, "Expected hidden size"),
        (lambda m: m(torch.randn(5, 2, 2, 4)), ValueError, "Expected input to be 2D or 3D"),
        (lambda m: m(torch.randn(5, 2, 4), torch.randn(2, 6)), RuntimeError, "hx should also be 3-D"),
        (lambda m: m(torch.randn(0, 2, 4)), RuntimeError, "Expected sequence length to be larger than 0"),
        (lambda m: m(torch.randn(5, 2, 4, dtype=torch.float64)), ValueError, "does not match weight dtype"),
    ],
)
def test_bad_arguments_raise_like_torch(make_call, error, message):
    ours, ref = fastlayers.nn.RNN(4, 6), torch.nn.RNN(4, 6)
    with pytest.raises(error, match=message):
        make_call(ref)
    with pytest.raises(error, match=message):
        make_call(ours)


def test_functional_cell_and_op_errors():
    w_ih, w_hh = torch.randn(6, 4), torch.randn(6, 6)
    with pytest.raises(RuntimeError, match="input has inconsistent input_size"):
        FF.rnn_cell(torch.randn(2, 3), None, w_ih, w_hh)
    with pytest.raises(RuntimeError, match="Input batch size 2 doesn't match hidden0 batch size 3"):
        FF.rnn_cell(torch.randn(2, 4), torch.randn(3, 6), w_ih, w_hh)
    with pytest.raises(ValueError, match="Unknown nonlinearity"):
        FF.rnn_cell(torch.randn(2, 4), None, w_ih, w_hh, nonlinearity="gelu")
    xw, h0 = torch.randn(5, 6), torch.randn(3, 6)
    with pytest.raises(RuntimeError, match="batch_sizes must be positive, non-increasing"):
        R._rec(xw, torch.tensor([2, 3]), h0, w_hh, None, False, False)
    with pytest.raises(RuntimeError, match="input_proj has 5 rows but batch_sizes sums to 6"):
        R._rec(xw, torch.tensor([3, 3]), h0, w_hh, None, False, False)
    with pytest.raises(RuntimeError, match="weight_hh must be"):
        R._rec(xw, torch.tensor([3, 2]), h0, torch.randn(6, 5), None, False, False)


# ---------------------------------------------------------------------------------------
# The CUDA kernels: both drivers (persistent and per step) and race mode on the emulator.

DRIVER_CASES = [
    Case(4, 40, layers=2, bidirectional=True, lengths=(5, 3, 3, 1), batch=4),
    Case(3, 7, nonlinearity="relu", batch=9, seq=4),  # two row groups of 8
]


def _outputs_and_grads(case, device, dtype):
    ours, _, x64, h64 = make(case, device, dtype)
    dev = torch_device(device)
    x = x64.to(dev, dtype).requires_grad_()
    h0 = h64.to(dev, dtype).requires_grad_() if h64 is not None else None
    out, hn = _run(ours, x, h0, case)
    leaves = [x] + ([h0] if h0 is not None else []) + list(ours.parameters())
    return [out, hn, *torch.autograd.grad(out.square().sum() + hn.sum(), leaves)]


@pytest.mark.parametrize("device", [d for d in DEVICES if (d if isinstance(d, str) else d.values[0]) != "cpu"])
@pytest.mark.parametrize("dtype", R.CUDA_DTYPES, ids=str)
@pytest.mark.parametrize("case", DRIVER_CASES, ids=str)
def test_persistent_and_per_step_kernels_agree_bitwise(case, dtype, device, monkeypatch):
    """The two CUDA drivers run the same tile code: the same bits, forward and backward."""
    results = []
    for persistent in ("1", "0"):
        monkeypatch.setenv("FASTLAYERS_RNN_PERSISTENT", persistent)
        results.append(_outputs_and_grads(case, device, dtype))
    for a, b in zip(*results, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("persistent", ["1", "0"])
@pytest.mark.skipif(not HAS_EMU, reason="FASTLAYERS_EMU=0")
def test_emu_race_mode(persistent, monkeypatch):
    monkeypatch.setenv("FASTLAYERS_RNN_PERSISTENT", persistent)
    case = DRIVER_CASES[0]
    with emu_support.emulated():
        emu_support.race_check(lambda: _outputs_and_grads(case, "emu", torch.bfloat16))
