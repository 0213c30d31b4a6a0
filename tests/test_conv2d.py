"""conv2d and nn.Conv2d against torch, on every device with a kernel, from one case list."""

import random
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

import emu_support
import fastlayers
import fastlayers.functional as FF
from conftest import HAS_CUDA, HAS_EMU, TOL, device_dtype_params, torch_device
from fastlayers.ops import conv2d as cv

DTYPES = {"cpu": cv.CPU_DTYPES, "emu": cv.CUDA_DTYPES, "cuda": cv.CUDA_DTYPES}


@dataclass(frozen=True)
class Case:
    shape: tuple[int, ...]  # input (N, C, H, W) or (C, H, W)
    out_channels: int
    kernel_size: tuple[int, int]
    stride: int | tuple[int, int] = 1
    padding: int | tuple[int, int] | str = 0
    dilation: int | tuple[int, int] = 1
    groups: int = 1
    bias: bool = True
    layout: str = "contiguous"  # contiguous | channels_last | sliced | weight_cl

    def __str__(self):
        a = "x".join(map(str, self.shape))
        k = "x".join(map(str, self.kernel_size))
        return (
            f"{a}-o{self.out_channels}-k{k}-s{self.stride}-p{self.padding}-d{self.dilation}"
            f"-g{self.groups}{'' if self.bias else '-nobias'}-{self.layout}"
        ).replace(" ", "")


