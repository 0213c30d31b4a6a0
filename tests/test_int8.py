"""Int8 GEMM, quantisers, Int8Linear and quantize(): one case list for cpu, emu and cuda."""

import itertools

import pytest
import torch

import emu_support
import fastlayers
import fastlayers.quant as Q
from conftest import DEVICES, HAS_CUDA, HAS_EMU, torch_device
from fastlayers.ops import int8 as i8

SIZES = (1, 7, 16, 33, 64, 257, 1000)
# Every size in every position: the cube of the small sizes, and the large ones (257, 1000)
# against each small one in each position (the full cube of 7 would mostly repeat work).
SMALL = (1, 7, 16, 33, 64)
SHAPES = list(itertools.product(SMALL, SMALL, SMALL)) + [
    s for big in (257, 1000) for x in (1, 33) for s in ((big, x, 64), (x, big, 33), (16, 64, big), (big, big, x))
]


def _int8(shape, seed, device):
    t = torch.randint(-128, 128, shape, generator=torch.Generator().manual_seed(seed), dtype=torch.int8)
    if t.numel() > 1:  # the extremes always present
        t.view(-1)[0], t.view(-1)[-1] = -128, 127
    return t.to(torch_device(device))


def _ref_mm(a, b):
    return (a.cpu().long() @ b.cpu().long().T).to(torch.int32)


@pytest.mark.parametrize("device", DEVICES)
def test_int8_mm_is_exact(device):
    for i, (m, n, k) in enumerate(SHAPES):
        a, b = _int8((m, k), 2 * i, device), _int8((n, k), 2 * i + 1, device)
        out = Q.int8_mm(a, b)
        assert out.dtype == torch.int32 and out.shape == (m, n)
        assert torch.equal(out.cpu(), _ref_mm(a, b)), (m, n, k)


@pytest.mark.parametrize("device", DEVICES)
def test_int8_mm_strides_empty_and_extremes(device):
    dev = torch_device(device)
    base = _int8((40, 2 * 70), 1, device)
    a = base[:, ::2]  # K not contiguous
    b = _int8((70, 23), 2, device).T  # [23, 70] with row stride 1: a transposed view
    assert torch.equal(Q.int8_mm(a, b).cpu(), _ref_mm(a, b))
    a2 = _int8((80, 96), 3, device)[5:42, 16:80]  # offset base, row stride 96
    b2 = _int8((50, 64), 4, device)
    assert torch.equal(Q.int8_mm(a2, b2).cpu(), _ref_mm(a2, b2))
    assert Q.int8_mm(torch.empty(0, 16, dtype=torch.int8, device=dev), b2[:, :16]).shape == (0, 50)
    assert Q.int8_mm(a2[:, :0], b2[:, :0]).eq(0).all()  # K = 0
    full = torch.full((20, 3000), -128, dtype=torch.int8, device=dev)  # largest sums
    assert torch.equal(Q.int8_mm(full, full).cpu(), torch.full((20, 20), 3000 * 16384, dtype=torch.int32))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("m", [1, 13, 200])
