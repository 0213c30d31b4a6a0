"""Seed models (fastlayers.models) against their torch.nn twins: logits, gradients, training
steps, predict_proba, state_dict keys and reset_parameters, on the CPU."""

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

import fastlayers
from conftest import TOL
from fastlayers.models import CNN, RNNClassifier, TorchPositionalEncoding, TransformerEncoder

DEVICE = "cpu"


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[], torch.nn.Module]
    input_shape: tuple
    num_classes: int

    def __str__(self):
        return self.name


# Small sizes: each model's depth, widths and options, a few at a time.
CASES = [
    Case("cnn", lambda: CNN(in_channels=2, num_classes=5, channels=(4, 6), hidden=16), (4, 2, 8, 8), 5),
    Case("cnn-k5-1stage", lambda: CNN(channels=(3,), kernel_size=5, image_size=7, hidden=8), (3, 1, 7, 7), 10),
    Case("cnn-k2-3stages", lambda: CNN(channels=(3, 4, 5), kernel_size=2, image_size=9, hidden=8), (2, 1, 9, 9), 10),
    Case("rnn", lambda: RNNClassifier(input_size=5, hidden_size=12, num_classes=4), (3, 6, 5), 4),
    Case(
        "rnn-relu-2layers-bidir",
        lambda: RNNClassifier(5, 7, num_layers=2, num_classes=3, nonlinearity="relu", bidirectional=True),
        (4, 5, 5),
        3,
    ),
    Case(
        "transformer",
        lambda: TransformerEncoder(5, d_model=16, nhead=2, num_layers=2, dim_feedforward=24, num_classes=4, max_len=9),
        (3, 7, 5),
        4,
    ),
    Case(
        "transformer-1layer",
        lambda: TransformerEncoder(3, d_model=8, nhead=4, num_layers=1, dim_feedforward=8, num_classes=2, max_len=4),
        (2, 4, 3),
        2,
    ),
]

# float64 as tight as one op; float32 looser, since a whole model's rounding errors add up.
MODEL_TOL = {torch.float64: TOL[torch.float64], torch.float32: dict(rtol=1e-4, atol=1e-5)}

FASTLAYERS_TYPES = (
    fastlayers.nn.Conv2d,
    fastlayers.nn.MaxPool2d,
    fastlayers.nn.RNN,
    fastlayers.nn.MultiheadAttention,
    fastlayers.nn.PositionalEncoding,
    fastlayers.nn.Softmax,
)
# The layers fastlayers replaces, as torch.nn has them (the twin may hold only these).
REPLACED_TYPES = (
    torch.nn.Conv2d,
    torch.nn.MaxPool2d,
    torch.nn.RNNBase,
    torch.nn.MultiheadAttention,
    TorchPositionalEncoding,
    torch.nn.Softmax,
)


def make(case: Case, dtype=torch.float64):
    """(fastlayers model, its torch twin, input, labels) on the CPU."""
    model = case.build().to(DEVICE, dtype)
    twin = model.torch_reference()
    x = torch.randn(case.input_shape, dtype=dtype, device=DEVICE)
    y = torch.randint(0, case.num_classes, (case.input_shape[0],), device=DEVICE)
    return model, twin, x, y