def _random_cases(n, seed=4321):
    """Random valid configurations over every argument, odd sizes included."""
    rng = random.Random(seed)
    cases = []
    while len(cases) < n:
        k = rng.choice([(1, 1), (3, 3), (5, 5), (7, 7), (1, 7), (3, 1), (2, 4)])
        s = (rng.randint(1, 3), rng.randint(1, 3))
        d = (rng.randint(1, 2), rng.randint(1, 2))
        g = rng.choice([1, 1, 2, 3])
        c = g * rng.choice([1, 2, 3])
        o = g * rng.choice([1, 2, 5])
        pad = rng.choice([0, 1, (k[0] // 2, k[1] // 2), "valid", "same"])
        h, w = rng.choice([5, 8, 13]), rng.choice([6, 9, 11])
        p2 = (0, 0) if pad in ("valid", "same") else ((pad, pad) if isinstance(pad, int) else pad)
        if h + 2 * p2[0] < d[0] * (k[0] - 1) + 1 or w + 2 * p2[1] < d[1] * (k[1] - 1) + 1:
            continue
        layout = rng.choice(["contiguous", "channels_last", "sliced", "weight_cl"])
        cases.append(Case((rng.choice([1, 2, 3]), c, h, w), o, k, s, pad, d, g, rng.random() < 0.8, layout))
    return cases


CASES = [
    Case((2, 3, 9, 11), 5, (3, 3), padding=1),  # in_channels 3
    Case((2, 3, 9, 11), 5, (3, 3), padding=1, layout="channels_last"),
    Case((2, 8, 7, 7), 16, (1, 1)),  # pointwise
    Case((2, 8, 7, 7), 16, (1, 1), layout="channels_last"),
    Case((1, 4, 12, 12), 6, (5, 5), stride=2, padding=2),
    Case((1, 3, 15, 15), 4, (7, 7), stride=3, padding=3),
    Case((2, 5, 9, 14), 3, (1, 7), padding=(0, 3)),
    Case((2, 4, 10, 10), 6, (3, 3), dilation=2, padding=2, groups=2),
    Case((2, 6, 11, 9), 6, (3, 3), stride=2, padding=1, groups=6),  # depthwise
    Case((2, 6, 11, 9), 6, (3, 3), stride=2, padding=1, groups=6, layout="channels_last"),
    Case((2, 4, 9, 9), 12, (5, 5), padding=2, groups=4, layout="channels_last"),  # multiplier 3
    Case((2, 4, 9, 9), 12, (3, 3), padding=1, groups=4, bias=False),
    Case((2, 5, 10, 13), 4, (3, 3), stride=2, padding="same"),  # TF 'same', asymmetric
    Case((1, 3, 8, 8), 4, (4, 4), padding="same", dilation=(1, 2)),  # even kernel: asymmetric
    Case((2, 4, 8, 8), 4, (3, 3), padding="valid", layout="sliced"),
    Case((0, 4, 8, 8), 4, (3, 3), padding=1),  # empty batch
    Case((0, 4, 8, 8), 4, (3, 3), padding=1, layout="channels_last"),
    Case((4, 7, 9), 5, (3, 3), padding=1),  # unbatched
    Case((2, 3, 6, 6), 4, (3, 3), layout="weight_cl"),  # weight channels_last: output too
    Case((1, 3, 3, 3), 2, (3, 3)),  # one output pixel
    # Channel counts that are multiples of 8: the CUDA GEMMs' 16-byte copies; 512 output
    # pixels: the weight gradient's reduction split in two.
    Case((2, 16, 16, 16), 24, (3, 3), padding=1, layout="channels_last"),
    Case((1, 16, 12, 12), 16, (3, 3), stride=2, padding=1),  # strided data gradient, NCHW
    Case((2, 32, 9, 9), 32, (1, 1), groups=2, bias=False),  # grouped GEMM
    *_random_cases(24),
]


def make_inputs(c: Case, device, dtype, seed=0):
    """Input, weight and bias (None without bias) on the test device, in the case's layout."""
    g = torch.Generator().manual_seed(seed)
    dev, cin = torch_device(device), c.shape[-3]
    shape = list(c.shape)
    if c.layout == "sliced":  # non-contiguous: every other column of a wider tensor
        shape[-1] *= 2
    x = torch.randn(shape, generator=g, dtype=torch.float64).to(dev, dtype)
    if c.layout == "sliced":
        x = x[..., ::2]
    if c.layout == "channels_last" and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randn(c.out_channels, cin // c.groups, *c.kernel_size, generator=g, dtype=torch.float64)
    w = (w / max(1, cin // c.groups * c.kernel_size[0] * c.kernel_size[1]) ** 0.5).to(dev, dtype)
    if c.layout == "weight_cl":
        w = w.contiguous(memory_format=torch.channels_last)
    b = torch.randn(c.out_channels, generator=g, dtype=torch.float64).to(dev, dtype) if c.bias else None
    return x, w, b


def _torch_conv(x, w, b, c: Case):
    """torch's conv2d, with TF 'same' at stride > 1 as an explicit pad."""
    pad = c.padding
    if pad == "same" and c.stride not in (1, (1, 1)):
        s = (c.stride, c.stride) if isinstance(c.stride, int) else c.stride
        d = (c.dilation, c.dilation) if isinstance(c.dilation, int) else c.dilation
        t, bo, le, ri = cv.same_padding(x.shape[-2:], c.kernel_size, s, d)
        x = F.pad(x, (le, ri, t, bo))
        pad = 0
    return F.conv2d(x, w, b, c.stride, pad, c.dilation, c.groups)


def _err(a, b):
    return (a.double() - b.double()).abs().max().item() if a.numel() else 0.0


@pytest.mark.parametrize("device,dtype", device_dtype_params(DTYPES))
@pytest.mark.parametrize("case", CASES, ids=str)
def test_forward_and_gradients_match_torch(case, device, dtype):
    x, w, b = make_inputs(case, device, dtype)
    leaves = [t.detach().requires_grad_() for t in (x, w, b) if t is not None]
    x, w, b = leaves[0], leaves[1], leaves[2] if case.bias else None
    out = FF.conv2d(x, w, b, case.stride, case.padding, case.dilation, case.groups)
    # The float64 reference, and torch's own result in the test dtype.
    ref_leaves = [t.detach().double().requires_grad_() for t in leaves]
    xr = ref_leaves[0]
    if case.layout == "channels_last" and x.dim() == 4:
        xr = xr.to(memory_format=torch.channels_last)
    ref = _torch_conv(xr, *ref_leaves[1:2], ref_leaves[2] if case.bias else None, case)
    tout = _torch_conv(x.detach(), w.detach(), b.detach() if b is not None else None, case)
    assert out.shape == ref.shape and out.dtype == dtype
    assert out.stride() == tout.stride() or out.numel() == 0, "memory format differs from torch's"
    tol = TOL[dtype]
    if dtype in (torch.float32, torch.float64):
        torch.testing.assert_close(out.double(), ref, **tol)
    else:
        assert _err(out, ref) <= 2 * _err(tout, ref) + tol["atol"]
    grad = torch.randn(ref.shape, dtype=torch.float64).to(out.device)
    got = torch.autograd.grad(out, leaves, grad.to(dtype))
    want = torch.autograd.grad(ref, ref_leaves, grad)
    if dtype in (torch.float32, torch.float64):
        for g, r in zip(got, want, strict=True):
            torch.testing.assert_close(g.double(), r, rtol=tol["rtol"] * 10, atol=tol["atol"] * 10)
    else:
        tl = [t.detach().requires_grad_() for t in leaves]
        tref = _torch_conv(tl[0], tl[1], tl[2] if case.bias else None, case)
        tgot = torch.autograd.grad(tref, tl, grad.to(dtype))
        for g, tg, r in zip(got, tgot, want, strict=True):
            scale = max(r.abs().max().item(), 1.0) if r.numel() else 1.0
            assert _err(g, r) <= 2 * _err(tg, r) + tol["atol"] * scale


@pytest.mark.parametrize("device,dtype", device_dtype_params(DTYPES))
def test_nan_and_inf_propagate(device, dtype):
    c = Case((1, 2, 6, 6), 3, (3, 3), padding=1)
    x, w, b = make_inputs(c, device, dtype)
    x[0, 0, 2, 2] = float("nan")
    x[0, 1, 4, 4] = float("inf")
    out = FF.conv2d(x, w, b, padding=1)
    ref = F.conv2d(x.double(), w.double(), b.double(), padding=1)
    assert torch.equal(out.isnan(), ref.isnan())
    assert torch.equal(out.isinf(), ref.isinf())


CPU_GRAD_CASES = [
    Case((2, 4, 7, 6), 6, (3, 3), stride=2, padding=1, groups=2),
    Case((1, 3, 6, 7), 4, (3, 2), padding="same", dilation=(2, 1), layout="channels_last"),
    Case((2, 4, 6, 6), 8, (3, 3), padding=1, groups=4),  # depthwise, multiplier 2
    Case((1, 4, 6, 6), 4, (3, 3), padding=1, groups=4, layout="channels_last"),
    Case((1, 3, 7, 7), 2, (3, 3), stride=2, padding="same"),
]


@pytest.mark.parametrize("case", CPU_GRAD_CASES, ids=str)
def test_gradcheck_and_gradgradcheck_cpu_float64(case):
    x, w, b = make_inputs(case, "cpu", torch.float64)
    args = [t.detach().requires_grad_() for t in (x, w, b)]

    def f(x, w, b):
        return FF.conv2d(x, w, b, case.stride, case.padding, case.dilation, case.groups)

    assert torch.autograd.gradcheck(f, args)
    assert torch.autograd.gradgradcheck(f, args)


@pytest.mark.parametrize("case", CPU_GRAD_CASES[:3], ids=str)
def test_opcheck_cpu(case):
    x, w, b = make_inputs(case, "cpu", torch.float64)
    pads = cv.resolve_padding(case.padding, x, w, cv._pair(case.stride, "stride"), cv._pair(case.dilation, "dilation"))
    args = (cv._pair(case.stride, "stride"), pads, cv._pair(case.dilation, "dilation"), case.groups)
    torch.library.opcheck(
        torch.ops.fastlayers.conv2d, (x.requires_grad_(), w.requires_grad_(), b.requires_grad_(), *args)
    )
    out = torch.ops.fastlayers.conv2d(x, w, b, *args)
    torch.library.opcheck(
        torch.ops.fastlayers.conv2d_backward,
        (torch.randn_like(out), x.detach(), w.detach(), *args, [True, True, True]),
    )


def test_torch_compile_fullgraph_matches_eager():
    m = torch.nn.Sequential(
        fastlayers.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.ReLU(),
        fastlayers.nn.Conv2d(8, 8, 3, stride=2, padding="same", groups=8),
    )
    x = torch.randn(2, 3, 10, 10, requires_grad=True)
    eager = m(x)
    compiled = torch.compile(m, fullgraph=True, backend="aot_eager")(x)
    torch.testing.assert_close(compiled, eager)
    (g1,) = torch.autograd.grad(eager.sum(), x)
    (g2,) = torch.autograd.grad(compiled.sum(), x)
    torch.testing.assert_close(g1, g2)


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "replicate", "circular"])
@pytest.mark.parametrize(
    "kwargs",
    [
        dict(kernel_size=3, padding=1),
        dict(kernel_size=(3, 5), padding=(1, 2), stride=(2, 1)),
        dict(kernel_size=3, padding="same", dilation=2),
        dict(kernel_size=4, padding="same"),
        dict(kernel_size=3, padding="valid", groups=2),
        dict(kernel_size=3, padding=2, groups=4, bias=False),
    ],
    ids=str,
)
def test_module_equals_torch_on_the_same_state_dict(kwargs, padding_mode):
    torch.manual_seed(3)
    ref = torch.nn.Conv2d(4, 8, padding_mode=padding_mode, **kwargs)
    torch.manual_seed(3)
    m = fastlayers.nn.Conv2d(4, 8, padding_mode=padding_mode, **kwargs)
    # Same initialisation from the same seed, same keys, same repr.
    assert m.state_dict().keys() == ref.state_dict().keys()
    for k, v in ref.state_dict().items():
        assert torch.equal(m.state_dict()[k], v)
    assert repr(m) == repr(ref)
    assert isinstance(m, torch.nn.Conv2d)
    x = torch.randn(2, 4, 11, 10, requires_grad=True)
    torch.testing.assert_close(m(x), ref(x), rtol=1e-5, atol=1e-5)
    m.load_state_dict(ref.state_dict())
    g1 = torch.autograd.grad(m(x).square().sum(), [x, m.weight])
    g2 = torch.autograd.grad(ref(x).square().sum(), [x, ref.weight])
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_from_torch_shares_parameters():
    ref = torch.nn.Conv2d(3, 6, (3, 2), stride=2, padding=(1, 0), dilation=(1, 2), groups=3, padding_mode="reflect")
    ref.eval()
    m = fastlayers.nn.Conv2d.from_torch(ref)
    assert m.weight is ref.weight and m.bias is ref.bias and not m.training
    x = torch.randn(2, 3, 9, 9)
    torch.testing.assert_close(m(x), ref(x))


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "replicate", "circular"])
def test_module_strided_same_pads_like_tensorflow(padding_mode):
    m = fastlayers.nn.Conv2d(3, 4, 3, stride=2, padding="same", padding_mode=padding_mode)
    assert m.stride == (2, 2)
    x = torch.randn(2, 3, 10, 7)
    out = m(x)
    assert out.shape == (2, 4, 5, 4)  # ceil(10 / 2), ceil(7 / 2)
    # TensorFlow: total padding max((out - 1) * s + k - n, 0), the odd one bottom / right.
    t, b, le, r = cv.same_padding((10, 7), (3, 3), (2, 2), (1, 1))
    assert (t, b, le, r) == (0, 1, 1, 1)
    xp = F.pad(x, (le, r, t, b), mode="constant" if padding_mode == "zeros" else padding_mode)
    torch.testing.assert_close(out, F.conv2d(xp, m.weight, m.bias, 2), rtol=1e-5, atol=1e-5)


def test_autocast_cpu_runs_in_bfloat16():
    x = torch.randn(1, 3, 8, 8)
    m = fastlayers.nn.Conv2d(3, 4, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(x)
        ref = torch.nn.functional.conv2d(x, m.weight, m.bias)
    assert out.dtype == ref.dtype == torch.bfloat16


@pytest.mark.parametrize(
    "x_shape,w_shape,kwargs,error,message",
    [
        ((8, 8), (4, 3, 3, 3), {}, RuntimeError, "Expected 3D (unbatched) or 4D (batched) input"),
        ((2, 3, 8, 8), (4, 3, 3), {}, RuntimeError, "expected weight to be 4-D"),
        ((2, 3, 8, 8), (4, 2, 3, 3), {}, RuntimeError, "to have 2 channels, but got 3 channels"),
        ((2, 3, 8, 8), (4, 3, 3, 3), dict(bias=(5,)), RuntimeError, "expected bias to be 1-dimensional with 4"),
        ((2, 3, 8, 8), (4, 3, 3, 3), dict(stride=0), RuntimeError, "non-positive stride"),
        ((2, 3, 8, 8), (4, 3, 3, 3), dict(padding=-1), RuntimeError, "negative padding"),
        ((2, 3, 8, 8), (4, 3, 3, 3), dict(dilation=0), RuntimeError, "non-positive dilation"),
        ((2, 3, 8, 8), (4, 1, 3, 3), dict(groups=0), RuntimeError, "non-positive groups"),
        ((2, 3, 8, 8), (4, 1, 3, 3), dict(groups=3), RuntimeError, "divisible by 3 at dimension 0"),
        ((2, 3, 2, 2), (4, 3, 3, 3), {}, RuntimeError, "Kernel size can't be greater than actual input size"),
        ((2, 3, 8, 8), (4, 3, 3, 0), {}, RuntimeError, "nonzero kernel size"),
        ((1, 3, 0, 5), (4, 3, 3, 3), dict(padding=2), RuntimeError, "Only zero batch or zero channel inputs"),
        ((2, 3, 8, 8), (4, 3, 3, 3), dict(padding="foo"), RuntimeError, "Invalid padding string"),
        ((2, 3, 8, 8), (4, 3, 3, 3), dict(stride=(1, 2, 3)), RuntimeError, "expected stride to be a single integer"),
        ((2, 3, 8, 8), (4, 3, 3, 3), dict(wdtype=torch.float64), RuntimeError, "weight type (double)"),
        ((2, 3, 8, 8), (4, 3, 3, 3), dict(bias=(4,), bdtype=torch.float64), RuntimeError, "bias type (double)"),
    ],
)
def test_bad_arguments_raise_like_torch(x_shape, w_shape, kwargs, error, message):
    kwargs = dict(kwargs)
    wdtype = kwargs.pop("wdtype", torch.float32)
    bdtype = kwargs.pop("bdtype", torch.float32)
    bias = torch.randn(kwargs.pop("bias"), dtype=bdtype) if "bias" in kwargs else None
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        FF.conv2d(torch.randn(x_shape), torch.randn(w_shape, dtype=wdtype), bias, **kwargs)


def test_backward_masks_and_shapes():
    x, w = torch.randn(2, 4, 6, 6), torch.randn(6, 2, 3, 3)
    go = torch.randn(2, 6, 4, 4)
    args = ([1, 1], [0, 0], [1, 1], 2)
    gx, gw, gb = torch.ops.fastlayers.conv2d_backward(go, x, w, *args, [False, True, False])
    assert gx.numel() == 0 and gb.numel() == 0 and gw.shape == w.shape
    with pytest.raises(RuntimeError, match="grad_output must have size"):
        torch.ops.fastlayers.conv2d_backward(go[:, :, :3], x, w, *args, [True, True, True])


def test_no_input_channels_like_torch():
    # torch returns an output without channels, and zero gradients for weight and bias.
    x, w, b = (torch.randn(s, requires_grad=True) for s in ((2, 0, 5, 5), (3, 0, 3, 3), (3,)))
    out = FF.conv2d(x, w, b)
    ref = F.conv2d(x, w, b)
    assert out.shape == ref.shape == (2, 0, 3, 3)
    grads = torch.autograd.grad(out.sum(), (x, w, b))
    for g, t in zip(grads, (x, w, b), strict=True):
        assert g.shape == t.shape and not g.any()


def test_results_do_not_depend_on_the_thread_count():
    # The direct (depthwise) kernels and everything around the GEMM stage are ours; the GEMM
    # stage is ATen's, whose reduction order is its own.
    x, w = torch.randn(2, 16, 20, 20, requires_grad=True), torch.randn(32, 1, 3, 3, requires_grad=True)
    n = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            for xx in (x, x.contiguous(memory_format=torch.channels_last)):
                a = FF.conv2d(xx, w, padding=1, groups=16)
                results.append([a, *torch.autograd.grad(a.square().sum(), (x, w))])
    finally:
        torch.set_num_threads(n)
    for r1, r2 in zip(results[:2], results[2:], strict=True):
        for u, v in zip(r1, r2, strict=True):
            assert torch.equal(u, v)


# ---------------------------------------------------------------------------------------
# Emulator-only checks: race mode, and 64-bit index math on the last blocks of a huge tensor.

EMU_RACE_CASES = [
    Case((2, 16, 16, 16), 24, (3, 3), padding=1, layout="channels_last"),  # 16-byte copies, split wgrad
    Case((2, 3, 9, 11), 5, (3, 3), stride=2, padding=1),  # element gathers, NCHW via NHWC
    Case((2, 6, 11, 9), 12, (3, 3), padding=1, groups=6),  # direct kernels, NCHW
    Case((2, 6, 11, 9), 6, (3, 3), padding=1, groups=6, layout="channels_last"),  # direct, NHWC
]


@pytest.mark.skipif(not HAS_EMU, reason="FASTLAYERS_EMU=0")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", EMU_RACE_CASES, ids=str)
def test_emu_race_mode(case, dtype):
    """Every kernel gives the same bits whatever order its threads run in (no atomics: the
    weight gradient's split reduction is summed in a fixed order)."""
    x, w, b = make_inputs(case, "emu", dtype)
    pads = cv.resolve_padding(case.padding, x, w, [case.stride] * 2, [case.dilation] * 2)
    args = ([case.stride] * 2, pads, [case.dilation] * 2, case.groups)
    with emu_support.emulated():
        y = emu_support.race_check(lambda: cv._conv(x, w, b, *args))[0]
        grad = torch.randn_like(y)
        emu_support.race_check(lambda: cv._backward(grad, x, w, *args, [True, True, True]))


@pytest.mark.skipif(not HAS_EMU, reason="FASTLAYERS_EMU=0")
@pytest.mark.parametrize("groups", [1, 8], ids=["implicit-gemm", "depthwise"])
def test_emu_index_math_past_2_31(groups):
    """bfloat16 NHWC input of more than 2^31 elements of which only the last two rows are
    written (the rest stays unallocated); only the last blocks of the forward run, and the
    last output pixels must match torch on those rows."""
    n, c, h, w = 1, 8, 16385, 16385
    assert n * c * h * w > 2**31
    x = torch.empty(n, c, h, w, dtype=torch.bfloat16, memory_format=torch.channels_last)
    x[:, :, -2:, :] = torch.randn(n, c, 2, w).to(torch.bfloat16)
    wt = (torch.randn(8, c // groups, 3, 3) / 3).to(torch.bfloat16)
    # Kernel 3, stride 2, padding 1 on an odd height: the last output row reads the last two
    # input rows and one row of bottom padding.
    ref = F.conv2d(F.pad(x[:, :, -2:, :].double(), (1, 1, 0, 1)), wt.double(), None, 2, 0, 1, groups)
    last = 64  # output pixels within the last 3 blocks (direct: 520 outputs, 8 per pixel)
    with emu_support.emulated(), emu_support.blocks(-3):
        y = cv._conv(x, wt, None, [2, 2], [1, 1], [1, 1], groups)
    assert y.shape[-1] > last and y.is_contiguous(memory_format=torch.channels_last)
    got = y[..., -1, -last:].double()
    want = ref[..., 0, -last:]
    assert (got - want).abs().max().item() <= 0.05 * want.abs().max().item()


@pytest.mark.parametrize(
    "device", ["emu", pytest.param("cuda", marks=pytest.mark.skipif(not HAS_CUDA, reason="no CUDA GPU"))]
)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
def test_sanitizer_tiny(device, dtype):
    """Tiny shapes for compute-sanitizer (memcheck, racecheck) in scripts/gpu_check.sh: the
    tensor-core and SIMT GEMMs with tile tails, 16-byte copies and element gathers, the split
    weight gradient, the direct kernels in both layouts, the bias gradient."""
    if device == "emu" and not HAS_EMU:
        pytest.skip("FASTLAYERS_EMU=0")
    for c in EMU_RACE_CASES + [Case((1, 8, 5, 7), 9, (1, 1), layout="channels_last")]:
        x, w, b = make_inputs(c, device, dtype)
        leaves = [t.requires_grad_() for t in (x, w, b) if t is not None]
        y = FF.conv2d(x, w, b, c.stride, c.padding, c.dilation, c.groups)
        grads = torch.autograd.grad(y.square().sum(), leaves)
        assert y.isfinite().all() and all(g.isfinite().all() for g in grads)
