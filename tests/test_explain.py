"""fastlayers.explain against Captum on the seed models (fastlayers.models; small stand-ins
built here from fastlayers layers where it is absent), in float64 on the CPU. Strict mode
(conftest) makes any torch fallback an error, so every forward and backward runs the
fastlayers kernels."""

import io
import math

import pytest
import torch

import fastlayers
from fastlayers import explain

captum_attr = pytest.importorskip("captum.attr")

N = 4
TARGET = torch.tensor([1, 4, 7, 2])
MODELS = ("cnn", "rnn", "transformer")
# Captum rounds IG step sizes to float32 and builds riemann alphas with a float32 linspace; the
# brief's bound is 1e-5 relative (the differences seen are below 1e-7).
RTOL = 1e-5


class _StandInCNN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.pool1 = fastlayers.nn.Conv2d(1, 8, 3, padding=1), fastlayers.nn.MaxPool2d(2)
        self.conv2, self.pool2 = fastlayers.nn.Conv2d(8, 16, 3, padding=1), fastlayers.nn.MaxPool2d(2)
        self.fc = torch.nn.Linear(16 * 2 * 2, 10)

    def forward(self, x):
        x = self.pool1(torch.relu(self.conv1(x)))
        return self.fc(self.pool2(torch.relu(self.conv2(x))).flatten(1))


class _StandInRNN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = fastlayers.nn.RNN(8, 32, batch_first=True)
        self.fc = torch.nn.Linear(32, 10)

    def forward(self, x):
        return self.fc(self.rnn(x)[1][-1])


class _StandInTransformer(torch.nn.Module):
    """Two post-norm self-attention blocks (two, so that rollout multiplies through layers)."""

    def __init__(self, d=32, heads=4, blocks=2):
        super().__init__()
        self.proj = torch.nn.Linear(8, d)
        self.pos = fastlayers.nn.PositionalEncoding(d, batch_first=True)
        self.attn = torch.nn.ModuleList(
            fastlayers.nn.MultiheadAttention(d, heads, batch_first=True) for _ in range(blocks)
        )
        self.norm = torch.nn.ModuleList(torch.nn.LayerNorm(d) for _ in range(blocks))
        self.head = torch.nn.Linear(d, 10)

    def forward(self, x):
        x = self.pos(self.proj(x))
        for attn, norm in zip(self.attn, self.norm, strict=True):
            x = norm(x + attn(x, x, x, need_weights=False)[0])
        return self.head(x.mean(1))


def _model(name: str) -> torch.nn.Module:
    """The seed model `name` (default configuration) in float64 and eval mode."""
    try:
        from fastlayers import models
    except ImportError:
        models = None
    if models is not None:
        m = {"cnn": models.CNN, "rnn": models.RNNClassifier, "transformer": models.TransformerEncoder}[name]()
    else:
        m = {"cnn": _StandInCNN, "rnn": _StandInRNN, "transformer": _StandInTransformer}[name]()
    return m.double().eval()


def _inputs(name: str, n: int = N) -> torch.Tensor:
    shape = (n, 1, 8, 8) if name == "cnn" else (n, 8, 8)
    return torch.randn(shape, dtype=torch.float64)


def _assert_close_rel(ours, ref, rtol=RTOL):
    """Agreement to rtol relative to the reference's largest magnitude."""
    torch.testing.assert_close(ours, ref, rtol=rtol, atol=rtol * float(ref.abs().max()))


def _gap(model, x, baseline):
    """F(x) - F(baseline) for the target classes TARGET."""
    with torch.no_grad():
        return (model(x) - model(baseline)).gather(1, TARGET[:, None])[:, 0]


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("abs_", [True, False], ids=["abs", "signed"])
def test_saliency_matches_captum(name, abs_):
    model, x = _model(name), _inputs(name)
    ref = captum_attr.Saliency(model).attribute(x.clone().requires_grad_(), target=TARGET, abs=abs_)
    ours = explain.saliency(model, x, TARGET, abs=abs_)
    assert ours.shape == x.shape and not ours.requires_grad
    _assert_close_rel(ours, ref)
    # An int target is the same class for every sample.
    ref3 = captum_attr.Saliency(model).attribute(x.clone().requires_grad_(), target=3, abs=abs_)
    _assert_close_rel(explain.saliency(model, x, 3, abs=abs_), ref3)
    assert not torch.equal(ours, explain.saliency(model, x, 3, abs=abs_))


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("method", ["gausslegendre", "riemann_trapezoid"])
def test_integrated_gradients_matches_captum(name, method):
    model, x = _model(name), _inputs(name)
    ref, ref_delta = captum_attr.IntegratedGradients(model).attribute(
        x, target=TARGET, method=method, return_convergence_delta=True
    )
    ours, delta = explain.integrated_gradients(model, x, TARGET, method=method, return_convergence_delta=True)
    assert ours.shape == x.shape and delta.shape == (N,)
    _assert_close_rel(ours, ref)
    torch.testing.assert_close(delta, ref_delta, rtol=0, atol=RTOL * float(ref.flatten(1).abs().sum(1).max()))
    # The delta is the completeness error: sum of attributions minus F(x) - F(0).
    torch.testing.assert_close(delta, ours.flatten(1).sum(1) - _gap(model, x, torch.zeros_like(x)))


