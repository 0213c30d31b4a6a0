"""Elman RNN: fake impls, gradients and the functional entries.

Ops (schemas in csrc/ops/schemas.h):
- ``fastlayers::rnn_recurrence(input_proj, batch_sizes, h0, weight_hh, bias, relu, reverse)
  -> (output, h_n)``: the recurrence of one layer over packed rows (torch's PackedSequence
  layout; a padded [T, B, H] sequence is batch_sizes = [B] * T), h_t = act(input_proj_t +
  bias + h_{t-1} weight_hh^T), the bias and activation inside the kernel. One direction
  (weight_hh [H, H], h0 [B, H], bias [H]; ``reverse`` runs it from the last step), or both in
  one launch (weight_hh [2, H, H], h0 [2, B, H], bias [2, H]; the second in reverse; rows of
  input_proj and output [2 H] wide). ``input_proj`` = x W_ih^T (+ b_ih) for every step (and
  both directions) is one GEMM, done here.
- ``fastlayers::rnn_recurrence_backward(grad_output, grad_hn, output, h0, weight_hh,
  batch_sizes, relu, reverse) -> (grad_input_proj, grad_h0, grad_weight_hh, grad_bias)``.

``rnn`` runs a whole (multi-layer, bidirectional) RNN on them, as torch's ``_VF.rnn_tanh``
/ ``_VF.rnn_relu``; inter-layer dropout is ``fastlayers::dropout`` on each layer's output,
its Philox seed and offset drawn from torch's generator here and passed to the op, so the ops
stay pure (backward regenerates the mask from them). Everything is a custom op with a
fake impl, so the RNN compiles under ``torch.compile(fullgraph=True)`` without graph breaks.
"""

import torch
import torch.nn.functional as F

from fastlayers._config import fallback
from fastlayers.ops import dropout as _dropout
from fastlayers.ops._common import dtype_unsupported_reason

CPU_DTYPES = (torch.float32, torch.float64, torch.bfloat16)
# csrc/kernels/cuda/rnn.cu: a persistent cooperative kernel, or a launch per step.
CUDA_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

OPS = ("rnn_recurrence", "rnn_recurrence_backward")

_rec = torch.ops.fastlayers.rnn_recurrence.default
_rec_backward = torch.ops.fastlayers.rnn_recurrence_backward.default


@torch.library.register_fake("fastlayers::rnn_recurrence")
def _rec_fake(input_proj, batch_sizes, h0, weight_hh, bias, relu, reverse):
    return input_proj.new_empty(input_proj.shape), h0.new_empty(h0.shape)


@torch.library.register_fake("fastlayers::rnn_recurrence_backward")
def _rec_backward_fake(grad_output, grad_hn, output, h0, weight_hh, batch_sizes, relu, reverse):
    return (
        output.new_empty(output.shape),
        h0.new_empty(h0.shape),
        weight_hh.new_empty(weight_hh.shape),
        weight_hh.new_empty(weight_hh.shape[:-1]),
    )


def _setup(ctx, inputs, output):
    _, batch_sizes, h0, weight_hh, bias, relu, reverse = inputs
    ctx.save_for_backward(output[0], h0, weight_hh, batch_sizes)
    ctx.relu, ctx.reverse, ctx.has_bias = relu, reverse, bias is not None


def _grad(ctx, grad_output, grad_hn):
    output, h0, weight_hh, batch_sizes = ctx.saved_tensors
    need = ctx.needs_input_grad
    gz, gh0, gw, gb = _rec_backward(grad_output, grad_hn, output, h0, weight_hh, batch_sizes, ctx.relu, ctx.reverse)
    return (
        gz if need[0] else None,
        None,
        gh0 if need[2] else None,
        gw if need[3] else None,
        gb if ctx.has_bias and need[4] else None,
        None,
        None,
    )


torch.library.register_autograd("fastlayers::rnn_recurrence", _grad, setup_context=_setup)


def _check_nonlinearity(nonlinearity):
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'.")
    return nonlinearity == "relu"


def unsupported_reason(input: torch.Tensor) -> str | None:
    """Why no fastlayers kernel covers this input, or None when one does."""
    return dtype_unsupported_reason(input, CPU_DTYPES, CUDA_DTYPES)


def _steps(t, b, device):
    """batch_sizes of a padded sequence: [b] * t (no steps when the batch is empty)."""
    return torch.full((t if b > 0 else 0,), b, dtype=torch.long)


