"""Positional encodings: the sinusoidal kernel against a float64 table, both modules."""

import math

import pytest
import torch

import fastlayers
from conftest import device_dtype_params, torch_device
from fastlayers.ops import positional_encoding as pe

DTYPES = {"cpu": pe.CPU_DTYPES, "emu": pe.CUDA_DTYPES, "cuda": pe.CUDA_DTYPES}


def _tutorial_table(length, d_model):
    """The PyTorch Transformer tutorial's table, in float64 (a second, independent source)."""
    position = torch.arange(length, dtype=torch.float64).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float64) * (-math.log(10000.0) / d_model))
    table = torch.zeros(length, d_model, dtype=torch.float64)
    table[:, 0::2] = torch.sin(position * div_term)
    table[:, 1::2] = torch.cos(position * div_term[: d_model // 2])
    return table


@pytest.mark.parametrize("d_model", [1, 7, 64, 130])
def test_table_matches_the_tutorial(d_model):
    torch.testing.assert_close(pe.sinusoidal_table(300, d_model, torch.float64), _tutorial_table(300, d_model))


@pytest.mark.parametrize("device,dtype", device_dtype_params(DTYPES))
@pytest.mark.parametrize(
    "shape,seq_dim", [((37, 5, 64), 0), ((5, 37, 64), 1), ((37, 9), 0), ((2, 3, 11, 4, 6), 2), ((0, 3, 8), 0)], ids=str
)
def test_kernel_adds_the_encoding(shape, seq_dim, device, dtype):
    x = torch.randn(shape).to(torch_device(device), dtype)
    if len(shape) == 3:
        x = x.transpose(0, 1).contiguous().transpose(0, 1)  # non-contiguous input
    out = pe.add_positional_encoding(x, seq_dim)
    table = _tutorial_table(shape[seq_dim], shape[-1])
    ref = x.double() + table.to(x.device).view(shape[seq_dim], *([1] * (len(shape) - seq_dim - 2)), shape[-1])
    # One rounding of the sum to the dtype (float32: also of the encoding, to float).
    tol = {
        torch.bfloat16: dict(rtol=0, atol=8e-3 * 2),
        torch.float16: dict(rtol=0, atol=1e-3 * 2),
    }.get(dtype, dict(rtol=1e-6, atol=1e-6))
    torch.testing.assert_close(out.double(), ref, **tol)
    assert out.dtype == dtype


def test_gradient_is_identity_and_opcheck():
    x = torch.randn(5, 2, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: pe.add_positional_encoding(t, 0), (x,))
    torch.library.opcheck(pe._forward, (x.float().detach().requires_grad_(), 0))


@pytest.mark.parametrize("batch_first", [False, True])
def test_module(batch_first):
    m = fastlayers.nn.PositionalEncoding(16, max_len=50, batch_first=batch_first)
    assert len(m.state_dict()) == 0
    x = torch.randn(4, 10, 16) if batch_first else torch.randn(10, 4, 16)
    out = m(x)
    table = _tutorial_table(10, 16).float()
    ref = x + (table[None] if batch_first else table[:, None])
    torch.testing.assert_close(out, ref)
    assert m(x[0] if not batch_first else x[:, 0]).shape == (4, 16)  # unbatched (L, E)
    with pytest.raises(ValueError, match="max_len=50"):
        m(torch.randn(60, 2, 16) if not batch_first else torch.randn(2, 60, 16))
    with pytest.raises(ValueError, match="last dimension 16"):
        m(torch.randn(3, 2, 15))


def test_dropout_and_learned():
    m = fastlayers.nn.PositionalEncoding(8, dropout=0.5).train()
    out = m(torch.zeros(20, 3, 8))
    assert 0.3 < (out == 0).float().mean().item() < 0.7
    lm = fastlayers.nn.LearnedPositionalEncoding(8, max_len=30, batch_first=True)
    assert list(lm.state_dict()) == ["weight"] and lm.weight.shape == (30, 8)
    x = torch.randn(2, 12, 8, requires_grad=True)
    y = lm(x)
    torch.testing.assert_close(y, x + lm.weight[:12][None])
    y.sum().backward()
    assert lm.weight.grad[:12].abs().sum() > 0 and lm.weight.grad[12:].abs().sum() == 0
