"""Model conversion: swap a model's torch.nn layers for their fastlayers twins, and say how
it went.

:func:`convert` walks the module tree and replaces every module whose type is exactly
``torch.nn.Conv2d``, ``MaxPool2d``, ``RNN``, ``RNNCell`` or ``MultiheadAttention`` (and
``Linear`` with ``quantize=True``) by the fastlayers module of the same name (``Int8Linear``
for Linear), sharing the same Parameter objects and keeping each module's training flag.
A module is left alone, with the reason in the report, when no fastlayers kernel covers it
(its parameters' dtype and device; with example inputs, also the inputs it receives), when
it is a subclass (its own code would be lost), or when hooks are registered on it (the twin
would not run them).

Given example inputs, the report also holds each converted module's largest difference
from the original on the inputs that module receives in the model's forward pass, the
model output's, and the speed ratios (original time / converted time, medians).

torch's TransformerEncoderLayer has an inference fast path that calls one fused kernel
with self_attn's and linear1/2's weights and never calls those modules; TransformerEncoder
turns padded batches into nested tensors for it. Where a child of an encoder layer is
swapped, convert turns both off (a no-op forward pre-hook on the twin, which the layer
takes as a reason to skip its fast path, and ``use_nested_tensor = False`` on the encoder),
so the layer runs the fastlayers modules; the report notes it.
"""

import copy
import dataclasses
import inspect
import math
import statistics
import time
from collections.abc import Callable
from contextlib import contextmanager

import torch
from torch.nn.utils.rnn import PackedSequence

from fastlayers import nn as fnn
from fastlayers.ops import attention as _attention
from fastlayers.ops import conv2d as _conv2d
from fastlayers.ops import max_pool2d as _max_pool2d
from fastlayers.ops import rnn as _rnn
from fastlayers.ops._common import dtype_unsupported_reason
from fastlayers.quant import MAX_K, sqnr_db

CONVERTED, NOT_CONVERTED, ALREADY = "converted", "not converted", "already fastlayers"

# Int8Linear quantises any floating input (casting those its kernel does not take to float32).
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


@dataclasses.dataclass
class ModuleReport:
    """One module of the model that convert considered."""

    name: str  # qualified name in the model ("" for the model itself)
    type: str  # the module's type before conversion
    status: str  # "converted", "not converted" or "already fastlayers"
    converted_type: str | None = None
    reason: str | None = None  # why it was not converted
    note: str | None = None
    # With example inputs: times called in the forward pass, largest |twin - original| over
    # those calls, SQNR in dB (Int8Linear only), and median seconds for all the calls.
    calls: int | None = None
    max_abs_error: float | None = None
    sqnr_db: float | None = None
    time_original_s: float | None = None
    time_converted_s: float | None = None

    @property
    def converted(self) -> bool:
        return self.status == CONVERTED

    @property
    def speedup(self) -> float | None:
        """Original time / converted time."""
        return _ratio(self.time_original_s, self.time_converted_s)


