"""fastlayers.convert on whole models: a small ResNet, a Transformer encoder, RNN models,
modules it must leave alone, and quantize=True. CPU only: conversion is device-agnostic
Python, and the kernels it swaps in are tested per device in their own files."""

import copy
import json

import pytest
import torch

import fastlayers.nn as fnn
from conftest import TOL
from fastlayers.convert import ConversionReport, convert
from fastlayers.ops import attention as fl_attention

RUNS = 2  # timing repeats: the ratios are only checked to be positive here


# --- models ---------------------------------------------------------------------------


class BasicBlock(torch.nn.Module):
    """torchvision's ResNet BasicBlock: conv-bn-relu, conv-bn, + identity (1x1 conv when the
    shape changes), relu."""

    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(cout)
        self.relu = torch.nn.ReLU(inplace=True)
        self.conv2 = torch.nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = torch.nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = torch.nn.Sequential(
                torch.nn.Conv2d(cin, cout, 1, stride, bias=False), torch.nn.BatchNorm2d(cout)
            )

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class ResNet(torch.nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 8, 7, 2, 3, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(8)
        self.relu = torch.nn.ReLU(inplace=True)
        self.maxpool = torch.nn.MaxPool2d(3, 2, 1)
        self.layer1 = torch.nn.Sequential(BasicBlock(8, 8), BasicBlock(8, 8))
        self.layer2 = torch.nn.Sequential(BasicBlock(8, 16, stride=2), BasicBlock(16, 16))
        self.avgpool = torch.nn.AdaptiveAvgPool2d(1)
        self.fc = torch.nn.Linear(16, classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


RESNET_CONVS = [
    "conv1",
    "layer1.0.conv1",
    "layer1.0.conv2",
    "layer1.1.conv1",
    "layer1.1.conv2",
    "layer2.0.conv1",
    "layer2.0.conv2",
    "layer2.0.downsample.0",
    "layer2.1.conv1",
    "layer2.1.conv2",
]


def _resnet():
    model = ResNet()
    with torch.no_grad():  # BatchNorm statistics other than 0 and 1
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return model


class Encoder(torch.nn.Module):
    """Projection, torch.nn.TransformerEncoder (batch_first), attention pooling with a learned
    query (a MultiheadAttention called directly, returning its weights), classifier."""

    def __init__(self, features=12, d_model=32, heads=4, layers=2, classes=5):
        super().__init__()
        self.proj = torch.nn.Linear(features, d_model)
        layer = torch.nn.TransformerEncoderLayer(d_model, heads, 64, dropout=0.1, batch_first=True)
        self.encoder = torch.nn.TransformerEncoder(layer, layers)
        self.query = torch.nn.Parameter(torch.randn(1, 1, d_model))
        self.pool = torch.nn.MultiheadAttention(d_model, heads, batch_first=True)
        self.head = torch.nn.Linear(d_model, classes)

    def forward(self, x, padding_mask=None):
        h = self.encoder(self.proj(x), src_key_padding_mask=padding_mask)
        q = self.query.expand(x.shape[0], -1, -1)
        pooled, weights = self.pool(q, h, h, key_padding_mask=padding_mask)
        return self.head(pooled[:, 0]), weights


class RecurrentModel(torch.nn.Module):
    """A 2-layer nn.RNN and an nn.RNNCell stepped in a Python loop, each with a Linear head."""

    def __init__(self, features=6, hidden=10, classes=3):
        super().__init__()
        self.rnn = torch.nn.RNN(features, hidden, 2, batch_first=True)
        self.cell = torch.nn.RNNCell(features, hidden, nonlinearity="relu")
        self.head = torch.nn.Linear(2 * hidden, classes)

    def forward(self, x):
        out, _ = self.rnn(x)
        h = None
        for t in range(x.shape[1]):
            h = self.cell(x[:, t], h)
        return self.head(torch.cat([out[:, -1], h], -1))


class CircularConv(torch.nn.Conv2d):
    """A user's subclass with its own forward: convert must not swap it."""

    def forward(self, x):
        return super().forward(x) * 2


def _params(model):
    return [p for _, p in sorted(model.named_parameters(remove_duplicate=False), key=lambda kv: kv[0])]


def _types(model, names):
    return [type(model.get_submodule(n)) for n in names]


# --- tests ----------------------------------------------------------------------------


def test_resnet_converts_in_place_sharing_parameters():
    model = _resnet().eval()
    x = torch.randn(2, 3, 32, 32)
    params = _params(model)
    with torch.no_grad():
        expected = model(x)
    report = convert(model, x, runs=RUNS)
    assert report.model is model
    assert _types(model, RESNET_CONVS) == [fnn.Conv2d] * len(RESNET_CONVS)
    assert type(model.maxpool) is fnn.MaxPool2d
    assert type(model.fc) is torch.nn.Linear  # only with quantize=True
    assert all(a is b for a, b in zip(_params(model), params, strict=True))
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, **TOL[torch.float32])

    assert [m.name for m in report.modules] == ["conv1", "maxpool", *RESNET_CONVS[1:]]
    for m in report.modules:
        assert m.converted and m.reason is None and m.calls == 1
        assert m.converted_type in ("fastlayers.nn.Conv2d", "fastlayers.nn.MaxPool2d")
        assert m.max_abs_error < 1e-5, m.name
        assert m.speedup > 0
    assert report["maxpool"].max_abs_error == 0  # pooling only selects values
    assert report.output_max_abs_error < 1e-5
    assert report.speedup > 0
    assert report.counts() == {"converted": 11, "not converted": 0, "already fastlayers": 0}


def test_training_flags_are_kept():
    model = _resnet().train()
    model.layer1.eval()  # a mixed model: the flags are per module
    flags = {name: m.training for name, m in model.named_modules()}
    convert(model, torch.randn(2, 3, 32, 32), runs=RUNS)
    assert {name: m.training for name, m in model.named_modules()} == flags
    assert model.conv1.training and not model.layer1[0].conv1.training


def test_inplace_false_leaves_the_model_untouched():
    model = _resnet().eval()
    x = torch.randn(2, 3, 32, 32)
    before = copy.deepcopy(model.state_dict())
    params = _params(model)
    report = convert(model, x, inplace=False, runs=RUNS)
    converted = report.model
    assert converted is not model
    assert _types(model, RESNET_CONVS) == [torch.nn.Conv2d] * len(RESNET_CONVS)
    assert _types(converted, RESNET_CONVS) == [fnn.Conv2d] * len(RESNET_CONVS)
    assert all(a is b for a, b in zip(_params(model), params, strict=True))
    assert not any(a is b for a, b in zip(_params(converted), params, strict=True))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # BatchNorm stats too
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in model.modules())
    with torch.no_grad():
        torch.testing.assert_close(converted(x), model(x), **TOL[torch.float32])