@pytest.mark.parametrize(
    "kind",
    ["scalar", "per_sample", "one_for_all", "unbatched"],
)
def test_integrated_gradients_baselines(kind):
    model, x = _model("cnn"), _inputs("cnn")
    g = torch.Generator().manual_seed(1)
    base = {
        "scalar": 0.25,
        "per_sample": torch.randn(x.shape, generator=g, dtype=x.dtype),
        "one_for_all": torch.randn((1, *x.shape[1:]), generator=g, dtype=x.dtype),
        "unbatched": torch.randn(x.shape[1:], generator=g, dtype=x.dtype),
    }[kind]
    ours, delta = explain.integrated_gradients(model, x, TARGET, baselines=base, return_convergence_delta=True)
    # Captum takes a scalar, or a tensor with a batch dimension of N or 1.
    cap_base = base.unsqueeze(0) if kind == "unbatched" else base
    ref, ref_delta = captum_attr.IntegratedGradients(model).attribute(
        x, baselines=cap_base, target=TARGET, return_convergence_delta=True
    )
    _assert_close_rel(ours, ref)
    torch.testing.assert_close(delta, ref_delta, rtol=0, atol=1e-9)
    full = torch.broadcast_to(torch.as_tensor(base, dtype=x.dtype), x.shape)
    torch.testing.assert_close(delta, ours.flatten(1).sum(1) - _gap(model, x, full))


# The bound on mean |delta| / mean |F(x) - F(0)| at 50 Gauss-Legendre steps. The CNN (ReLU, max
# pooling, linear layers) is piecewise linear, so along the path its gradient is piecewise
# constant and the quadrature error falls only as O(1/n) (1-2.5 % at 50 steps over seeds 0-3);
# the RNN (tanh) is smooth, and the Transformer's ReLUs sit between LayerNorms and softmaxes
# (under 0.5 % there).
COMPLETENESS_RTOL = {"cnn": 5e-2, "rnn": 1e-2, "transformer": 1e-2}


@pytest.mark.parametrize("name", MODELS)
def test_integrated_gradients_completeness(name):
    """|delta| is small at 50 steps and shrinks from 5 to 20 to 80 steps. Means over 8 samples:
    where the integrand has kinks the error of one sample is not monotone in n. Above the
    float64 floor (the RNN's error reaches it by 20 steps), 80 steps may be up to 25 % worse
    than 20 but must be 4x better than 5."""
    model, x = _model(name), _inputs(name, 2 * N)
    target = TARGET.repeat(2)

    def err(n_steps):
        _, delta = explain.integrated_gradients(model, x, target, n_steps=n_steps, return_convergence_delta=True)
        return float(delta.abs().mean())

    with torch.no_grad():
        gap = (model(x) - model(torch.zeros_like(x))).gather(1, target[:, None]).abs().mean()
    assert err(50) <= COMPLETENESS_RTOL[name] * gap
    e5, e20, e80 = err(5), err(20), err(80)
    floor = 1e-12
    assert e20 < e5 and e80 <= 1.25 * e20 + floor and (e80 < e5 / 4 or e5 < floor), (e5, e20, e80)


def _count_rows(model):
    """A forward pre-hook recording each call's batch size; returns (list, handle)."""
    rows = []
    handle = model.register_forward_pre_hook(lambda m, args: rows.append(args[0].shape[0]))
    return rows, handle