def rnn_cell(
    input: torch.Tensor,
    hx: torch.Tensor | None,
    w_ih: torch.Tensor,
    w_hh: torch.Tensor,
    b_ih: torch.Tensor | None = None,
    b_hh: torch.Tensor | None = None,
    nonlinearity: str = "tanh",
) -> torch.Tensor:
    """One step, as :class:`torch.nn.RNNCell`: h' = act(input W_ih^T + b_ih + hx W_hh^T +
    b_hh). input (B, I) or unbatched (I); hx like the output, zeros when None."""
    relu = _check_nonlinearity(nonlinearity)
    if input.dim() not in (1, 2):
        raise ValueError(f"RNNCell: Expected input to be 1D or 2D, got {input.dim()}D instead")
    if hx is not None and hx.dim() not in (1, 2):
        raise ValueError(f"RNNCell: Expected hidden to be 1D or 2D, got {hx.dim()}D instead")
    batched = input.dim() == 2
    x = input if batched else input.unsqueeze(0)
    hidden = w_hh.shape[1]
    h = torch.zeros(x.shape[0], hidden, dtype=x.dtype, device=x.device) if hx is None else hx
    h = h if batched or hx is None else h.unsqueeze(0)
    # torch's checks (check_rnn_cell_forward_input / _hidden), with its messages.
    if x.shape[1] != w_ih.shape[1]:
        raise RuntimeError(f"input has inconsistent input_size: got {x.shape[1]} expected {w_ih.shape[1]}")
    if h.dim() != 2 or x.shape[0] != h.shape[0]:
        raise RuntimeError(f"Input batch size {x.shape[0]} doesn't match hidden0 batch size {h.shape[0]}")
    if h.shape[1] != hidden:
        raise RuntimeError(f"hidden0 has inconsistent hidden_size: got {h.shape[1]}, expected {hidden}")
    reason = unsupported_reason(x)
    if reason is not None:
        fallback("rnn_cell", reason)
        cell = torch.rnn_relu_cell if relu else torch.rnn_tanh_cell
        out = cell(x, h, w_ih, w_hh, b_ih, b_hh)
    else:
        xw = F.linear(x, w_ih, b_ih)
        out, _ = _rec(xw, _steps(1, x.shape[0], x.device), h, w_hh, b_hh, relu, False)
    return out if batched else out.squeeze(0)


def rnn(
    input: torch.Tensor,
    hx: torch.Tensor,
    params: list,
    has_biases: bool,
    num_layers: int,
    dropout: float,
    training: bool,
    bidirectional: bool,
    batch_first: bool = False,
    batch_sizes: torch.Tensor | None = None,
    nonlinearity: str = "tanh",
) -> tuple[torch.Tensor, torch.Tensor]:
    """A whole RNN, as torch's ``_VF.rnn_tanh`` / ``_VF.rnn_relu``: (output, h_n).

    input: (T, B, I), (B, T, I) when batch_first, or the packed rows (rows, I) of a
    PackedSequence with its ``batch_sizes``; hx: (num_layers * directions, B, H); params:
    torch's ``_flat_weights`` (w_ih, w_hh[, b_ih, b_hh] per layer and direction).
    """
    relu = _check_nonlinearity(nonlinearity)
    reason = unsupported_reason(input)
    if reason is not None:
        fallback("rnn", reason)
        fn = torch._VF.rnn_relu if relu else torch._VF.rnn_tanh
        if batch_sizes is None:
            return fn(input, hx, params, has_biases, num_layers, dropout, training, bidirectional, batch_first)
        return fn(input, batch_sizes, hx, params, has_biases, num_layers, dropout, training, bidirectional)
    dirs = 2 if bidirectional else 1
    per = 4 if has_biases else 2
    if batch_sizes is None:
        x = input.transpose(0, 1) if batch_first else input
        steps, batch = x.shape[0], x.shape[1]
        if steps == 0:
            raise RuntimeError("Expected sequence length to be larger than 0 in RNN")
        bs = _steps(steps, batch, x.device)
        layer_in = x.reshape(steps * batch, x.shape[2])
    else:
        bs, layer_in = batch_sizes, input
    hidden = []
    for layer in range(num_layers):
        ws = [params[(layer * dirs + d) * per : (layer * dirs + d + 1) * per] for d in range(dirs)]
        h0 = hx[layer * dirs : (layer + 1) * dirs]
        if dirs == 1:
            w_ih, w_hh, *b = ws[0]
            xw = F.linear(layer_in, w_ih, b[0] if has_biases else None)
            layer_in, h_n = _rec(xw, bs, h0[0], w_hh, b[1] if has_biases else None, relu, False)
            hidden.append(h_n.unsqueeze(0))
        else:
            # Both directions in one launch: one GEMM projects the input for both (their W_ih
            # stacked), and the op writes the layer's output [rows, 2 H] as torch lays it out.
            w_ih = torch.cat([w[0] for w in ws])
            w_hh = torch.stack([w[1] for w in ws])
            b_ih = torch.cat([w[2] for w in ws]) if has_biases else None
            b_hh = torch.stack([w[3] for w in ws]) if has_biases else None
            layer_in, h_n = _rec(F.linear(layer_in, w_ih, b_ih), bs, h0, w_hh, b_hh, relu, False)
            hidden.append(h_n)
        if dropout > 0 and training and layer < num_layers - 1:
            layer_in = _dropout.dropout(layer_in, dropout, True)
    h_n = torch.cat(hidden, 0)
    if batch_sizes is not None:
        return layer_in, h_n
    output = layer_in.reshape(steps, batch, layer_in.shape[-1])
    return (output.transpose(0, 1) if batch_first else output), h_n