# torch's nested tensors, which the original model uses for the padded batch, warn that they are a prototype.
@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors:UserWarning")
def test_transformer_encoder_runs_fastlayers_attention(monkeypatch):
    model = Encoder().eval()
    x = torch.randn(3, 9, 12)
    mask = torch.zeros(3, 9, dtype=torch.bool)
    mask[1, 6:] = True  # padded at the end: TransformerEncoder's nested-tensor path applies
    with torch.no_grad():
        expected = model(x, mask)  # torch's fused fast paths
    in_proj, pool_out = model.encoder.layers[0].self_attn.in_proj_weight, model.pool.out_proj.weight
    report = convert(model, (x, mask), runs=RUNS)

    names = ["encoder.layers.0.self_attn", "encoder.layers.1.self_attn", "pool"]
    assert [m.name for m in report.modules] == names
    assert _types(model, names) == [fnn.MultiheadAttention] * 3
    assert model.encoder.layers[0].self_attn.in_proj_weight is in_proj
    assert model.pool.out_proj.weight is pool_out
    for m in report.modules:
        assert m.converted and m.max_abs_error < 1e-5 and m.speedup > 0
    assert "fast path" in report["encoder.layers.0.self_attn"].note
    assert report["pool"].note is None
    assert any("use_nested_tensor" in n for n in report.notes) and not model.encoder.use_nested_tensor
    assert report.output_max_abs_error < 1e-5

    calls = []
    kernel = fl_attention.attention_with_lse
    monkeypatch.setattr(fl_attention, "attention_with_lse", lambda *a, **k: calls.append(1) or kernel(*a, **k))
    with torch.no_grad():
        got = model(x, mask)
    assert len(calls) == 3  # both encoder layers and the pooling ran the fastlayers kernel
    torch.testing.assert_close(got, expected, **TOL[torch.float32])