@dataclasses.dataclass
class ConversionReport:
    """What :func:`convert` did: ``model`` (the converted model), one :class:`ModuleReport`
    per module considered, model-level ``notes``, and with example inputs the model output's
    largest difference from the original's and the model's median times."""

    model: torch.nn.Module
    modules: list[ModuleReport]
    notes: list[str] = dataclasses.field(default_factory=list)
    output_max_abs_error: float | None = None
    time_original_s: float | None = None
    time_converted_s: float | None = None

    @property
    def speedup(self) -> float | None:
        """Original time / converted time of the whole model."""
        return _ratio(self.time_original_s, self.time_converted_s)

    def __getitem__(self, name: str) -> ModuleReport:
        for m in self.modules:
            if m.name == name:
                return m
        raise KeyError(name)

    def counts(self) -> dict[str, int]:
        return {s: sum(m.status == s for m in self.modules) for s in (CONVERTED, NOT_CONVERTED, ALREADY)}

    def to_dict(self) -> dict:
        """JSON-serialisable (without the model); infinite or NaN numbers become strings."""
        modules = []
        for m in self.modules:
            d = {k: _json_number(v) for k, v in dataclasses.asdict(m).items()}
            d["speedup"] = _json_number(m.speedup)
            modules.append(d)
        return {
            "modules": modules,
            "counts": self.counts(),
            "notes": list(self.notes),
            "output_max_abs_error": _json_number(self.output_max_abs_error),
            "time_original_s": _json_number(self.time_original_s),
            "time_converted_s": _json_number(self.time_converted_s),
            "speedup": _json_number(self.speedup),
        }

    def __str__(self):
        head = ("module", "type", "status", "max abs err", "speedup", "reason / note")
        rows = [
            (
                m.name or "(model)",
                m.type,
                m.status,
                _fmt(m.max_abs_error),
                "-" if m.speedup is None else f"{m.speedup:.2f}x",
                "; ".join(s for s in (m.reason, m.note) if s),
            )
            for m in self.modules
        ]
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
        right = (False, False, False, True, True, False)
        lines = [
            "  ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(row, widths, right, strict=True)).rstrip()
            for row in [head, *rows]
        ]
        c = self.counts()
        lines.append(f"{c[CONVERTED]} converted, {c[NOT_CONVERTED]} not converted, {c[ALREADY]} already fastlayers")
        if self.time_original_s is not None:
            lines.append(
                f"model output: max abs err {_fmt(self.output_max_abs_error)}, speedup {self.speedup:.2f}x "
                f"({self.time_original_s * 1e3:.3g} ms -> {self.time_converted_s * 1e3:.3g} ms)"
            )
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)

    def __repr__(self):
        c = self.counts()
        err = _fmt(self.output_max_abs_error)
        speed = "None" if self.speedup is None else f"{self.speedup:.3g}"
        return (
            f"ConversionReport(converted={c[CONVERTED]}, not_converted={c[NOT_CONVERTED]}, "
            f"already_fastlayers={c[ALREADY]}, output_max_abs_error={err}, speedup={speed})"
        )


def _ratio(a, b):
    return None if a is None or b is None or b <= 0 else a / b


def _fmt(x):
    return "-" if x is None else f"{x:.3g}"


def _json_number(v):
    return str(v) if isinstance(v, float) and not math.isfinite(v) else v


def _type_name(cls) -> str:
    for prefix, namespace in (("torch.nn", torch.nn), ("fastlayers.nn", fnn)):
        if getattr(namespace, cls.__name__, None) is cls:
            return f"{prefix}.{cls.__name__}"
    return f"{cls.__module__}.{cls.__qualname__}"


# --- what fastlayers supports, per module type ------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Kind:
    twin: Callable  # module -> the fastlayers module sharing its parameters
    # Why no fastlayers kernel covers the module (from its parameters), or None.
    static_reason: Callable
    # Why none covers one call (module, its forward's bound arguments), or None.
    call_reason: Callable


def _no_kernel(reason):
    return None if reason is None else f"no kernel for {reason}"


def _mha_twin(m: torch.nn.MultiheadAttention) -> fnn.MultiheadAttention:
    # MultiheadAttention.from_torch copies the parameters; this shares them.
    twin = fnn.MultiheadAttention(
        m.embed_dim,
        m.num_heads,
        dropout=m.dropout,
        bias=m.in_proj_bias is not None,
        add_bias_kv=m.bias_k is not None,
        add_zero_attn=m.add_zero_attn,
        kdim=m.kdim,
        vdim=m.vdim,
        batch_first=m.batch_first,
        device="meta",
        dtype=m.out_proj.weight.dtype,
    )
    for name, p in m._parameters.items():
        setattr(twin, name, p)
    twin.out_proj.weight, twin.out_proj.bias = m.out_proj.weight, m.out_proj.bias
    return twin


def _mha_reason(m, query, masks=(None,)):
    # The kernel's limits depend on the head size, not the sequence: an empty stand-in will do.
    heads = query.new_empty((0, m.head_dim))
    for mask in masks:
        reason = _attention.unsupported_reason(heads, heads, heads, mask)
        if reason is not None:
            return _no_kernel(reason)
    return None


def _int8_twin(m: torch.nn.Linear) -> fnn.Int8Linear:
    q = fnn.Int8Linear.from_float(m)
    q.bias = m.bias  # from_float copies it; share it as the other twins do
    return q


