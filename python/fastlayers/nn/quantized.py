"""Int8Linear: nn.Linear with an int8 weight (per output channel) and int8 activations
(per token, quantised at run time), on the fused int8 GEMM with dequantisation epilogue."""

import torch

from fastlayers.ops import int8 as _ops


class _Int8LinearFn(torch.autograd.Function):
    """Forward: quantise x per row, int8 GEMM, dequantise, + bias, in x's dtype. Backward
    (for x only; the int8 weight is frozen): grad_out @ the dequantised weight, i.e. the
    straight-through gradient of the activation quantiser."""

    @staticmethod
    def forward(x2, weight, weight_scale, bias):
        xq = x2 if x2.dtype in _ops.input_dtypes(x2.device) else x2.float()
        q, s = _ops._quantize_per_row(xq)
        out_dtype = x2.dtype if x2.dtype in _ops.out_dtypes(x2.device) else torch.float32
        b = None if bias is None else bias.float()
        return _ops._int8_linear(q, s, weight, weight_scale, b, out_dtype).to(x2.dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x2, weight, weight_scale, bias = inputs
        ctx.save_for_backward(weight, weight_scale)
        ctx.bias_needs_grad = bias is not None and bias.requires_grad

    @staticmethod
    def backward(ctx, grad_out):
        weight, weight_scale = ctx.saved_tensors
        grad_x = None
        if ctx.needs_input_grad[0]:
            w = weight.to(grad_out.dtype) * weight_scale.to(grad_out.dtype)[:, None]
            grad_x = grad_out @ w
        grad_bias = grad_out.sum(0) if ctx.needs_input_grad[3] else None
        return grad_x, None, None, grad_bias


class Int8Linear(torch.nn.Module):
    """W8A8 linear layer: ``y = x W^T + b`` with W stored as int8 [out, in] and a float32
    scale per output channel, x quantised per token (row) at run time, the product on the
    int8 GEMM with the dequantisation and bias fused in its epilogue. The output has the
    input's dtype. Optional ``input_smooth`` [in] (SmoothQuant): x is divided by it before
    quantisation (the weight was multiplied by it).

    state_dict: ``weight`` (int8), ``weight_scale`` (float32), ``bias`` (float, if any) and
    ``input_smooth`` (if smoothed). Create with :meth:`from_float`; the int8 weight is a
    frozen buffer, the bias a parameter, and the input gets gradients (for explanations and
    for fine-tuning the layers before it).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight", torch.zeros(out_features, in_features, dtype=torch.int8, device=device))
        self.register_buffer("weight_scale", torch.ones(out_features, dtype=torch.float32, device=device))
        self.register_buffer("input_smooth", None)
        if bias:
            self.bias = torch.nn.Parameter(torch.zeros(out_features, device=device, dtype=dtype or torch.float32))
        else:
            self.register_parameter("bias", None)

    @classmethod
    def from_float(cls, linear: torch.nn.Linear, smooth: torch.Tensor | None = None) -> "Int8Linear":
        """Quantise `linear`'s weight per output channel (symmetric absmax). With `smooth`
        [in_features], the weight's columns are scaled by it first and the layer divides its
        input by it."""
        w = linear.weight.detach().float()
        m = cls(linear.in_features, linear.out_features, linear.bias is not None, device=w.device)
        if smooth is not None:
            smooth = smooth.detach().float().to(w.device)
            if smooth.shape != (linear.in_features,):
                raise ValueError(
                    f"from_float: smooth must have shape [{linear.in_features}], got {tuple(smooth.shape)}"
                )
            w = w * smooth[None, :]
            m.input_smooth = smooth
        q, s = _ops._quantize_per_row(w)
        m.weight.copy_(q)
        m.weight_scale.copy_(s)
        if linear.bias is not None:
            m.bias = torch.nn.Parameter(linear.bias.detach().clone())
        return m

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # input_smooth is present only for smoothed layers: make room for it before loading.
        key = prefix + "input_smooth"
        if key in state_dict and self.input_smooth is None:
            self.input_smooth = torch.empty_like(state_dict[key])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def dequantized_weight(self) -> torch.Tensor:
        """The float32 weight this layer multiplies by (divided back by the smoothing)."""
        w = self.weight.float() * self.weight_scale[:, None]
        return w if self.input_smooth is None else w / self.input_smooth[None, :]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise RuntimeError(
                f"Int8Linear: input's last dimension ({x.shape[-1]}) must equal in_features ({self.in_features})"
            )
        if not x.is_floating_point():
            raise TypeError(f"Int8Linear: input must be floating point, got {x.dtype}")
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)
        if self.input_smooth is not None:
            x2 = x2 / self.input_smooth.to(x2.dtype)
        # float() keeps the scales float32 after a module-wide .half() / .to(dtype).
        out = _Int8LinearFn.apply(x2, self.weight, self.weight_scale.float(), self.bias)
        return out.reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, smoothed={self.input_smooth is not None}"
        )