def test_transformer_encoder_parameters_shared_in_training():
    model = Encoder()
    params = _params(model)
    convert(model)
    assert all(a is b for a, b in zip(_params(model), params, strict=True))
    assert not any(t.is_meta for t in model.parameters())
    assert model.training and model.encoder.layers[1].self_attn.training and model.pool.out_proj.training


def test_recurrent_models():
    model = RecurrentModel().eval()
    x = torch.randn(4, 7, 6)
    params = _params(model)
    with torch.no_grad():
        expected = model(x)
    report = convert(model, x, runs=RUNS)
    assert type(model.rnn) is fnn.RNN and type(model.cell) is fnn.RNNCell
    assert all(a is b for a, b in zip(_params(model), params, strict=True))
    assert all(
        a is b
        for a, b in zip(
            model.rnn._flat_weights, (getattr(model.rnn, n) for n in model.rnn._flat_weights_names), strict=True
        )
    )
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, **TOL[torch.float32])
    assert report["rnn"].calls == 1 and report["cell"].calls == 7  # every step of the loop
    assert report["rnn"].max_abs_error < 1e-5 and report["cell"].max_abs_error < 1e-5
    assert report.output_max_abs_error < 1e-5 and report.speedup > 0


def test_modules_left_alone_say_why():
    model = torch.nn.Sequential()
    model.custom = CircularConv(3, 4, 3, padding=1, padding_mode="circular")
    model.hooked = torch.nn.Conv2d(4, 4, 3, padding=1)
    model.hooked.register_forward_hook(lambda m, a, out: None)
    model.fp16 = torch.nn.Conv2d(4, 4, 1).half()
    model.done = fnn.Conv2d(4, 4, 1)
    model.plain = torch.nn.Conv2d(4, 4, 3, padding=1, padding_mode="circular")  # every padding_mode is supported
    report = convert(model)
    assert type(model.custom) is CircularConv and type(model.hooked) is torch.nn.Conv2d
    assert type(model.fp16) is torch.nn.Conv2d and type(model.plain) is fnn.Conv2d
    r = {m.name: m for m in report.modules}
    assert r["custom"].status == "not converted"
    assert r["custom"].type == "test_convert.CircularConv"
    assert r["custom"].reason == (
        "a subclass of torch.nn.Conv2d, overriding forward: only exact torch.nn.Conv2d modules are swapped"
    )
    assert r["hooked"].reason == "1 hook(s) registered on it, which a swapped module would not run"
    assert r["fp16"].reason == "no kernel for torch.float16 on cpu"
    assert r["done"].status == "already fastlayers" and r["done"].type == "fastlayers.nn.Conv2d"
    assert r["plain"].converted and r["plain"].calls is None and r["plain"].max_abs_error is None
    assert report.output_max_abs_error is None and report.speedup is None
    again = convert(model)
    assert [m.status for m in again.modules] == ["not converted", "not converted", "not converted"] + [
        "already fastlayers"
    ] * 2