def test_int8_linear_matches_float64(device, m):
    dev = torch_device(device)
    g = torch.Generator().manual_seed(m)
    a, b = _int8((m, 77), 5, device), _int8((45, 77), 6, device)
    a_scale = (torch.rand(m, generator=g) * 0.05 + 0.001).to(dev)
    b_scale = (torch.rand(45, generator=g) * 0.05 + 0.001).to(dev)
    bias = (torch.randn(45, generator=g) * 3).to(dev)
    ref = _ref_mm(a, b).double() * a_scale.cpu().double()[:, None] * b_scale.cpu().double()[None] + bias.cpu().double()
    for out_dtype in i8.out_dtypes(torch.device(dev)):
        if device == "emu" and out_dtype not in i8.CUDA_OUT_DTYPES:
            continue
        out = Q.int8_linear(a, a_scale, b, b_scale, bias, out_dtype)
        assert out.dtype == out_dtype and out.shape == (m, 45)
        tol = {torch.float32: 3e-7, torch.bfloat16: 8e-3, torch.float16: 1e-3}[out_dtype]
        torch.testing.assert_close(out.cpu().double(), ref, rtol=tol, atol=1e-5)
    no_bias = Q.int8_linear(a, a_scale, b, b_scale, None, torch.float32)
    torch.testing.assert_close(no_bias.cpu().double(), ref - bias.cpu().double(), rtol=3e-7, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_quantize_per_row(device):
    dev = torch_device(device)
    x = torch.randn(6, 130, generator=torch.Generator().manual_seed(0)).to(dev)
    x[2] = 0  # all-zero row: scale 1, values 0
    x[4, 7] = 1e4  # an outlier
    for dtype in i8.input_dtypes(torch.device(dev)):
        xd = x.to(dtype)
        q, s = Q.quantize_per_row(xd)
        amax = xd.double().abs().amax(-1)
        want_s = torch.where(amax > 0, (amax.float() / 127), torch.ones_like(amax.float()))
        assert q.dtype == torch.int8 and s.dtype == torch.float32 and s.shape == (6,)
        torch.testing.assert_close(s, want_s, rtol=1e-6, atol=0)
        want_q = torch.round(xd.float() / s[:, None]).clamp(-127, 127).to(torch.int8)
        assert (q.int() - want_q.int()).abs().max() <= 1  # division rounding at .5 ties
        assert q[2].eq(0).all() and s[2] == 1
    q3, s3 = Q.quantize_per_row(torch.randn(2, 3, 5, device=dev))
    assert q3.shape == (2, 3, 5) and s3.shape == (2, 3)


@pytest.mark.parametrize("device", DEVICES)
def test_bad_arguments_raise(device):
    dev = torch_device(device)
    a, b = _int8((4, 8), 0, device), _int8((5, 8), 1, device)
    s4, s5 = torch.ones(4, device=dev), torch.ones(5, device=dev)
    with pytest.raises(RuntimeError, match="a must be int8"):
        Q.int8_mm(a.float(), b)
    with pytest.raises(RuntimeError, match="same K"):
        Q.int8_mm(a, _int8((5, 9), 1, device))
    with pytest.raises(RuntimeError, match="b_scale must have shape"):
        Q.int8_linear(a, s4, b, s4)
    with pytest.raises(RuntimeError, match="a_scale must be float32"):
        Q.int8_linear(a, s4.double(), b, s5)
    with pytest.raises(RuntimeError, match="exceeds 131072"):
        Q.int8_mm(
            torch.zeros(1, 131073, dtype=torch.int8, device=dev), torch.zeros(1, 131073, dtype=torch.int8, device=dev)
        )


@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA GPU")
def test_mixed_devices_raise():
    a = _int8((4, 8), 0, "cpu")
    with pytest.raises(RuntimeError, match="same device"):
        Q.int8_mm(a.cuda(), a)
    with pytest.raises(RuntimeError, match="same device"):
        Q.int8_linear(a.cuda(), torch.ones(4, device="cuda"), a.cuda(), torch.ones(4))


def _linear(k, n, seed, device, dtype=torch.float32):
    torch.manual_seed(seed)
    return torch.nn.Linear(k, n).to(torch_device(device), dtype)


@pytest.mark.parametrize("device", DEVICES)
def test_int8_linear_module_sqnr_and_gradient(device):
    dev = torch_device(device)
    lin = _linear(96, 40, 0, device)
    q = fastlayers.nn.Int8Linear.from_float(lin)
    x = torch.randn(3, 11, 96, device=dev, requires_grad=True)
    out, ref = q(x), lin(x)
    assert out.shape == ref.shape and out.dtype == x.dtype
    assert Q.sqnr_db(ref, out) >= 30
    (gx,) = torch.autograd.grad(out.sum(), x)
    torch.testing.assert_close(gx, torch.ones(3, 11, 40, device=dev) @ q.dequantized_weight(), rtol=1e-5, atol=1e-5)
    for dtype in (torch.bfloat16, torch.float16, torch.float64):
        y = q(x.detach().to(dtype))
        assert y.dtype == dtype and Q.sqnr_db(ref, y) >= 25


def test_int8_linear_state_dict_roundtrip():
    lin = _linear(24, 10, 1, "cpu")
    q = fastlayers.nn.Int8Linear.from_float(lin, smooth=torch.rand(24) + 0.5)
    sd = q.state_dict()
    assert set(sd) == {"weight", "weight_scale", "bias", "input_smooth"} and sd["weight"].dtype == torch.int8
    fresh = fastlayers.nn.Int8Linear(24, 10)
    fresh.load_state_dict(sd)
    x = torch.randn(5, 24)
    assert torch.equal(fresh(x), q(x))
    plain = fastlayers.nn.Int8Linear.from_float(lin)
    assert "input_smooth" not in plain.state_dict()
    half = fastlayers.nn.Int8Linear.from_float(lin).to(torch.bfloat16)  # module-wide cast
    assert half.weight.dtype == torch.int8
    assert half(x.bfloat16()).dtype == torch.bfloat16


class _Mlp(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.head = torch.nn.Linear(64, 128), torch.nn.Linear(128, 64), torch.nn.Linear(64, 10)

    def forward(self, x):
        return self.head(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


@pytest.mark.parametrize("device", DEVICES)
def test_quantize_model_report_and_smoothquant(device):
    dev = torch_device(device)
    torch.manual_seed(0)
    model = _Mlp().to(dev)
    calib = torch.randn(64, 64, device=dev)
    calib[:, [3, 17]] *= 40  # outlier channels, as in LLM activations
    ref = model(calib)
    plain = _Mlp().to(dev)
    plain.load_state_dict(model.state_dict())
    r_plain = fastlayers.quantize(plain, calib_data=calib, filter_fn=lambda name, m: name != "head")
    assert [r.name for r in r_plain.layers] == ["fc1", "fc2"] and type(plain.head) is torch.nn.Linear
    smooth = _Mlp().to(dev)
    smooth.load_state_dict(model.state_dict())
    r_smooth = fastlayers.quantize(smooth, calib_data=[calib], smooth_alpha=0.5, filter_fn=lambda n, m: n != "head")
    assert isinstance(smooth.fc1, fastlayers.nn.Int8Linear) and smooth.fc1.input_smooth is not None
    assert r_smooth.layers[0].sqnr_db > r_plain.layers[0].sqnr_db  # smoothing helps the outliers
    assert r_smooth.output_sqnr_db is not None and Q.sqnr_db(ref, smooth(calib)) == pytest.approx(
        r_smooth.output_sqnr_db, rel=1e-6
    )
    assert "fc1" in str(r_smooth)
    with pytest.raises(ValueError, match="needs calib_data"):
        fastlayers.quantize(_Mlp(), smooth_alpha=0.5)


def test_opcheck_and_compile():
    a, b = _int8((9, 20), 0, "cpu"), _int8((7, 20), 1, "cpu")
    torch.library.opcheck(i8._int8_mm, (a, b))
    torch.library.opcheck(i8._int8_linear, (a, torch.rand(9), b, torch.rand(7), torch.randn(7), torch.float32))
    torch.library.opcheck(i8._quantize_per_row, (torch.randn(4, 9),))
    torch._dynamo.reset()
    model = _Mlp()
    fastlayers.quantize(model)
    x = torch.randn(5, 64)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), model(x))


@pytest.mark.skipif(not HAS_EMU, reason="FASTLAYERS_EMU=0")
def test_emulated_kernels_are_race_free():
    """Every thread schedule gives the same bits: the cp.async pipeline's barriers, the
    GEMV path and the quantiser."""
    a, b = _int8((150, 200), 0, "cpu"), _int8((140, 200), 1, "cpu")
    x = torch.randn(70, 33)
    sa, sb, bias = torch.rand(150), torch.rand(140), torch.randn(140)

    def run():
        return (
            Q.int8_mm(a, b),
            Q.int8_mm(a[:9], b),
            Q.int8_linear(a, sa, b, sb, bias, torch.bfloat16),
            *Q.quantize_per_row(x),
        )

    with emu_support.emulated():
        emu_support.race_check(run)


@pytest.mark.parametrize("device", [d for d in DEVICES if (d if isinstance(d, str) else d.values[0]) != "cpu"])
def test_sanitizer_tiny(device):
    """Tiny shapes for compute-sanitizer (memcheck, racecheck) in scripts/gpu_check.sh: the
    tensor-core tiles with M, N, K tails, unaligned rows (plain loads), the GEMV path, the
    epilogue and the quantiser."""
    for m, n, k, pad in ((130, 129, 100, 0), (17, 9, 37, 3), (5, 40, 70, 0), (3, 3, 1, 0)):
        base = _int8((m, k + pad), m, device)
        a, b = base[:, pad:], _int8((n, k), n, device)
        assert torch.equal(Q.int8_mm(a, b).cpu(), _ref_mm(a, b))
        out = Q.int8_linear(a.contiguous(), torch.rand(m).to(a.device), b, torch.rand(n).to(a.device), None)
        assert out.isfinite().all()
    Q.quantize_per_row(torch.randn(9, 70, device=torch_device(device)))
