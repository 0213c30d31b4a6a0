"""dropout with an explicit seed: the mask against an independent Philox4x32-10 in Python,
values against input * mask / (1 - p) computed by torch, every layout, NaN/Inf, p = 0 and 1,
the keep rate, gradients, opcheck, torch.compile, and the Python entry's torch semantics."""

import math
import zlib

import pytest
import torch
import torch.nn.functional as F

import emu_support
import fastlayers.functional as FF
from conftest import DEVICES, HAS_EMU, device_dtype_params, torch_device
from fastlayers.ops import dropout as do

DTYPES = {"cpu": do.CPU_DTYPES, "emu": do.CUDA_DTYPES, "cuda": do.CUDA_DTYPES}
HALF_DTYPES = {dev: [d for d in dts if d.itemsize == 2] for dev, dts in DTYPES.items()}
SEED_OFFSET = torch.tensor([0x1234_5678_9ABC_DEF, 1 << 40], dtype=torch.int64)
M32 = 0xFFFFFFFF


# ---------------------------------------------------------------------------------------
# Reference: Philox4x32-10 on int64 tensors (one lane per group of 4 elements), the keep
# rule of DropoutStream::keep4 (csrc/include/fastlayers/philox.h).


def _mulhilo(a, b):
    """(hi, lo) 32-bit words of a * b for 32-bit a (int64 tensor) and b (int), exact in int64."""
    t1 = a * (b & 0xFFFF)  # < 2^48
    t2 = a * (b >> 16)  # < 2^48
    s = t1 + ((t2 & 0xFFFF) << 16)
    return (t2 >> 16) + (s >> 32), s & M32


def _philox(c0, c1, k0, k1, c2=0, c3=0):
    """Philox4x32-10 of counters (c0, c1, c2, c3) (tensors or ints) with key (k0, k1)."""
    for _ in range(10):
        hi0, lo0 = _mulhilo(c0, 0xD2511F53)
        hi1, lo1 = _mulhilo(c2, 0xCD9E8D57)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0, k1 = (k0 + 0x9E3779B9) & M32, (k1 + 0xBB67AE85) & M32
    return c0, c1, c2, c3