@pytest.mark.parametrize("name", MODELS)
def test_integrated_gradients_chunking(name, monkeypatch):
    """internal_batch_size=None: one chunk under the default budget; with the budget cut to 7
    copies' worth, 7 steps per chunk (20 = 7 + 7 + 6); both as an explicit small
    internal_batch_size (3 steps per chunk) and as captum's chunked result."""
    model, x = _model(name), _inputs(name)
    n_steps = 20
    explicit = explain.integrated_gradients(model, x, TARGET, n_steps=n_steps, internal_batch_size=3 * N)
    ref = captum_attr.IntegratedGradients(model).attribute(x, target=TARGET, n_steps=n_steps, internal_batch_size=3 * N)
    _assert_close_rel(explicit, ref)

    rows, handle = _count_rows(model)
    auto = explain.integrated_gradients(model, x, TARGET, n_steps=n_steps)
    assert rows == [N, n_steps * N]  # the memory probe, then every step at once
    torch.testing.assert_close(auto, explicit, rtol=1e-12, atol=1e-14)

    per_copy = explain._bytes_per_copy(model, x)
    assert per_copy > 2 * x.numel() * x.element_size()
    monkeypatch.setattr(explain, "MEMORY_BUDGET_BYTES", 7 * per_copy + per_copy // 2)
    rows.clear()
    small = explain.integrated_gradients(model, x, TARGET, n_steps=n_steps)
    handle.remove()
    assert rows == [N, 7 * N, 7 * N, 6 * N]
    torch.testing.assert_close(small, explicit, rtol=1e-12, atol=1e-14)


def test_smoothgrad():
    model, x = _model("cnn"), _inputs("cnn")
    nt = 6

    def run(seed, **kw):
        return explain.smoothgrad(model, x, TARGET, nt_samples=nt, generator=torch.Generator().manual_seed(seed), **kw)

    rows, handle = _count_rows(model)
    first = run(5)
    assert sum(rows[1:]) == nt * N  # after the memory probe: nt noisy copies of the batch
    handle.remove()
    torch.testing.assert_close(run(5), first, rtol=0, atol=0)
    assert not torch.equal(run(6), first)

    # The documented draw: one randn of [nt, *x.shape], scaled by 0.15 of each sample's range.
    for relative, abs_ in ((True, True), (False, False)):
        noise = torch.randn((nt, *x.shape), generator=torch.Generator().manual_seed(5), dtype=x.dtype)
        span = x.flatten(1).amax(1) - x.flatten(1).amin(1)
        sigma = 0.15 * span.view(N, 1, 1, 1) if relative else 0.15
        expected = sum(explain.saliency(model, x + noise[i] * sigma, TARGET, abs=abs_) for i in range(nt)) / nt
        ours = run(5, relative=relative, abs=abs_, internal_batch_size=2 * N)
        torch.testing.assert_close(ours, expected, rtol=1e-12, atol=1e-14)
    # Without noise it is saliency; captum's NoiseTunnel agrees there.
    plain = explain.smoothgrad(model, x, TARGET, nt_samples=3, stdevs=0.0)
    torch.testing.assert_close(plain, explain.saliency(model, x, TARGET), rtol=1e-12, atol=1e-14)
    nt_ref = captum_attr.NoiseTunnel(captum_attr.Saliency(model)).attribute(
        x.clone().requires_grad_(), nt_type="smoothgrad", nt_samples=3, stdevs=0.0, target=TARGET
    )
    _assert_close_rel(plain, nt_ref)


def _mha_inputs(model):
    """Forward pre-hooks recording each fastlayers MultiheadAttention's (module, query, key, value)."""
    seen, handles = [], []
    for m in model.modules():
        if isinstance(m, fastlayers.nn.MultiheadAttention):
            handles.append(
                m.register_forward_pre_hook(
                    lambda mod, args, kwargs: seen.append((mod, *(args + tuple(kwargs.values()))[:3])),
                    with_kwargs=True,
                )
            )
    return seen, handles


def test_attention_maps_match_torch(monkeypatch):
    model, x = _model("transformer"), _inputs("transformer")
    expected_logits = model(x)
    seen, handles = _mha_inputs(model)
    probs_calls = []
    kernel = fastlayers.ops.attention.attention_probs
    monkeypatch.setattr(
        fastlayers.ops.attention,
        "attention_probs",
        lambda *a, **k: probs_calls.append(1) or kernel(*a, **k),
    )
    maps = explain.attention_maps(model, x)
    for h in handles:
        h.remove()
    layers = [m for m in model.modules() if isinstance(m, fastlayers.nn.MultiheadAttention)]
    assert len(maps) == len(layers) == len(seen) == len(probs_calls)  # each map from the LSE kernel
    for w, (mod, q, k, v) in zip(maps, seen, strict=True):
        assert w.shape == (N, mod.num_heads, 8, 8)
        torch.testing.assert_close(w.sum(-1), torch.ones(N, mod.num_heads, 8, dtype=w.dtype))
        ref = torch.nn.MultiheadAttention(mod.embed_dim, mod.num_heads, batch_first=True, dtype=torch.float64).eval()
        ref.load_state_dict(mod.state_dict())
        _, ref_w = ref(q, k, v, need_weights=True, average_attn_weights=False)
        torch.testing.assert_close(w, ref_w, rtol=1e-10, atol=1e-12)
    # The hooks are gone and the model computes what it did.
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in layers)
    torch.testing.assert_close(model(x), expected_logits, rtol=0, atol=0)


