"""Int8 quantisation: W8A8 GEMMs with fused dequantisation, quantisers, and model conversion.

- :func:`int8_mm` (a [M, K] int8 x b [N, K] int8 -> int32 [M, N], exact, any shape),
- :func:`int8_linear` (the same with ``* a_scale[:, None] * b_scale[None, :] + bias`` fused),
- :func:`quantize_per_row` and :func:`quantize_per_tensor` (symmetric absmax, scale =
  absmax / 127, values rounded half to even and clamped to [-127, 127]),
- :func:`quantize` swaps a model's nn.Linear layers for :class:`fastlayers.nn.Int8Linear`,
  optionally with SmoothQuant smoothing from calibration batches, and reports each layer's
  SQNR.

b is in nn.Linear's weight layout [N, K]; ``torch._int_mm`` takes [K, N] instead.
"""

import dataclasses
import math

import torch

from fastlayers.ops import int8 as _ops

MAX_K = _ops.MAX_K


def int8_mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a [M, K] int8 times b [N, K] int8 transposed: int32 [M, N], exact for K <= 131072
    (larger K raises). Any M, N, K >= 0, any strides."""
    return _ops._int8_mm(a, b)


def int8_linear(
    a: torch.Tensor,
    a_scale: torch.Tensor,
    b: torch.Tensor,
    b_scale: torch.Tensor,
    bias: torch.Tensor | None = None,
    out_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """``(a @ b.T) * a_scale[:, None] * b_scale[None, :] + bias`` in one kernel: a [M, K]
    and b [N, K] int8, a_scale [M] (per row/token) and b_scale [N] (per output channel)
    float32, bias [N] float. Output [M, N] in out_dtype: float32, float16 or bfloat16."""
    return _ops._int8_linear(a, a_scale, b, b_scale, bias, out_dtype)


def quantize_per_row(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric absmax quantisation of each row (the last dim) in one fused pass: returns
    (int8 values shaped like x, float32 scales shaped x.shape[:-1]) with x ~ q * scale.
    An all-zero row gets scale 1."""
    if x.dtype not in _ops.input_dtypes(x.device):
        x = x.float()
    return _ops._quantize_per_row(x)