def assert_same_parameters(model, twin, attr=None, **tol):
    ours, ref = dict(model.named_parameters()), dict(twin.named_parameters())
    assert ours.keys() == ref.keys()
    for name, p in ours.items():
        a, b = (p, ref[name]) if attr is None else (getattr(p, attr), getattr(ref[name], attr))
        torch.testing.assert_close(a, b, **tol, msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_logits_and_gradients_match_torch(case, dtype):
    model, twin, x, y = make(case, dtype)
    x_ours, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    logits, ref_logits = model(x_ours), twin(x_ref)
    assert logits.shape == (case.input_shape[0], case.num_classes)
    torch.testing.assert_close(logits, ref_logits, **MODEL_TOL[dtype])
    F.cross_entropy(logits, y).backward()
    F.cross_entropy(ref_logits, y).backward()
    torch.testing.assert_close(x_ours.grad, x_ref.grad, **MODEL_TOL[dtype])
    assert_same_parameters(model, twin, "grad", **MODEL_TOL[dtype])


@pytest.mark.parametrize("case", CASES, ids=str)
def test_predict_proba(case):
    model, twin, x, _ = make(case)
    proba = model.predict_proba(x)
    assert proba.shape == (case.input_shape[0], case.num_classes)
    assert (proba >= 0).all()
    torch.testing.assert_close(proba.sum(-1), torch.ones(case.input_shape[0], dtype=x.dtype), **TOL[torch.float64])
    torch.testing.assert_close(proba, torch.softmax(model(x), -1), **TOL[torch.float64])
    # In eval mode without autograd torch's MultiheadAttention takes its fused fast path.
    model.eval()
    twin = model.torch_reference()
    assert not twin.training
    with torch.no_grad():
        torch.testing.assert_close(model.predict_proba(x), twin.predict_proba(x), **MODEL_TOL[torch.float64])


@pytest.mark.parametrize("case", CASES, ids=str)
def test_state_dict_and_layers(case):
    model, twin, _, _ = make(case)
    ours, ref = model.state_dict(), twin.state_dict()
    assert list(ours) == list(ref)
    for key, value in ours.items():
        assert value.shape == ref[key].shape and value.dtype == ref[key].dtype, key
        torch.testing.assert_close(value, ref[key], rtol=0, atol=0)
        assert value.data_ptr() != ref[key].data_ptr(), f"{key}: the twin shares this model's storage"
    # Every replaced layer is fastlayers' in the model, and torch's in the twin.
    replaced = [m for m in model.modules() if isinstance(m, REPLACED_TYPES)]
    assert replaced and all(isinstance(m, FASTLAYERS_TYPES) for m in replaced)
    assert not any(type(m).__module__.startswith("fastlayers.nn") for m in twin.modules())
    assert [name for name, _ in twin.named_modules()] == [name for name, _ in model.named_modules()]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_torch_reference_copies_device_dtype_and_mode(dtype):
    model = TransformerEncoder(4, d_model=8, nhead=2, num_layers=1, dim_feedforward=8, max_len=8).to(dtype).eval()
    state = torch.random.get_rng_state()
    twin = model.torch_reference()
    assert torch.equal(torch.random.get_rng_state(), state), "building the twin drew random numbers"
    assert not twin.training and not any(m.training for m in twin.modules())
    assert {(p.device.type, p.dtype) for p in twin.parameters()} == {(DEVICE, dtype)}
    with torch.no_grad():
        next(twin.parameters()).add_(1.0)
    assert not torch.equal(next(twin.parameters()), next(model.parameters()))
    assert model.train().torch_reference().training


@pytest.mark.parametrize("case", CASES, ids=str)
def test_training_steps_stay_equal(case):
    model, twin, _, _ = make(case)
    initial = [p.detach().clone() for p in model.parameters()]
    opts = [torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in (model, twin)]
    for _ in range(3):
        x = torch.randn(case.input_shape, dtype=torch.float64)
        y = torch.randint(0, case.num_classes, (case.input_shape[0],))
        for m, opt in zip((model, twin), opts, strict=True):
            opt.zero_grad()
            F.cross_entropy(m(x), y).backward()
            opt.step()
    assert_same_parameters(model, twin, **MODEL_TOL[torch.float64])
    assert all(not torch.equal(p, p0) for p, p0 in zip(model.parameters(), initial, strict=True))


@pytest.mark.parametrize("case", CASES, ids=str)
def test_reset_parameters(case):
    model = case.build().double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5)  # so parameters initialised to constants (biases, norms) change too
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.reset_parameters()
    for key, value in model.state_dict().items():
        assert not torch.equal(value, before[key]), f"{key} was not re-initialised"
    for m in model.modules():
        if isinstance(m, torch.nn.MultiheadAttention):  # torch's init: zero projection biases
            assert torch.count_nonzero(m.in_proj_bias) == 0 and torch.count_nonzero(m.out_proj.bias) == 0
        if isinstance(m, torch.nn.LayerNorm):
            assert torch.equal(m.weight, torch.ones_like(m.weight)) and torch.equal(m.bias, torch.zeros_like(m.bias))
    twin = model.torch_reference()
    twin.reset_parameters()
    assert list(twin.state_dict()) == list(model.state_dict())


def test_defaults_fit_the_digits():
    """The default models take sklearn's 8x8 digits: images, or rows as 8 steps of 8 features."""
    images = torch.randn(5, 1, 8, 8)
    assert CNN()(images).shape == (5, 10)
    assert RNNClassifier()(images.squeeze(1)).shape == (5, 10)
    assert TransformerEncoder()(images.squeeze(1)).shape == (5, 10)


def test_bad_configurations_raise():
    with pytest.raises(ValueError, match="too small"):
        CNN(channels=(4, 4, 4, 4), image_size=8)
    with pytest.raises(ValueError, match="at least one"):
        CNN(channels=())
    with pytest.raises(ValueError, match="exceeds max_len"):
        TransformerEncoder(max_len=4)(torch.randn(2, 5, 8))
    with pytest.raises(ValueError, match="exceeds max_len"):
        TransformerEncoder(max_len=4).torch_reference()(torch.randn(2, 5, 8))