def test_attention_maps_return_what_the_caller_asked():
    mha = fastlayers.nn.MultiheadAttention(16, 4, dtype=torch.float64).eval()
    q = torch.randn(5, 2, 16, dtype=torch.float64)  # sequence-first [L, N, E]
    results = []

    class Caller(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.mha = mha

        def forward(self, x):
            results.append(self.mha(x, x, x))  # the default: weights averaged over heads
            results.append(self.mha(x[:, 0], x[:, 0], x[:, 0], need_weights=False))  # unbatched
            return results[-1][0]

    maps = explain.attention_maps(Caller(), q)
    (out, avg), (_, none) = results
    assert none is None and avg.shape == (2, 5, 5)
    torch.testing.assert_close(avg, maps[0].mean(1), rtol=0, atol=0)
    torch.testing.assert_close(out, mha(q, q, q)[0], rtol=0, atol=0)
    assert maps[0].shape == (2, 4, 5, 5) and maps[1].shape == (1, 4, 5, 5)
    with pytest.raises(ValueError, match="no fastlayers.nn.MultiheadAttention"):
        explain.attention_maps(torch.nn.Linear(2, 2), torch.zeros(1, 2))


def test_attention_rollout():
    model, x = _model("transformer"), _inputs("transformer")
    maps = explain.attention_maps(model, x)
    rollout = explain.attention_rollout(maps)
    assert rollout.shape == (N, 8, 8)
    torch.testing.assert_close(rollout.sum(-1), torch.ones(N, 8, dtype=rollout.dtype))
    assert (rollout >= 0).all()

    # By hand: A_l = rownorm(mean_heads(W_l) + I), R = A_last @ ... @ A_first.
    eye = torch.eye(8, dtype=torch.float64)
    hand = None
    for w in maps:
        a = w.mean(1) + eye
        a = a / a.sum(-1, keepdim=True)
        hand = a if hand is None else a @ hand
    torch.testing.assert_close(rollout, hand, rtol=1e-12, atol=1e-14)
    # One layer, no residual: the head-averaged map itself.
    torch.testing.assert_close(explain.attention_rollout(maps[:1], residual=False), maps[0].mean(1))
    assert explain.attention_rollout(maps, head_fusion="max").shape == (N, 8, 8)


def test_plot():
    from matplotlib.figure import Figure

    def check(fig, title):
        assert isinstance(fig, Figure)
        ax = fig.axes[0]
        assert ax.get_title() == title and ax.get_xlabel() and ax.get_ylabel()
        fig.savefig(io.BytesIO(), format="png")  # renders on the Agg canvas

    cnn, image = _model("cnn"), _inputs("cnn", 1)
    attr = explain.integrated_gradients(cnn, image, 3, n_steps=8)
    fig = explain.plot(attr[0], image[0], title="IG, class 3")
    check(fig, "IG, class 3")
    assert len(fig.axes) == 2  # the image and its colorbar
    check(explain.plot(attr[0, 0].abs(), image[0, 0], kind="image"), "Attribution over the input")

    rnn, seq = _model("rnn"), _inputs("rnn", 1)
    attr = explain.saliency(rnn, seq, 3, abs=False)
    fig = explain.plot(attr[0], seq[0], kind="sequence", labels=[f"row {i}" for i in range(8)])
    check(fig, "Attribution per token")
    bars = fig.axes[0].patches
    assert len(bars) == 8
    for bar, value in zip(bars, attr[0].sum(1).tolist(), strict=True):
        assert math.isclose(bar.get_height(), value, rel_tol=1e-12, abs_tol=1e-15)
    check(explain.plot(attr[0, :, 0], seq[0, :, 0]), "Attribution per token")
    with pytest.raises(ValueError, match="kind="):
        explain.plot(attr[0], seq[0])