def quantize_per_tensor(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric absmax quantisation with one scale: (int8 values, float32 scalar scale)."""
    amax = x.detach().abs().amax().float() if x.numel() else torch.zeros((), device=x.device)
    scale = torch.where(amax > 0, amax / 127.0, torch.ones_like(amax))
    q = torch.round(x.float() / scale).clamp_(-127, 127).to(torch.int8)
    return q, scale


def sqnr_db(reference: torch.Tensor, approx: torch.Tensor) -> float:
    """Signal-to-quantisation-noise ratio, 10 log10(sum ref^2 / sum (ref - approx)^2), in dB."""
    ref = reference.detach().double()
    noise = (ref - approx.detach().double()).pow(2).sum().item()
    signal = ref.pow(2).sum().item()
    if noise == 0:
        return math.inf
    return 10 * math.log10(signal / noise) if signal > 0 else -math.inf


@dataclasses.dataclass
class LayerReport:
    name: str
    in_features: int
    out_features: int
    smoothed: bool
    sqnr_db: float | None  # of the layer's output against float on the calibration data


@dataclasses.dataclass
class QuantizationReport:
    layers: list[LayerReport]
    # The model's output on the calibration data, quantised against float: SQNR in dB and
    # the largest absolute difference (None without calibration data).
    output_sqnr_db: float | None = None
    output_max_abs_diff: float | None = None

    def __str__(self):
        lines = [f"{'layer':40s} {'in':>6s} {'out':>6s} {'smoothed':>8s} {'SQNR dB':>8s}"]
        for r in self.layers:
            s = "-" if r.sqnr_db is None else f"{r.sqnr_db:.1f}"
            lines.append(f"{r.name:40s} {r.in_features:6d} {r.out_features:6d} {str(r.smoothed):>8s} {s:>8s}")
        if self.output_sqnr_db is not None:
            lines.append(f"model output: SQNR {self.output_sqnr_db:.1f} dB, max |diff| {self.output_max_abs_diff:.3g}")
        return "\n".join(lines)


def _batches(calib_data):
    if calib_data is None:
        return []
    if isinstance(calib_data, torch.Tensor):
        return [calib_data]
    return list(calib_data)


def _run(model, batches):
    outs = []
    with torch.no_grad():
        for b in batches:
            out = model(*b) if isinstance(b, (tuple, list)) else model(b)
            outs.append(out)
    return outs


def _flat(outs):
    ts = []
    for o in outs:
        if isinstance(o, torch.Tensor):
            ts.append(o.reshape(-1))
        elif isinstance(o, (tuple, list)):
            ts.extend(t.reshape(-1) for t in o if isinstance(t, torch.Tensor))
    return torch.cat([t.double() for t in ts]) if ts else None


def quantize(model: torch.nn.Module, filter_fn=None, smooth_alpha: float | None = None, calib_data=None):
    """Swap every nn.Linear of `model` (for which ``filter_fn(name, module)`` is true, when
    given) for an Int8Linear in place: weights per output channel, activations per token at
    run time, bias in float.

    smooth_alpha (needs calib_data): SmoothQuant. Per input channel j,
    s_j = max|X_j|^alpha / max|W_j|^(1 - alpha) from the calibration batches; the weight's
    columns are multiplied by s and the activations divided by it inside the layer, moving
    activation outliers into the weight. calib_data: a tensor, or an iterable of batches
    (tensors, or tuples of positional arguments) run through the model.

    Returns a QuantizationReport: per layer, the SQNR of its output against float on the
    calibration data (each layer fed the float model's activations), and, with calibration
    data, the model output's SQNR and largest difference against float.
    """
    from fastlayers.nn.quantized import Int8Linear

    if smooth_alpha is not None and calib_data is None:
        raise ValueError("quantize: smooth_alpha needs calib_data")
    if smooth_alpha is not None and not 0.0 <= smooth_alpha <= 1.0:
        raise ValueError(f"quantize: smooth_alpha must be in [0, 1], got {smooth_alpha}")
    targets = [
        (name, m)
        for name, m in model.named_modules()
        # Exactly nn.Linear: subclasses such as MultiheadAttention's out_proj are used through
        # their weight, not called, so swapping them would change nothing or break the owner.
        # The root module cannot be swapped in place.
        if name and type(m) is torch.nn.Linear and (filter_fn is None or filter_fn(name, m))
    ]
    batches = _batches(calib_data)
    was_training = model.training
    model.eval()
    stats = {name: {"amax": None, "inputs": []} for name, _ in targets}

    def hook(name):
        def record(mod, args, out):
            x = args[0].detach()
            amax = x.reshape(-1, x.shape[-1]).abs().amax(0).float()
            st = stats[name]
            st["amax"] = amax if st["amax"] is None else torch.maximum(st["amax"], amax)
            st["inputs"].append((x, out.detach()))

        return record

    handles = [m.register_forward_hook(hook(name)) for name, m in targets]
    try:
        float_outs = _run(model, batches)
    finally:
        for h in handles:
            h.remove()
    reports = []
    for name, lin in targets:
        st = stats[name]
        smooth = None
        if smooth_alpha is not None and st["amax"] is not None:
            w_amax = lin.weight.detach().abs().amax(0).float().clamp_min(1e-5)
            x_amax = st["amax"].to(w_amax.device).clamp_min(1e-5)
            smooth = (x_amax.pow(smooth_alpha) / w_amax.pow(1 - smooth_alpha)).clamp_min(1e-5)
        q = Int8Linear.from_float(lin, smooth=smooth)
        sq = None
        if st["inputs"]:
            with torch.no_grad():
                ref = torch.cat([o.reshape(-1) for _, o in st["inputs"]])
                got = torch.cat([q(x).reshape(-1) for x, _ in st["inputs"]])
            sq = sqnr_db(ref, got)
        st["inputs"].clear()
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, q)
        reports.append(LayerReport(name, lin.in_features, lin.out_features, smooth is not None, sq))
    report = QuantizationReport(reports)
    if batches:
        ref, got = _flat(float_outs), _flat(_run(model, batches))
        if ref is not None and got is not None:
            report.output_sqnr_db = sqnr_db(ref, got)
            report.output_max_abs_diff = (ref - got).abs().max().item() if ref.numel() else 0.0
    model.train(was_training)
    return report