def _linear_static(m):
    if m.in_features > MAX_K:
        return f"in_features={m.in_features} exceeds {MAX_K}, beyond which the int8 GEMM's int32 sums could overflow"
    return _no_kernel(dtype_unsupported_reason(m.weight, _FLOAT_DTYPES, _FLOAT_DTYPES))


def _linear_call(m, a):
    x = a["input"]
    if not x.is_floating_point():
        return f"input dtype {x.dtype} is not floating point"
    return _no_kernel(dtype_unsupported_reason(x, _FLOAT_DTYPES, _FLOAT_DTYPES))


def _packed_data(x):
    return x.data if isinstance(x, PackedSequence) else x


_KINDS = {
    torch.nn.Conv2d: _Kind(
        fnn.Conv2d.from_torch,
        lambda m: _no_kernel(_conv2d.unsupported_reason(m.weight, m.weight)),
        lambda m, a: _no_kernel(_conv2d.unsupported_reason(a["input"], m.weight)),
    ),
    torch.nn.MaxPool2d: _Kind(
        fnn.MaxPool2d.from_torch,
        lambda m: None,  # no parameters: only the input tells
        lambda m, a: _no_kernel(_max_pool2d.unsupported_reason(a["input"])),
    ),
    torch.nn.RNN: _Kind(
        fnn.RNN.from_torch,
        lambda m: _no_kernel(_rnn.unsupported_reason(m.weight_ih_l0)),
        lambda m, a: _no_kernel(_rnn.unsupported_reason(_packed_data(a["input"]))),
    ),
    torch.nn.RNNCell: _Kind(
        fnn.RNNCell.from_torch,
        lambda m: _no_kernel(_rnn.unsupported_reason(m.weight_ih)),
        lambda m, a: _no_kernel(_rnn.unsupported_reason(a["input"])),
    ),
    torch.nn.MultiheadAttention: _Kind(
        _mha_twin,
        lambda m: _mha_reason(m, m.out_proj.weight),
        lambda m, a: _mha_reason(m, a["query"], (a["attn_mask"], a["key_padding_mask"])),
    ),
}
_LINEAR_KIND = _Kind(_int8_twin, _linear_static, _linear_call)


# --- the model walk -----------------------------------------------------------------------


@dataclasses.dataclass(eq=False)
class _Item:
    report: ModuleReport
    module: torch.nn.Module
    kind: _Kind | None = None  # set for candidates (exact type matches)
    locations: list = dataclasses.field(default_factory=list)  # (parent, attribute name)
    calls: list | None = None  # (args, kwargs) of each call on the example inputs
    twin: torch.nn.Module | None = None


def _hook_count(m):
    return sum(len(d) for d in (m._forward_hooks, m._forward_pre_hooks, m._backward_hooks, m._backward_pre_hooks))


def _classify(name, m, kinds) -> _Item | None:
    """The report item for `m`, or None when it is none of convert's business (walk into it)."""
    cls = type(m)
    if cls.__module__.split(".")[0] == "fastlayers":
        return _Item(ModuleReport(name, _type_name(cls), ALREADY), m)
    report = ModuleReport(name, _type_name(cls), NOT_CONVERTED)
    kind = kinds.get(cls)
    if kind is None:
        base = next((k for k in kinds if isinstance(m, k)), None)
        if base is None:
            return None
        overrides = ", overriding forward" if cls.forward is not base.forward else ""
        base_name = _type_name(base)
        report.reason = f"a subclass of {base_name}{overrides}: only exact {base_name} modules are swapped"
        return _Item(report, m)
    hooks = _hook_count(m)
    if hooks:
        report.reason = f"{hooks} hook(s) registered on it, which a swapped module would not run"
    else:
        report.reason = kind.static_reason(m)
    return _Item(report, m, kind)


def _survey(root, kinds) -> list[_Item]:
    items: dict[int, _Item] = {}
    walked: set[int] = set()

    def visit(name, m, parent, attr):
        if id(m) in items:  # one module registered in several places: swap it in each
            items[id(m)].locations.append((parent, attr))
            return
        item = _classify(name, m, kinds)
        if item is not None:
            item.locations.append((parent, attr))
            items[id(m)] = item
            return
        if id(m) in walked:
            return
        walked.add(id(m))
        for child_name, child in m._modules.items():
            if child is not None:
                visit(f"{name}.{child_name}" if name else child_name, child, m, child_name)

    visit("", root, None, None)
    return list(items.values())