def test_inputs_without_a_kernel_are_not_converted():
    model = torch.nn.Sequential(torch.nn.MaxPool2d(2), torch.nn.Conv2d(2, 2, 1).half())
    report = convert(model, torch.randn(1, 2, 6, 6).half(), runs=RUNS)
    assert type(model[0]) is torch.nn.MaxPool2d
    assert report["0"].reason == "no kernel for torch.float16 on cpu" and report["0"].calls == 1
    assert report["1"].reason == "no kernel for torch.float16 on cpu" and report["1"].calls is None
    assert report.output_max_abs_error == 0


def test_shared_and_root_modules():
    conv = torch.nn.Conv2d(2, 2, 3, padding=1)
    model = torch.nn.Sequential(conv, torch.nn.ReLU(), conv)
    report = convert(model, torch.randn(1, 2, 5, 5), runs=RUNS)
    assert model[0] is model[2] and type(model[0]) is fnn.Conv2d
    assert [m.name for m in report.modules] == ["0"] and report["0"].calls == 2

    root = torch.nn.Conv2d(2, 3, 3)
    x = torch.randn(1, 2, 5, 5)
    report = convert(root, x, runs=RUNS)
    assert type(report.model) is fnn.Conv2d and report.model.weight is root.weight
    assert report.modules[0].name == "" and "(model)" in str(report)
    assert report.output_max_abs_error < 1e-5


def test_quantize_swaps_linear_layers():
    torch.manual_seed(1)
    model = torch.nn.Sequential(
        torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 8)
    ).eval()
    x = torch.randn(16, 32)
    biases = [model[i].bias for i in (0, 2, 4)]
    with torch.no_grad():
        expected = model(x)
    plain = convert(copy.deepcopy(model))
    assert plain.modules == []  # without quantize, Linear is none of convert's business
    report = convert(model, x, quantize=True, runs=RUNS)
    assert [type(model[i]) for i in (0, 2, 4)] == [fnn.Int8Linear] * 3
    assert all(model[i].bias is b for i, b in zip((0, 2, 4), biases, strict=True))
    scale = expected.abs().max().item()
    with torch.no_grad():
        got = model(x)
    assert (got - expected).abs().max().item() < 0.03 * scale  # int8 weights and activations
    for m in report.modules:
        assert m.converted and m.converted_type == "fastlayers.nn.Int8Linear"
        assert m.sqnr_db > 30 and 0 < m.max_abs_error < 0.05 and m.speedup > 0
    assert report.output_max_abs_error == pytest.approx((got - expected).abs().max().item())

    wide = torch.nn.Sequential(torch.nn.Linear(131073, 1))
    assert convert(wide, quantize=True)["0"].reason == (
        "in_features=131073 exceeds 131072, beyond which the int8 GEMM's int32 sums could overflow"
    )


def test_report_prints_and_serialises():
    model = Encoder().eval()
    model.extra = CircularConv(1, 1, 1)
    report = convert(model, torch.randn(2, 5, 12), quantize=True, runs=RUNS)
    assert isinstance(report, ConversionReport)
    text = str(report)
    lines = text.splitlines()
    header = lines[0]
    assert header.split() == ["module", "type", "status", "max", "abs", "err", "speedup", "reason", "/", "note"]
    column = header.index("status")
    rows = lines[1 : 1 + len(report.modules)]
    for m, line in zip(report.modules, rows, strict=True):
        assert line.startswith(m.name) and line[column:].startswith(m.status)
    assert "extra" in text and "only exact torch.nn.Conv2d" in text
    assert "model output: max abs err" in text and "note: encoder: use_nested_tensor" in text
    assert repr(report).startswith("ConversionReport(converted=")
    d = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert d["counts"] == report.counts()
    assert [m["name"] for m in d["modules"]] == [m.name for m in report.modules]
    assert d["modules"][0]["converted_type"] == "fastlayers.nn.Int8Linear" and d["speedup"] > 0
