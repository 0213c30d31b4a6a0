"""max_pool2d against torch.nn.functional.max_pool2d, on every device, from one case list."""

import os
import random
import warnings
from dataclasses import dataclass, field

import pytest
import torch
import torch.nn.functional as F

import emu_support
import fastlayers
import fastlayers.functional as FF
from conftest import DEVICES, HAS_CUDA, HAS_EMU, TOL, device_dtype_params, poison_, torch_device
from fastlayers.ops import max_pool2d as mp

IntOrPair = int | tuple[int, int]
DTYPES = {"cpu": mp.CPU_DTYPES, "emu": mp.CUDA_DTYPES, "cuda": mp.CUDA_DTYPES}


@dataclass(frozen=True)
class Case:
    shape: tuple[int, ...]
    kernel_size: IntOrPair
    stride: IntOrPair | None = None
    padding: IntOrPair = 0
    dilation: IntOrPair = 1
    ceil_mode: bool = False
    layout: str = "contiguous"  # contiguous | channels_last | sliced
    special: str = ""  # "" | nonfinite | ties | notap
    kwargs: dict = field(default_factory=dict, compare=False, hash=False)

    def args(self):
        return dict(
            kernel_size=self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            ceil_mode=self.ceil_mode,
        )

    def __str__(self):
        a = "x".join(map(str, self.shape))
        return (
            f"{a}-k{self.kernel_size}-s{self.stride}-p{self.padding}-d{self.dilation}"
            f"{'-ceil' if self.ceil_mode else ''}-{self.layout}{'-' + self.special if self.special else ''}"
        ).replace(" ", "")


def _pad_ok(k, p, d):
    return p <= k // 2 and p <= ((k - 1) * d + 1) // 2


def _out(size, k, s, p, d, ceil):
    return mp._pooled_size(size, k, p, s, d, ceil)