# --- running the example inputs ---------------------------------------------------------


def _map_tensors(fn, obj):
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # namedtuple, e.g. PackedSequence
        return type(obj)(*(_map_tensors(fn, x) for x in obj))
    if isinstance(obj, (tuple, list)):
        return type(obj)(_map_tensors(fn, x) for x in obj)
    if isinstance(obj, dict):
        return {k: _map_tensors(fn, v) for k, v in obj.items()}
    return obj


def _tensors(obj) -> list[torch.Tensor]:
    out = []
    _map_tensors(out.append, obj)
    return out


def _max_abs_diff(a, b) -> float:
    """Largest |a - b| over the tensors of two outputs of the same structure: equal values
    (NaN and NaN, inf and inf included) count as 0, a NaN against a number as inf."""
    ta, tb = _tensors(a), _tensors(b)
    if len(ta) != len(tb) or any(x.shape != y.shape for x, y in zip(ta, tb, strict=True)):
        return math.inf
    worst = 0.0
    for x, y in zip(ta, tb, strict=True):
        if x.numel() == 0:
            continue
        x, y = x.detach().double(), y.detach().to(x.device).double()
        same = (x == y) | (x.isnan() & y.isnan())
        d = torch.where(same, torch.zeros_like(x), (x - y).abs())
        worst = max(worst, d.nan_to_num(nan=math.inf).max().item())
    return worst


def _flat(outs) -> torch.Tensor:
    ts = [t.detach().reshape(-1).double().cpu() for t in _tensors(outs) if t.is_floating_point()]
    return torch.cat(ts) if ts else torch.zeros(0, dtype=torch.float64)


def _sync():
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def _median_seconds(fn, runs) -> float:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        _sync()
        t0 = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


@contextmanager
def _inference(*roots):
    """Eval mode (no dropout, BatchNorm statistics untouched) and no_grad; every module's own
    training flag is put back afterwards."""
    flags = {id(m): (m, m.training) for r in roots for m in r.modules()}
    for m, _ in flags.values():
        m.training = False
    try:
        with torch.no_grad():
            yield
    finally:
        for m, training in flags.values():
            m.training = training


@contextmanager
def _fastpaths_disabled():
    # With them on, an encoder layer skips its submodules (and their hooks) altogether.
    enabled = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(enabled)


def _capture(model, items, args):
    """Run the model once, recording (a copy of) each item's call arguments."""

    def record(item):
        def hook(module, hook_args, hook_kwargs):
            item.calls.append(_map_tensors(lambda t: t.detach().clone(), (hook_args, hook_kwargs)))

        return hook

    handles = []
    for item in items:
        item.calls = []
        handles.append(item.module.register_forward_pre_hook(record(item), with_kwargs=True))
    try:
        with _fastpaths_disabled():
            model(*args)
    finally:
        for h in handles:
            h.remove()


def _call_reason(item) -> str | None:
    sig = inspect.signature(type(item.module).forward)
    for args, kwargs in item.calls:
        bound = sig.bind(item.module, *args, **kwargs)
        bound.apply_defaults()
        reason = item.kind.call_reason(item.module, bound.arguments)
        if reason is not None:
            return reason
    return None


def _measure(item, runs):
    """Compare and time the original module and its twin on the recorded calls."""
    orig, twin, calls = item.module, item.twin, item.calls
    r = item.report
    with _inference(orig, twin):
        ref = [orig(*a, **k) for a, k in calls]
        got = [twin(*a, **k) for a, k in calls]
        r.max_abs_error = max(_max_abs_diff(x, y) for x, y in zip(ref, got, strict=True))
        if isinstance(twin, fnn.Int8Linear):
            r.sqnr_db = sqnr_db(_flat(ref), _flat(got))
        r.time_original_s = _median_seconds(lambda: [orig(*a, **k) for a, k in calls], runs)
        r.time_converted_s = _median_seconds(lambda: [twin(*a, **k) for a, k in calls], runs)


def _keep_slow_path(module, args):
    """A no-op forward pre-hook: TransformerEncoderLayer skips its fused fast path (which
    would bypass this module) when any of its submodules has a hook."""