def test_reference_philox_known_answers():
    """Random123's known-answer vectors, as csrc/tests/test_philox.cpp."""
    for c, k, want in [
        ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
        ((M32,) * 4, (M32, M32), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
        (
            (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
            (0xA4093822, 0x299F31D0),
            (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
        ),
    ]:
        c0, c1, c2, c3 = (torch.tensor([v]) for v in c)
        got = _philox(c0, c1, k[0], k[1], c2, c3)
        assert [int(w) for w in got] == list(want)


def ref_keep(elements: torch.Tensor, p: float, seed_offset=SEED_OFFSET) -> torch.Tensor:
    """Whether each element (flat logical index, int64 tensor) is kept."""
    seed, offset = (int(v) & (2**64 - 1) for v in seed_offset)
    n = (elements // 4 + offset) & (2**63 - 1)  # offsets and groups here stay below 2^63
    words = torch.stack(_philox(n & M32, n >> 32, seed & M32, seed >> 32), -1)
    r = words.gather(-1, (elements % 4)[..., None])[..., 0]
    keep_prob = torch.tensor(1.0 - p, dtype=torch.float32).item()
    return (r >> 8).double() * 2.0**-24 < keep_prob


def ref_mask(shape, p, seed_offset=SEED_OFFSET):
    n = math.prod(shape)
    return ref_keep(torch.arange(n), p, seed_offset).view(shape)


def expected(x: torch.Tensor, keep: torch.Tensor, p: float) -> torch.Tensor:
    """x * (1 / (1 - p)) where kept and x * 0 elsewhere, in float (double for double), rounded
    once to x's dtype: what the kernels compute."""
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    scale = torch.tensor(1.0 / (1.0 - p) if p < 1 else 0.0, dtype=acc)
    xa = x.cpu().to(acc)
    return torch.where(keep, xa * scale, xa * 0).to(x.dtype)


def assert_exact(out, want):
    torch.testing.assert_close(out.cpu(), want.cpu(), rtol=0, atol=0, equal_nan=True)


def make_input(shape, dtype, device, layout="contiguous"):
    """Random values in [0.5, 3.5) of either sign (never zero), in the given layout."""
    g = torch.Generator().manual_seed(zlib.crc32(repr((shape, layout)).encode()))

    def rand(*s):
        v = torch.rand(s, generator=g) * 3 + 0.5
        return torch.where(torch.rand(s, generator=g) < 0.5, -v, v).to(device, dtype)

    if layout == "contiguous":
        return rand(*shape)
    if layout == "transposed":  # dense, not contiguous
        return rand(*reversed(shape)).permute(*reversed(range(len(shape))))
    if layout == "channels_last":
        return rand(*shape).contiguous(memory_format=torch.channels_last)
    if layout == "strided":  # not dense: every other element of the last dimension
        return rand(*shape[:-1], 2 * shape[-1])[..., ::2]
    if layout == "offset":  # contiguous, 1 element past an aligned address
        return rand(math.prod(shape) + 1)[1:].view(shape)
    if layout == "expanded":  # stride 0 along the first dimension
        return rand(1, *shape[1:]).expand(shape)
    raise ValueError(layout)


CASES = [
    ((), "contiguous"),
    ((1,), "contiguous"),
    ((7,), "contiguous"),
    ((3, 17), "contiguous"),
    ((3, 17), "transposed"),
    ((3, 17), "strided"),
    ((3, 17), "offset"),
    ((4, 9), "expanded"),
    ((2, 5, 33), "transposed"),
    ((2, 5, 33), "strided"),
    ((2, 6, 5, 7), "channels_last"),
    ((3, 5, 4, 3), "channels_last"),
    ((2, 3, 5, 7), "strided"),
    ((64, 2, 3), "offset"),
    ((2,) * 10, "transposed"),  # more strided dimensions than the kernels take: copied
]


@pytest.mark.parametrize("device,dtype", device_dtype_params(DTYPES))
@pytest.mark.parametrize("shape,layout", CASES, ids=str)
def test_matches_reference(shape, layout, device, dtype):
    p = 0.3
    x = make_input(shape, dtype, torch_device(device), layout)
    out = do._op(x, p, SEED_OFFSET)
    assert out.shape == x.shape and out.dtype == dtype and out.device == x.device
    assert out.stride() == torch.empty_like(x).stride()  # the input's memory format, as torch
    assert_exact(out, expected(x, ref_mask(shape, p), p))


@pytest.mark.parametrize("device,dtype", device_dtype_params(DTYPES))
def test_empty(device, dtype):
    for shape in [(0,), (3, 0, 2)]:
        x = torch.empty(shape, dtype=dtype, device=torch_device(device))
        out = do._op(x, 0.5, SEED_OFFSET)
        assert out.shape == x.shape and out.dtype == dtype
        assert do.dropout(x, 0.5) is x  # as torch


@pytest.mark.parametrize("device,dtype", device_dtype_params(DTYPES))
def test_nonfinite_like_torch(device, dtype):
    """NaN and Inf are multiplied by the mask: NaN wherever dropped, as torch's input * mask."""
    x = make_input((5, 8), dtype, torch_device(device))
    x[0, :4] = float("nan")
    x[1, :4] = float("inf")
    x[2, :4] = float("-inf")
    for p in (0.0, 0.5, 1.0):
        out = do._op(x, p, SEED_OFFSET)
        keep = ref_mask(x.shape, p)
        assert_exact(out, expected(x, keep, p))
        if p == 0.5:
            assert keep[:3, :4].any() and not keep[:3, :4].all()  # the case covers both
    assert_exact(do._op(x, 1.0, SEED_OFFSET), F.dropout(x, 1.0))  # x * 0: NaN at NaN and Inf
    copy = do._op(x, 0.0, SEED_OFFSET)
    assert copy.data_ptr() != x.data_ptr()
    assert_exact(copy, x)


@pytest.mark.parametrize("device,dtype", device_dtype_params(HALF_DTYPES))
def test_every_16_bit_pattern(device, dtype):
    """float16 and bfloat16 in and out of the compute type: every bit pattern (subnormals,
    overflow to Inf on scaling, NaN), against torch's conversions. Scaling by 1.5 (p = 1/3)
    makes many products ties, which round to even."""
    bits = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16)
    x = bits.view(dtype).to(torch_device(device))
    for p in (0.0, 0.3, 1 / 3):
        assert_exact(do._op(x, p, SEED_OFFSET), expected(x, ref_mask(x.shape, p), p))


@pytest.mark.parametrize("device", DEVICES)
def test_seed_and_offset_select_the_mask(device):
    x = make_input((13, 11), torch.float32, torch_device(device))
    a = do._op(x, 0.5, SEED_OFFSET)
    assert torch.equal(a, do._op(x, 0.5, SEED_OFFSET.clone()))
    seed, offset = SEED_OFFSET.tolist()
    for other in ([seed + 1, offset], [seed, offset + 1]):
        b = do._op(x, 0.5, torch.tensor(other))
        assert not torch.equal(a != 0, b != 0)
        assert_exact(b, expected(x, ref_mask(x.shape, 0.5, torch.tensor(other)), 0.5))


@pytest.mark.skipif(not HAS_EMU, reason="FASTLAYERS_EMU=0")
@pytest.mark.parametrize("dtype", do.CUDA_DTYPES, ids=str)
def test_cpu_and_emu_give_the_same_bits(dtype):
    x = make_input((3, 37, 5), dtype, "cpu", "transposed")
    cpu = do._op(x, 0.4, SEED_OFFSET)
    with emu_support.emulated():
        emu = emu_support.race_check(lambda: do._op(x, 0.4, SEED_OFFSET))[0]
        emu_dense = emu_support.race_check(lambda: do._op(x.contiguous(), 0.4, SEED_OFFSET))[0]
    assert torch.equal(cpu, emu) and torch.equal(cpu, emu_dense)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("device", DEVICES)
def test_keep_rate(device, p):
    n = 1 << 14 if device == "emu" else 1 << 22
    x = make_input((n,), torch.float32, torch_device(device))
    kept = (do._op(x, p, SEED_OFFSET) != 0).sum().item()
    sigma = math.sqrt(n * p * (1 - p))
    assert abs(kept - n * (1 - p)) <= 5 * sigma, (kept, n * (1 - p), sigma)


def test_cpu_result_does_not_depend_on_the_thread_count():
    x = make_input((1 << 20,), torch.bfloat16, "cpu", "strided")
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = do._op(x, 0.5, SEED_OFFSET)
        torch.set_num_threads(max(2, threads))
        many = do._op(x, 0.5, SEED_OFFSET)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, many)


@pytest.mark.parametrize("device,dtype", device_dtype_params(DTYPES))
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_backward_uses_the_forward_mask(device, dtype, layout):
    p = 0.6
    x = make_input((2, 3, 5, 7), dtype, torch_device(device), layout).requires_grad_()
    torch.manual_seed(7)
    out = do.dropout(x, p)
    keep = out.detach() != 0  # x is never zero
    grad = make_input((2, 3, 5, 7), dtype, torch_device(device), "transposed")
    (gx,) = torch.autograd.grad(out, x, grad)
    assert_exact(gx, expected(grad, keep.cpu(), p))
    assert_exact(out, expected(x.detach(), keep.cpu(), p))
    # The seed the entry drew is torch's: the same manual_seed gives the same mask.
    torch.manual_seed(7)
    assert_exact(do.dropout(x.detach(), p), out.detach())


def test_gradcheck_and_opcheck_cpu():
    x = torch.randn(4, 3, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: do._op(t, 0.3, SEED_OFFSET), (x,))
    assert torch.autograd.gradgradcheck(lambda t: do._op(t, 0.3, SEED_OFFSET), (x,))
    for t in [
        torch.randn(4, 3, 5, requires_grad=True),
        torch.randn(2, 6, 5, 3).to(memory_format=torch.channels_last).requires_grad_(),
        torch.randn(6, 5).t().requires_grad_(),
        torch.randn(3, 8)[:, ::2].detach().requires_grad_(),
        torch.randn(7, dtype=torch.bfloat16),
    ]:
        torch.library.opcheck(do._op, (t, 0.5, SEED_OFFSET))


def test_torch_compile_fullgraph_matches_eager():
    torch._dynamo.reset()

    def fn(t):
        return do.dropout(t * 2, 0.25) + FF.dropout(t, p=0.5, training=True)

    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    x = torch.randn(6, 7, requires_grad=True)
    torch.manual_seed(3)
    out = compiled(x)
    torch.manual_seed(3)
    ref = fn(x)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    (g,) = torch.autograd.grad(out.sum(), x)
    (gr,) = torch.autograd.grad(ref.sum(), x)
    torch.testing.assert_close(g, gr, rtol=0, atol=0)


def test_entry_follows_torch_generator():
    x = torch.randn(100)
    torch.manual_seed(1)
    a = do.dropout(x, 0.5)
    torch.manual_seed(1)
    assert torch.equal(a, do.dropout(x, 0.5))
    assert not torch.equal(a, do.dropout(x, 0.5))  # the next draw: another mask
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(do.dropout(x, 0.5, generator=g1), do.dropout(x, 0.5, generator=g2))


def test_functional_matches_torch_semantics():
    x = torch.randn(5, 6)
    assert FF.dropout(x, 0.5, training=False) is x
    assert FF.dropout(x, 0.0) is x
    assert torch.equal(FF.dropout(x, 1.0), F.dropout(x, 1.0))
    torch.manual_seed(2)
    ref = FF.dropout(x, 0.5)
    y = x.clone()
    torch.manual_seed(2)
    assert FF.dropout(y, 0.5, inplace=True) is y
    assert torch.equal(y, ref)
    scale = torch.tensor(2.0)
    kept = ref != 0
    assert 0 < kept.sum() < x.numel() and torch.equal(ref[kept], x[kept] * scale)


def test_bad_arguments_name_them():
    x = torch.randn(4)
    for p in (-0.1, 1.5, float("nan")):
        with pytest.raises(RuntimeError, match="dropout: p must be in"):
            do._op(x, p, SEED_OFFSET)
    for p in (-0.1, 1.5):
        with pytest.raises(ValueError, match=f"dropout probability has to be between 0 and 1, but got {p}"):
            do.dropout(x, p)
        with pytest.raises(ValueError, match="dropout probability"):
            FF.dropout(x, p, training=False)  # checked even when not training, as torch
    for so in (torch.tensor([1, 2], dtype=torch.int32), torch.tensor([1, 2, 3]), torch.tensor(5)):
        with pytest.raises(RuntimeError, match="dropout: seed_offset must be an int64 tensor of 2 elements"):
            do._op(x, 0.5, so)
    with pytest.raises(RuntimeError, match="dropout: input must have dtype"):
        do._op(torch.arange(4), 0.5, SEED_OFFSET)


@pytest.mark.skipif(not HAS_EMU, reason="FASTLAYERS_EMU=0")
@pytest.mark.parametrize("layout", ["contiguous", "transposed"])
def test_emu_index_math_past_2_31(layout):
    """A bfloat16 input of about 3 * 2^30 elements (lazily allocated: only what the kernels
    touch is ever backed). Only the last 3 blocks of the launch run; with at most 2^20
    blocks of 256 threads striding over the groups of 4 elements, or a block per 256
    groups, they cover the last 256 groups (the size is chosen so), whose elements must
    match the reference."""
    rows, cols = 3, 2**30 - 401
    n = rows * cols  # 3 * 2^28 - 300 groups, the last one partial
    assert n > 2**31 and n % 4 == 1
    if layout == "contiguous":
        x = torch.empty(rows, cols, dtype=torch.bfloat16)
    else:  # dense, not contiguous (memory order column-major): the strided kernel
        x = torch.empty(cols, rows, dtype=torch.bfloat16).t()
    last = 1021  # the last 256 groups
    tail = make_input((last,), torch.bfloat16, "cpu")
    x[-1, -last:] = tail
    with emu_support.emulated(), emu_support.blocks(-3):
        out = do._op(x, 0.5, SEED_OFFSET)
    keep = ref_keep(torch.arange(n - last, n), 0.5)
    assert_exact(out[-1, -last:], expected(tail, keep, 0.5))