def _random_cases(n, seed=1234):
    """Random valid configurations over every argument, odd sizes included."""
    rng = random.Random(seed)
    cases = []
    while len(cases) < n:
        k = (rng.randint(1, 4), rng.randint(1, 4))
        s = (rng.randint(1, 3), rng.randint(1, 3))
        d = (rng.randint(1, 2), rng.randint(1, 2))
        p = (rng.randint(0, k[0] // 2), rng.randint(0, k[1] // 2))
        if not all(_pad_ok(k[i], p[i], d[i]) for i in range(2)):
            continue
        ceil = rng.random() < 0.4
        H, W = rng.choice([1, 7, 13, 31, 8]), rng.choice([1, 7, 13, 31, 6])
        if min(_out(H, k[0], s[0], p[0], d[0], ceil), _out(W, k[1], s[1], p[1], d[1], ceil)) < 1:
            continue
        N, C = rng.choice([1, 2, 3]), rng.choice([1, 3, 8, 16, 17])
        layout = rng.choice(["contiguous", "channels_last", "sliced"])
        cases.append(Case((N, C, H, W), k, s, p, d, ceil, layout))
    return cases


CASES = [
    Case((2, 3, 7, 13), 3, 1, 1),
    Case((1, 5, 13, 31), (2, 3), (2, 1), (1, 1), (1, 2)),
    Case((3, 7, 31, 7), 3, 2, 1, ceil_mode=True),
    Case((2, 4, 13, 13), (3, 2), (2, 3), 0, (2, 1), ceil_mode=True),
    Case((4, 17, 19), 3, 2),  # 3-D input
    Case((5, 9, 8), 2, None, 1, layout="sliced"),  # 3-D, non-contiguous
    Case((2, 16, 13, 13), 3, 2, 1, layout="channels_last"),
    Case((2, 7, 9, 11), 2, layout="channels_last"),
    Case((1, 130, 5, 5), 3, 1, 1, layout="channels_last"),  # channel tail block
    Case((1, 3, 8, 8), 2, layout="channels_last"),  # N=1 channels_last
    Case((2, 1, 8, 8), 2, layout="channels_last"),  # C=1: both formats at once
    Case((2, 6, 15, 17), 3, 2, 1, layout="sliced"),
    Case((2, 8, 12, 12), 3, (1, 2), 1, 2, layout="channels_last"),
    Case((1, 1, 7, 7), 7),  # window = whole input
    Case((2, 3, 5, 6), 1, 1),  # identity pooling
    Case((0, 3, 8, 8), 2),  # empty batch
    Case((0, 16, 8, 8), 3, 2, 1, layout="channels_last"),
    Case((2, 3, 9, 9), 3, 1, 1, special="nonfinite"),
    Case((2, 16, 9, 9), 3, 2, 1, layout="channels_last", special="nonfinite"),
    Case((2, 5, 9, 10), (3, 2), 1, (1, 1), special="ties"),
    Case((2, 16, 9, 10), 3, 2, 1, layout="channels_last", special="ties"),
    Case((1, 2, 1, 1), 1),
    Case((1, 2, 1, 5), (2, 1), 1, (1, 0), (2, 1), special="notap"),  # windows without a valid tap
    Case((2, 3, 1, 13), (1, 3), (1, 2), (0, 1), ceil_mode=True),
    *_random_cases(16),
]


def make_input(case: Case, device, dtype, requires_grad=False):
    device = torch_device(device)
    shape = case.shape
    if case.layout == "sliced":
        # A view with a gap in every dimension: a stride-2 batch (or channel) dimension and
        # rows and columns cut from a wider tensor.
        big = torch.randn(shape[0] * 2, *[s + 3 for s in shape[1:]], device=device).to(dtype)
        x = big[::2, 1 : 1 + shape[1], 2 : 2 + shape[2]]
        if len(shape) == 4:
            x = x[..., 1 : 1 + shape[3]]
    else:
        x = torch.randn(shape, device=device).to(dtype)
    if case.special == "nonfinite" and x.numel():
        flat = x.view(-1)
        idx = torch.randperm(x.numel(), device=device)
        flat[idx[: max(1, x.numel() // 20)]] = float("nan")
        flat[idx[x.numel() // 20 : x.numel() // 10]] = float("inf")
        flat[idx[x.numel() // 10 : x.numel() // 4]] = float("-inf")
        x[..., :2, :2] = float("-inf")  # windows that are all -inf
    if case.special == "ties" and x.numel():
        x = torch.randint(-2, 3, x.shape, device=device).to(dtype)
    if case.layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    if case.layout == "sliced":
        assert not x.is_contiguous() or x.numel() == 0
    return x.requires_grad_(requires_grad)


def assert_same_layout(ours, theirs):
    assert ours.shape == theirs.shape
    if ours.numel() > 1:
        assert ours.stride() == theirs.stride(), (ours.stride(), theirs.stride())


@pytest.mark.parametrize("device,dtype", device_dtype_params(DTYPES))
@pytest.mark.parametrize("case", CASES, ids=str)
def test_forward_matches_torch(case, device, dtype):
    x = make_input(case, device, dtype)
    ref, ref_idx = F.max_pool2d(x, return_indices=True, **case.args())
    out, idx = FF.max_pool2d(x, return_indices=True, **case.args())
    # Max-pooling selects input values: results must be identical, NaN for NaN.
    torch.testing.assert_close(out, ref, rtol=0, atol=0, equal_nan=True)
    assert torch.equal(idx, ref_idx)
    assert_same_layout(out, ref)
    with torch.no_grad():
        values = FF.max_pool2d(x, **case.args())
    torch.testing.assert_close(values, ref, rtol=0, atol=0, equal_nan=True)
    assert_same_layout(values, ref)


@pytest.mark.parametrize("device,dtype", device_dtype_params(DTYPES))
@pytest.mark.parametrize("case", [c for c in CASES if c.special not in ("nonfinite", "notap")], ids=str)
def test_backward_matches_reference(case, device, dtype):
    x = make_input(case, device, dtype, requires_grad=True)
    out, idx = FF.max_pool2d(x, return_indices=True, **case.args())
    grad = torch.randn(out.shape, device=x.device).to(dtype)
    if case.layout == "channels_last":
        grad = grad.to(memory_format=torch.channels_last)
    (gx,) = torch.autograd.grad(out, x, grad)
    # float64 reference: scatter-add of grad at the indices (which equal torch's, above).
    planes = idx.shape[:-2].numel()
    g64 = grad.double().reshape(planes, idx.shape[-2] * idx.shape[-1])
    ref = torch.zeros(planes, x.shape[-2] * x.shape[-1], dtype=torch.float64, device=x.device)
    ref.scatter_add_(1, idx.reshape(g64.shape), g64)
    torch.testing.assert_close(gx.double(), ref.view(x.shape), **TOL[dtype])
    assert gx.dtype == x.dtype
    assert_same_layout(gx, torch.empty_like(x))
    # And against torch's own backward in the same dtype: equal in float32/64; in 16-bit
    # types torch may accumulate in that type, so ours must only be at most twice as far
    # from the float64 reference as torch's (plus a small atol).
    (gt,) = torch.autograd.grad(F.max_pool2d(x, **case.args()), x, grad)
    if dtype in (torch.float32, torch.float64):
        torch.testing.assert_close(gx, gt, **TOL[dtype])
    else:
        ref = ref.view(x.shape)
        ours_err = (gx.double() - ref).abs().max() if gx.numel() else 0.0
        torch_err = (gt.double() - ref).abs().max() if gt.numel() else 0.0
        assert ours_err <= 2 * torch_err + 1e-5
    # The values-only op (used under no_grad) is differentiable too: it recomputes indices.
    (gv,) = torch.autograd.grad(mp._values(x, *_op_args(case)), x, grad)
    torch.testing.assert_close(gv, gx, rtol=0, atol=0)


def _op_args(case):
    a = case.args()
    return (
        mp._as_list(a["kernel_size"]),
        mp._as_list(a["stride"]),
        mp._as_list(a["padding"]),
        mp._as_list(a["dilation"]),
        a["ceil_mode"],
    )


GRAD_CASES = [
    Case((2, 3, 7, 9), 3, 2, 1),
    Case((2, 4, 6, 7), (2, 3), 1, (1, 0), (2, 1), ceil_mode=True, layout="channels_last"),
    Case((3, 8, 9), 2, 1),
]


@pytest.mark.parametrize("case", GRAD_CASES, ids=str)
def test_gradcheck_cpu_float64(case):
    x = make_input(case, "cpu", torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: FF.max_pool2d(t, **case.args()), (x,))
    assert torch.autograd.gradgradcheck(lambda t: FF.max_pool2d(t, **case.args()), (x,))


OPCHECK_CASES = GRAD_CASES + [Case((0, 3, 8, 8), 2), Case((2, 3, 9, 9), 3, 2, 1, layout="sliced")]


@pytest.mark.parametrize("case", OPCHECK_CASES, ids=str)
def test_opcheck_cpu(case):
    x = make_input(case, "cpu", torch.float32, requires_grad=True)
    args = _op_args(case)
    torch.library.opcheck(mp._forward, (x, *args))
    torch.library.opcheck(mp._values, (x, *args))
    out, idx = mp._forward(x.detach(), *args)
    grad = torch.randn_like(out).requires_grad_(True)
    torch.library.opcheck(mp._backward, (grad, x.detach(), idx, *args))


def test_torch_compile_fullgraph_matches_eager():
    torch._dynamo.reset()

    def f(t):
        return FF.max_pool2d(t, 3, 2, 1, ceil_mode=True) * 2

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    x = torch.randn(2, 5, 11, 13, requires_grad=True)
    y, yc = f(x), compiled(x)
    torch.testing.assert_close(yc, y, rtol=0, atol=0)
    g = torch.randn_like(y)
    torch.testing.assert_close(torch.autograd.grad(yc, x, g)[0], torch.autograd.grad(y, x, g)[0], rtol=0, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), y, rtol=0, atol=0)


def test_torch_export():
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), fastlayers.nn.MaxPool2d(2, ceil_mode=True))
    x = torch.randn(2, 3, 11, 12)
    ep = torch.export.export(m, (x,))
    assert any("fastlayers" in str(n.target) for n in ep.graph.nodes)
    torch.testing.assert_close(ep.module()(x), m(x), rtol=0, atol=0)


BAD_ARGS = [
    ((2, 3, 8, 8), dict(kernel_size=0), "stride should not be zero"),
    ((2, 3, 8, 8), dict(kernel_size=0, stride=1), "kernel size should be greater than zero"),
    ((2, 3, 8, 8), dict(kernel_size=3, stride=0), "stride should not be zero"),
    ((2, 3, 8, 8), dict(kernel_size=3, stride=-1), "stride should be greater than zero"),
    ((2, 3, 8, 8), dict(kernel_size=3, padding=2), "pad should be at most half of effective kernel size"),
    ((2, 3, 8, 8), dict(kernel_size=3, dilation=2, padding=2), "pad should be smaller than or equal to half"),
    ((2, 3, 8, 8), dict(kernel_size=3, padding=-1), "pad must be non-negative"),
    ((2, 3, 8, 8), dict(kernel_size=3, dilation=0), "dilation should be greater than zero"),
    ((2, 3, 8, 8), dict(kernel_size=(3, 3, 3)), "kernel_size must either be a single int, or a tuple of two"),
    ((2, 3, 8, 8), dict(kernel_size=3, stride=(1, 1, 1)), "stride must either be omitted"),
    ((2, 3, 8, 8), dict(kernel_size=3, padding=(1, 1, 1)), "padding must either be a single int"),
    ((2, 3, 8, 8), dict(kernel_size=3, dilation=(1, 1, 1)), "dilation must be either a single int"),
    ((2, 3, 8, 8), dict(kernel_size=9), "Output size is too small"),
    ((2, 3, 4, 5, 6), dict(kernel_size=2), "3D or 4D (batch mode) tensor expected for input"),
    ((3, 4), dict(kernel_size=2), "3D or 4D (batch mode) tensor expected for input"),
    ((2, 0, 8, 8), dict(kernel_size=2), "Expected 3D or 4D (batch mode) tensor with optional 0 dim batch"),
    ((0, 8, 8), dict(kernel_size=2), "Expected 3D or 4D (batch mode) tensor with optional 0 dim batch"),
]


@pytest.mark.parametrize("shape,kwargs,message", BAD_ARGS, ids=[m for _, _, m in BAD_ARGS])
@pytest.mark.parametrize("device", DEVICES)
def test_bad_arguments_raise_like_torch(shape, kwargs, message, device):
    x = torch.randn(shape, device=torch_device(device))
    with pytest.raises(RuntimeError, match=None) as ref:
        F.max_pool2d(x, **kwargs)
    with pytest.raises(RuntimeError) as ours:
        FF.max_pool2d(x, **kwargs)
    assert message in str(ours.value), str(ours.value)
    assert message in str(ref.value), f"torch says: {ref.value}"
    # The fake (meta) implementation raises the same error, so compile and export do too.
    with pytest.raises(RuntimeError) as fake:
        FF.max_pool2d(x.to("meta"), **kwargs)
    assert message in str(fake.value), str(fake.value)


def test_backward_rejects_bad_arguments():
    x = torch.randn(1, 2, 6, 6)
    out, idx = mp._forward(x, [2], [], [0], [1], False)
    with pytest.raises(RuntimeError, match="indices must have dtype int64"):
        mp._backward(torch.randn_like(out), x, idx.int(), [2], [], [0], [1], False)
    with pytest.raises(RuntimeError, match="grad_output must have size"):
        mp._backward(torch.randn(1, 2, 3, 4), x, idx, [2], [], [0], [1], False)


@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA GPU")
def test_cuda_device_mismatch_raises():
    x = torch.randn(1, 2, 6, 6, device="cuda")
    out, idx = mp._forward(x, [2], [], [0], [1], False)
    with pytest.raises(RuntimeError, match="same device"):
        mp._backward(out, x, idx.cpu(), [2], [], [0], [1], False)


@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA GPU")
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", mp.CUDA_DTYPES)
def test_cuda_sanitizer_tiny(layout, dtype):
    """Tiny shapes for compute-sanitizer (memcheck, racecheck) in scripts/gpu_check.sh."""
    for case in (Case((2, 8, 7, 9), 3, 2, 1, ceil_mode=True, layout=layout), Case((1, 3, 5, 5), 2, 1, layout=layout)):
        x = make_input(case, "cuda", dtype, requires_grad=True)
        out, idx = FF.max_pool2d(x, return_indices=True, **case.args())
        ref, ref_idx = F.max_pool2d(x, return_indices=True, **case.args())
        assert torch.equal(out, ref) and torch.equal(idx, ref_idx)
        out.backward(torch.ones_like(out))
        torch.cuda.synchronize()


def test_window_without_valid_tap():
    """H = 1 with a dilated kernel of 2 and padding 1: no tap of the window is inside the
    input. torch returns -inf and an index past the plane; backward ignores that index."""
    x = torch.randn(1, 2, 1, 5, requires_grad=True)
    args = dict(kernel_size=(2, 1), stride=1, padding=(1, 0), dilation=(2, 1))
    out, idx = FF.max_pool2d(x, return_indices=True, **args)
    ref, ref_idx = F.max_pool2d(x, return_indices=True, **args)
    assert torch.equal(out, ref) and torch.equal(idx, ref_idx) and out.isneginf().all()
    out.sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_empty_batch_backward():
    x = torch.randn(0, 3, 8, 8, requires_grad=True)
    y = FF.max_pool2d(x, 2)
    y.sum().backward()
    assert x.grad.shape == x.shape


def test_poisoned_output_is_fully_written():
    """The kernel writes every output element: NaN poison in a reused buffer never leaks."""
    x = torch.randn(3, 5, 11, 9)
    expected = F.max_pool2d(x, 3, 2, 1)
    for _ in range(3):
        poison_(torch.empty(1 << 16))  # dirty the allocator's free blocks
        out = FF.max_pool2d(x, 3, 2, 1)
        assert not out.isnan().any()
        torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_num_threads_is_honoured():
    x = torch.randn(8, 16, 64, 64)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        fastlayers._C._debug_max_thread_id(True)
        for _ in range(3):
            FF.max_pool2d(x, 3, 2, 1)
        assert fastlayers._C._debug_max_thread_id() == 0
        if os.cpu_count() > 1:
            torch.set_num_threads(2)
            fastlayers._C._debug_max_thread_id(True)
            for _ in range(3):
                FF.max_pool2d(x, 3, 2, 1)
            assert fastlayers._C._debug_max_thread_id() == 1
    finally:
        torch.set_num_threads(old)


def test_fallback_warns_once_and_strict_raises():
    x = torch.randn(2, 3, 8, 8).half()
    with pytest.raises(RuntimeError, match="no kernel for torch.float16 on cpu"):
        FF.max_pool2d(x, 2)
    fastlayers.set_strict(False)
    try:
        fastlayers._config._warned.clear()
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            a = FF.max_pool2d(x, 2)
            b = FF.max_pool2d(x, 2)
        assert len([m for m in w if issubclass(m.category, fastlayers._config.FallbackWarning)]) == 1
        assert torch.equal(a, F.max_pool2d(x, 2)) and torch.equal(b, a)
        ints = torch.randint(0, 9, (2, 3, 8, 8))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert torch.equal(FF.max_pool2d(ints, 2), F.max_pool2d(ints, 2))
    finally:
        fastlayers.set_strict(True)


def test_autocast_keeps_dtype_like_torch():
    x = torch.randn(2, 3, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours, ref = FF.max_pool2d(x, 2), F.max_pool2d(x, 2)
        ours_b, ref_b = FF.max_pool2d(x.bfloat16(), 2), F.max_pool2d(x.bfloat16(), 2)
    assert ours.dtype == ref.dtype == torch.float32
    assert ours_b.dtype == ref_b.dtype == torch.bfloat16
    torch.testing.assert_close(ours, ref, rtol=0, atol=0)


def test_module_is_a_drop_in():
    ref = torch.nn.MaxPool2d((3, 2), stride=2, padding=1, dilation=1, ceil_mode=True)
    ours = fastlayers.nn.MaxPool2d((3, 2), stride=2, padding=1, dilation=1, ceil_mode=True)
    assert isinstance(ours, torch.nn.MaxPool2d)
    assert repr(ours) == repr(ref)
    assert ours.state_dict().keys() == ref.state_dict().keys()
    x = torch.randn(2, 4, 9, 10, requires_grad=True)
    torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=0)
    conv = fastlayers.nn.MaxPool2d.from_torch(torch.nn.MaxPool2d(2, return_indices=True))
    out, idx = conv(x)
    ref_out, ref_idx = F.max_pool2d(x, 2, return_indices=True)
    assert torch.equal(out, ref_out) and torch.equal(idx, ref_idx)
    assert torch.equal(FF.max_pool2d_with_indices(x, 2)[1], ref_idx)


@pytest.mark.slow
def test_index_math_is_64_bit_cpu_bfloat16():
    """One plane of 46341^2 > 2^31 elements: element offsets and flat indices pass 2^31."""
    side = 46341
    assert side * side > 2**31
    x = torch.empty(1, 1, side, side, dtype=torch.bfloat16)
    # Only the tail is checked; random values there, a cheap constant elsewhere.
    x[0, 0, : side - 6].fill_(-1.0)
    tail = torch.randn(6, side).to(torch.bfloat16)
    x[0, 0, side - 6 :] = tail
    x[0, 0, -1, -1] = 100.0  # the last element, flat index side^2 - 1 > 2^31, wins its window
    with torch.no_grad():
        out, idx = FF.max_pool2d(x, 2, 2, ceil_mode=True, return_indices=True)
        values = FF.max_pool2d(x, 2, 2, ceil_mode=True)
    first = (side - 5) // 2  # first output row whose window lies in the random tail
    tail_in = x[0, 0, 2 * first :][None, None]
    ref, ref_idx = F.max_pool2d(tail_in, 2, 2, ceil_mode=True, return_indices=True)
    n = ref.shape[-2]
    assert torch.equal(out[0, 0, first : first + n], ref[0, 0])
    assert torch.equal(values[0, 0, first : first + n], ref[0, 0])
    assert torch.equal(idx[0, 0, first : first + n], ref_idx[0, 0] + 2 * first * side)
    assert idx[0, 0, -1, -1].item() == side * side - 1 > 2**31


# ---------------------------------------------------------------------------------------
# Emulator-only checks: race mode, and 64-bit index math on the last blocks of a huge tensor.

EMU_RACE_CASES = [
    Case((2, 3, 9, 10), 3, 2, 1),
    Case((1, 4, 8, 16), 2),  # OW = 8: the 16-byte vectorised NCHW path
    Case((2, 16, 9, 10), 3, 2, 1, layout="channels_last"),
    Case((1, 5, 7, 6), (2, 3), 1, (1, 1), (2, 1), ceil_mode=True, layout="channels_last"),
]


@pytest.mark.skipif(not HAS_EMU, reason="FASTLAYERS_EMU=0")
@pytest.mark.parametrize("dtype", mp.CUDA_DTYPES, ids=str)
@pytest.mark.parametrize("case", EMU_RACE_CASES, ids=str)
def test_emu_race_mode(case, dtype):
    """Every kernel gives the same bits whatever order its threads run in."""
    args = _op_args(case)
    with emu_support.emulated():
        x = make_input(case, "emu", dtype)
        out, idx = emu_support.race_check(lambda: mp._forward(x, *args))
        emu_support.race_check(lambda: mp._values(x, *args))
        grad = torch.randn_like(out)
        emu_support.race_check(lambda: mp._backward(grad, x, idx, *args))


@pytest.mark.skipif(not HAS_EMU, reason="FASTLAYERS_EMU=0")
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_emu_index_math_past_2_31(layout):
    """bfloat16 input of more than 2^31 elements, of which only the last two rows are ever
    written (the rest stays unallocated); only the last blocks of each launch run, and their
    outputs, indices and gradients must match torch on those rows."""
    shape = (1, 1, 46341, 46341) if layout == "contiguous" else (1, 8, 16385, 16385)
    n, c, h, w = shape
    assert n * c * h * w > 2**31
    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    x = torch.empty(shape, dtype=torch.bfloat16, memory_format=fmt)
    x[:, :, -2:, :] = torch.randn(n, c, 2, w).to(torch.bfloat16)
    # Kernel 3, stride 2, padding 1 on an odd height: the last output row's windows cover
    # exactly the last two input rows; on the two-row slice that is a (2, 3) kernel.
    args = ([3, 3], [2, 2], [1, 1], [1, 1], False)
    tail = x[:, :, -2:, :].detach().clone().requires_grad_()
    ref, ref_idx = F.max_pool2d(tail, (2, 3), 2, (0, 1), return_indices=True)
    ref_idx = ref_idx + (h - 2) * w
    last = 512  # outputs (NCHW: along W; NHWC: pixels of C = 8 channels) within the last 3 blocks
    with emu_support.emulated(), emu_support.blocks(-3):
        out, idx = mp._forward(x, *args)
        ow = out.shape[-1]
        assert ow > last
        sel = (..., -1, slice(ow - last, ow))
        assert torch.equal(out[sel], ref[..., 0, -last:]) and torch.equal(idx[sel], ref_idx[..., 0, -last:])
        grad = torch.empty_like(out)
        grad[..., -1, :] = torch.randn(n, c, ow).to(torch.bfloat16)
        gx = mp._backward(grad, x, idx, *args)
    (gref,) = torch.autograd.grad(ref, tail, grad[..., -1:, :])
    # The last 3 blocks of the backward cover the last 512 grad_input elements (NCHW) or
    # the last 64 pixels (NHWC: 8 channels each).
    cols = last if layout == "contiguous" else last // c
    torch.testing.assert_close(gx[..., -1, -cols:], gref[..., -1, -cols:], **TOL[torch.bfloat16])