def _route_encoder_layers(root, items) -> list[str]:
    """Make torch's encoder fast paths call the swapped modules (see the module docstring)."""
    twins = {id(it.twin): it for it in items if it.report.converted}
    notes = []
    for name, m in root.named_modules():
        if isinstance(m, torch.nn.TransformerEncoderLayer):
            for attr in ("self_attn", "linear1", "linear2"):
                item = twins.get(id(getattr(m, attr, None)))
                if item is not None and _keep_slow_path not in item.twin._forward_pre_hooks.values():
                    item.twin.register_forward_pre_hook(_keep_slow_path)
                    item.report.note = "no-op pre-hook added: the encoder layer's fused fast path would bypass it"
        if isinstance(m, torch.nn.TransformerEncoder) and getattr(m, "use_nested_tensor", False):
            swapped = any(
                id(getattr(layer, a, None)) in twins for layer in m.layers for a in ("self_attn", "linear1", "linear2")
            )
            if swapped:
                m.use_nested_tensor = False
                notes.append(
                    f"{name or '(model)'}: use_nested_tensor set to False, as the nested-tensor path "
                    "cannot run the swapped layers; with src_key_padding_mask, the output at padded "
                    "positions is now computed rather than zero"
                )
    return notes


def _copy_training(src, dst):
    dst.training = src.training
    for name, child in dst.named_children():
        src_child = getattr(src, name, None)
        if isinstance(src_child, torch.nn.Module):
            _copy_training(src_child, child)


def convert(model: torch.nn.Module, example_inputs=None, quantize: bool = False, inplace: bool = True, runs: int = 5):
    """Swap `model`'s torch.nn.Conv2d, MaxPool2d, RNN, RNNCell and MultiheadAttention modules
    (exact types only) for the fastlayers modules, sharing their Parameter objects and
    training flags; with `quantize`, also each exact torch.nn.Linear for an Int8Linear
    (int8 weight per output channel, sharing the bias).

    example_inputs: a tensor, or a tuple (or list) of the model's positional arguments. With
    them, the model runs once to record the inputs each module receives (which also decides
    whether a kernel covers them); then, in eval mode and under no_grad with every training
    flag put back afterwards, each converted module and its original run on those inputs,
    and the model before and after conversion, for the largest differences and the median of
    `runs` timings. Keep them small: every module input is held in memory.

    inplace=False converts a deep copy and leaves `model` untouched. Returns a
    :class:`ConversionReport`; its ``model`` is the converted model (a new module when the
    model itself is one of the swapped types).
    """
    if runs < 1:
        raise ValueError(f"convert: runs must be at least 1, got {runs}")
    if not inplace:
        model = copy.deepcopy(model)
    kinds = dict(_KINDS)
    if quantize:
        kinds[torch.nn.Linear] = _LINEAR_KIND
    items = _survey(model, kinds)
    candidates = [it for it in items if it.kind is not None and it.report.reason is None]
    report = ConversionReport(model, [it.report for it in items])
    args = None
    if example_inputs is not None:
        args = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
        with _inference(model):
            reference = model(*args)
            report.time_original_s = _median_seconds(lambda: model(*args), runs)
            _capture(model, candidates, args)
    for item in candidates:
        r = item.report
        r.calls = None if item.calls is None else len(item.calls)
        if item.calls:
            r.reason = _call_reason(item)
        if r.reason is not None:
            continue
        item.twin = item.kind.twin(item.module)
        _copy_training(item.module, item.twin)
        if item.calls:
            try:
                _measure(item, runs)
            except Exception as err:  # the twin stays out of the model
                r.reason = f"failed on example_inputs: {type(err).__name__}: {err}"
                r.max_abs_error = r.sqnr_db = r.time_original_s = r.time_converted_s = None
                continue
        elif item.calls is not None:
            r.note = "not called on example_inputs"
        r.status, r.converted_type = CONVERTED, _type_name(type(item.twin))
        for parent, attr in item.locations:
            if parent is None:
                report.model = item.twin
            else:
                setattr(parent, attr, item.twin)
    report.notes = _route_encoder_layers(report.model, items)
    if args is not None:
        converted = report.model
        with _inference(converted):
            report.output_max_abs_error = _max_abs_diff(reference, converted(*args))
            report.time_converted_s = _median_seconds(lambda: converted(*args), runs)
    return report
