"""softmax against torch.nn.functional.softmax in float64, any dim, forward and backward."""

import pytest
import torch
import torch.nn.functional as F

import emu_support
import fastlayers
import fastlayers.functional as FF
from conftest import DEVICES, HAS_EMU, device_dtype_params, torch_device
from fastlayers.ops import softmax as sm

DTYPES = {"cpu": sm.CPU_DTYPES, "emu": sm.CUDA_DTYPES, "cuda": sm.CUDA_DTYPES}


CASES = [
    ((7,), 0),
    ((3, 17), -1),
    ((3, 17), 0),
    ((2, 5, 33), 1),
    ((2, 5, 33), 2),
    ((4, 3, 9, 13), 1),
    ((4, 3, 9, 13), -1),
    ((2, 1, 6), 1),
    ((1000, 3), 1),
    ((3, 1025), 1),
    ((0, 5), 1),
    ((5, 0), 1),
    ((), 0),
]


def _input(shape, dtype, layout="contiguous", seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    if layout == "transposed" and len(shape) >= 2:
        x = (torch.randn(*reversed(shape), generator=g) * 3).to(device, dtype)
        return x.t() if len(shape) == 2 else x.permute(*reversed(range(len(shape))))
    return (torch.randn(shape, generator=g) * 3).to(device, dtype)


@pytest.mark.parametrize("device,dtype", device_dtype_params(DTYPES))
@pytest.mark.parametrize("layout", ["contiguous", "transposed"])
@pytest.mark.parametrize("shape,dim", CASES, ids=str)
def test_matches_torch(shape, dim, layout, device, dtype):
    x = _input(shape, dtype, layout, device=torch_device(device)).requires_grad_()
    out = FF.softmax(x, dim)
    xr = x.detach().double().requires_grad_()
    ref = F.softmax(xr, dim)
    assert out.shape == ref.shape and out.dtype == dtype
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(x.device, dtype)
    if out.numel():
        (gx,) = torch.autograd.grad(out, x, g)
        (gr,) = torch.autograd.grad(ref, xr, g.double())
    if dtype == torch.float64:
        torch.testing.assert_close(out, ref)
        if out.numel():
            torch.testing.assert_close(gx, gr)
        return
    xt = x.detach().requires_grad_()
    tout = F.softmax(xt, dim)

    def err(a, b):
        return (a.double() - b.double()).abs().max().item() if a.numel() else 0.0

    assert err(out, ref) <= 2 * err(tout, ref) + 1e-6
    if out.numel():
        (gt,) = torch.autograd.grad(tout, xt, g)
        assert err(gx, gr) <= 2 * err(gt, gr) + 1e-6


@pytest.mark.parametrize("device", DEVICES)
def test_nonfinite_rows_like_torch(device):
    dtype = torch.float64 if device == "cpu" else torch.float32
    x = torch.randn(4, 6, dtype=dtype, device=torch_device(device))
    x[0, 2] = float("nan")
    x[1] = float("-inf")
    x[2, 3] = float("inf")
    x[3, :3] = float("-inf")
    torch.testing.assert_close(FF.softmax(x, 1), F.softmax(x, 1), equal_nan=True)
    torch.testing.assert_close(FF.softmax(x.t().contiguous(), 0), F.softmax(x.t().contiguous(), 0), equal_nan=True)


def test_implicit_dim_and_dtype_like_torch():
    x = torch.randn(2, 3, 4)
    with pytest.warns(UserWarning, match="Implicit dimension choice"):
        ours = FF.softmax(x)
    with pytest.warns(UserWarning):
        ref = F.softmax(x)
    torch.testing.assert_close(ours, ref)
    out = FF.softmax(x, -1, dtype=torch.float64)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, F.softmax(x, -1, dtype=torch.float64))


def test_bad_dim_raises_like_torch():
    x = torch.randn(2, 3)
    with pytest.raises(IndexError, match="Dimension out of range"):
        FF.softmax(x, 2)


@pytest.mark.parametrize("shape,dim", [((3, 5), 1), ((2, 4, 3), 1), ((4,), 0)], ids=str)
def test_gradcheck_and_opcheck_cpu(shape, dim):
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: FF.softmax(t, dim), (x,))
    torch.library.opcheck(sm._forward, (x.float().detach().requires_grad_(), dim))
    y = sm._forward(x.float().detach(), dim)
    torch.library.opcheck(sm._backward, (torch.randn_like(y), y, dim))


def test_module_is_a_drop_in():
    ref, ours = torch.nn.Softmax(dim=1), fastlayers.nn.Softmax(dim=1)
    assert isinstance(ours, torch.nn.Softmax) and repr(ours) == repr(ref)
    assert ours.state_dict().keys() == ref.state_dict().keys()
    x = torch.randn(3, 7, 2)
    torch.testing.assert_close(ours(x), ref(x))
    assert fastlayers.nn.Softmax.from_torch(torch.nn.Softmax(-1)).dim == -1


def test_torch_compile_fullgraph_matches_eager():
    torch._dynamo.reset()
    compiled = torch.compile(lambda t: FF.softmax(t, -1) * 2, fullgraph=True, backend="aot_eager")
    x = torch.randn(4, 9, requires_grad=True)
    torch.testing.assert_close(compiled(x), FF.softmax(x, -1) * 2, rtol=0, atol=0)


@pytest.mark.skipif(not HAS_EMU, reason="FASTLAYERS_EMU=0")
@pytest.mark.parametrize("shape,dim", [((37, 70), 1), ((3, 40, 5), 1)], ids=str)
def test_emu_race_mode(shape, dim):
    """The CUDA kernels give the same bits whatever order their threads run in."""
    with emu_support.emulated():
        x = torch.randn(shape)
        (y,) = emu_support.race_check(lambda: sm._forward(x, dim))
        g = torch.randn_like(y)
        emu_support.race_check(lambda: sm._backward(g, y, dim))
