"""Attribution and attention maps for models built from fastlayers layers.

- :func:`saliency`: the gradient of the target logit with respect to the inputs (Simonyan et
  al. 2014), as ``captum.attr.Saliency``.
- :func:`integrated_gradients`: Sundararajan et al. 2017, with captum's quadratures and
  semantics (``captum.attr.IntegratedGradients``), the interpolation batch chunked to fit
  memory.
- :func:`smoothgrad`: the mean saliency over noisy copies of the inputs (Smilkov et al. 2017),
  as captum's ``NoiseTunnel(Saliency(model))`` with ``nt_type="smoothgrad"``.
- :func:`attention_maps` and :func:`attention_rollout`: the attention probabilities of every
  :class:`fastlayers.nn.MultiheadAttention` in a forward pass, from the fused kernel's
  log-sum-exp, and their rollout through the layers (Abnar & Zuidema 2020).
- :func:`plot`: an attribution drawn over an image, or as per-token bars.

Every gradient is taken by autograd through the model as it is, so a fastlayers model's
backward runs fastlayers' backward kernels. The model's train/eval mode is left unchanged:
call ``model.eval()`` first for deterministic attributions when it has dropout.

Memory rule, used when ``internal_batch_size`` is None: one forward on the inputs is run with
``torch.autograd.graph.saved_tensors_hooks`` counting the bytes autograd saves for backward
(distinct storages, the model's parameters and buffers left out). The bytes of one copy of the
batch are that count plus the output's and twice the input's (the interpolated input and its
gradient); a chunk holds as many copies (interpolation steps, noisy samples) as fit in the
budget, at least one. The budget is half the free memory of a CUDA device
(``torch.cuda.mem_get_info``) and :data:`MEMORY_BUDGET_BYTES` on any other device. The probe
costs one forward of the batch, against the n_steps (or nt_samples) forwards and backwards.
"""

import contextlib
import inspect
import warnings

import numpy as np
import torch

__all__ = [
    "MEMORY_BUDGET_BYTES",
    "attention_maps",
    "attention_rollout",
    "integrated_gradients",
    "plot",
    "saliency",
    "smoothgrad",
]

# The working-memory budget of one chunk off CUDA (the CPU): 1 GiB, small next to a host's
# memory; 50 interpolation steps of 100 samples of any seed model (fastlayers.models) fit in it.
MEMORY_BUDGET_BYTES = 1 << 30

METHODS = ("gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle")


def _select(out: torch.Tensor, target, copies: int = 1) -> torch.Tensor:
    """The target logit of each row of `out` [copies * N, C]: target an int, a sequence or a
    tensor of N class indices (repeated for each copy), or None for an output of one value per
    row ([M] or [M, 1])."""
    if target is None:
        if out.dim() > 2 or (out.dim() == 2 and out.shape[1] != 1):
            raise ValueError(f"target is None, but the model's output {tuple(out.shape)} has several values per row")
        return out.reshape(out.shape[0])
    if out.dim() != 2:
        raise ValueError(f"expected the model to return logits [N, C], got {tuple(out.shape)}")
    if isinstance(target, int):
        return out[:, target]
    target = torch.as_tensor(target, device=out.device)
    if target.dim() == 0:
        return out[:, int(target)]
    if target.dim() != 1 or target.shape[0] * copies != out.shape[0]:
        raise ValueError(
            f"target must be an int or hold one class index per sample ({out.shape[0] // copies}), "
            f"got shape {tuple(target.shape)}"
        )
    return out.gather(1, target.long().repeat(copies)[:, None])[:, 0]


def _input_grad(model, x: torch.Tensor, target, copies: int = 1) -> torch.Tensor:
    """d(sum of the target logits)/dx for a batch `x` of `copies` stacked copies of the inputs."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        selected = _select(model(x), target, copies)
        (grad,) = torch.autograd.grad(selected.sum(), x)
    return grad


def saliency(model: torch.nn.Module, inputs: torch.Tensor, target, abs: bool = True) -> torch.Tensor:
    """The gradient of the target logit with respect to `inputs` [N, ...] (its absolute value
    when `abs`), shaped as `inputs`: ``captum.attr.Saliency(model).attribute(inputs, target,
    abs)``. target: a class index, or one per sample (a sequence or tensor of N indices)."""
    grad = _input_grad(model, inputs, target)
    return grad.abs() if abs else grad


def _quadrature(method: str, n_steps: int, dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(step sizes, alphas) of n_steps nodes on [0, 1], as captum's approximation_parameters
    computes them (here in the inputs' dtype where captum rounds step sizes to float32)."""
    if method == "gausslegendre":
        if n_steps < 1:
            raise ValueError(f"n_steps must be at least 1 for gausslegendre, got {n_steps}")
        nodes, weights = np.polynomial.legendre.leggauss(n_steps)
        alphas, steps = 0.5 * (1.0 + nodes), 0.5 * weights  # from [-1, 1] to [0, 1]
    elif method in METHODS:
        if n_steps < 2:
            raise ValueError(f"n_steps must be at least 2 for {method}, got {n_steps}")
        steps = np.full(n_steps, 1.0 / n_steps)
        if method == "riemann_trapezoid":
            alphas = np.linspace(0.0, 1.0, n_steps)
            steps[0] /= 2
            steps[-1] /= 2
        elif method == "riemann_left":
            alphas = np.linspace(0.0, 1.0 - 1.0 / n_steps, n_steps)
        elif method == "riemann_right":
            alphas = np.linspace(1.0 / n_steps, 1.0, n_steps)
        else:
            alphas = np.linspace(1.0 / (2 * n_steps), 1.0 - 1.0 / (2 * n_steps), n_steps)
    else:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    return (torch.as_tensor(steps, dtype=dtype, device=device), torch.as_tensor(alphas, dtype=dtype, device=device))


def _memory_budget(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free // 2
    return MEMORY_BUDGET_BYTES


def _bytes_per_copy(model, inputs: torch.Tensor) -> int:
    """The memory one more copy of the batch `inputs` costs a forward and backward: the
    module docstring's memory rule."""
    excluded = {t.untyped_storage().data_ptr() for t in (*model.parameters(), *model.buffers())}
    saved: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in excluded:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    x = inputs.detach().requires_grad_(True)
    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(x)
    return sum(saved.values()) + out.numel() * out.element_size() + 2 * x.numel() * x.element_size()


def _copies_per_chunk(model, inputs: torch.Tensor) -> int:
    """How many copies of the batch `inputs` fit in the memory budget at once (at least one)."""
    return max(1, _memory_budget(inputs.device) // max(1, _bytes_per_copy(model, inputs)))


def _chunk_steps(model, inputs, internal_batch_size) -> int:
    n = inputs.shape[0]
    if internal_batch_size is None:
        return _copies_per_chunk(model, inputs)
    if internal_batch_size < n:
        warnings.warn(
            f"internal_batch_size {internal_batch_size} is less than the number of inputs {n}: "
            f"running {n} rows (one copy of the batch) at a time",
            stacklevel=3,
        )
    return max(1, internal_batch_size // n)


def _baselines_like(inputs: torch.Tensor, baselines) -> torch.Tensor:
    if baselines is None:
        return torch.zeros_like(inputs)
    if isinstance(baselines, (int, float)):
        return torch.full_like(inputs, baselines)
    if not isinstance(baselines, torch.Tensor):
        raise TypeError(f"baselines must be None, a number or a tensor, got {type(baselines).__name__}")
    try:
        return torch.broadcast_to(baselines.to(inputs.device, inputs.dtype), inputs.shape)
    except RuntimeError as err:
        raise ValueError(
            f"baselines of shape {tuple(baselines.shape)} do not broadcast to the inputs' {tuple(inputs.shape)}"
        ) from err


def integrated_gradients(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    target,
    baselines=None,
    n_steps: int = 50,
    method: str = "gausslegendre",
    internal_batch_size: int | None = None,
    return_convergence_delta: bool = False,
):
    """Integrated gradients of the target logit for `inputs` [N, ...]:
    ``(inputs - baselines) * sum_i step_i * dF/dx(baselines + alpha_i (inputs - baselines))``,
    as ``captum.attr.IntegratedGradients(model).attribute`` with the same arguments.

    baselines: None (zeros), a number, or a tensor that broadcasts to `inputs` (one per sample
    or one for all). method: "gausslegendre" (Gauss-Legendre nodes and weights on [0, 1]) or
    "riemann_trapezoid" (captum's "riemann_left", "riemann_right" and "riemann_middle" too).
    internal_batch_size: the rows per forward (at least one copy of the batch), so
    ``internal_batch_size // N`` steps per chunk, as captum; None chooses them by the module
    docstring's memory rule.

    Returns the attributions, shaped as `inputs`; with `return_convergence_delta` also the
    completeness error per sample [N]: the attributions' sum minus F(inputs) - F(baselines)
    for the target.
    """
    if inputs.dim() < 1 or inputs.shape[0] == 0:
        raise ValueError(f"inputs must be a non-empty batch [N, ...], got shape {tuple(inputs.shape)}")
    inputs = inputs.detach()
    base = _baselines_like(inputs, baselines).detach()
    steps, alphas = _quadrature(method, n_steps, inputs.dtype, inputs.device)
    per_chunk = _chunk_steps(model, inputs, internal_batch_size)
    diff = inputs - base
    ones = (1,) * inputs.dim()
    total = torch.zeros_like(inputs)
    for start in range(0, n_steps, per_chunk):
        a = alphas[start : start + per_chunk]
        k = a.shape[0]
        # Step-major, as captum's cat over alphas: rows [i * N, (i + 1) * N) are step i.
        scaled = (base + a.view(k, *ones) * diff).reshape(k * inputs.shape[0], *inputs.shape[1:])
        grad = _input_grad(model, scaled, target, copies=k).view(k, *inputs.shape)
        total += (grad * steps[start : start + k].view(k, *ones)).sum(0)
    attributions = total * diff
    if not return_convergence_delta:
        return attributions
    with torch.no_grad():
        gap = _select(model(inputs), target) - _select(model(base), target)
    return attributions, attributions.flatten(1).sum(1) - gap


def smoothgrad(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    target,
    nt_samples: int = 25,
    stdevs: float = 0.15,
    relative: bool = True,
    abs: bool = True,
    generator: torch.Generator | None = None,
    internal_batch_size: int | None = None,
) -> torch.Tensor:
    """SmoothGrad: the mean of :func:`saliency` (with `abs`) over `nt_samples` copies of
    `inputs` [N, ...] with Gaussian noise added, shaped as `inputs`.

    The noise's standard deviation is ``stdevs * (max - min)`` of each sample when `relative`
    (the paper's noise level; 0.15 is in its recommended 10-20 %), else `stdevs` itself (as
    captum's NoiseTunnel). The noise is one draw of ``torch.randn((nt_samples, *inputs.shape),
    generator=generator)`` on the inputs' device (torch's default generator when None), scaled,
    so a seeded generator reproduces the result. internal_batch_size: rows per forward, as in
    :func:`integrated_gradients` (None: the memory rule).
    """
    if nt_samples < 1:
        raise ValueError(f"nt_samples must be at least 1, got {nt_samples}")
    inputs = inputs.detach()
    n = inputs.shape[0]
    ones = (1,) * (inputs.dim() - 1)
    if relative:
        flat = inputs.flatten(1)
        sigma = (stdevs * (flat.amax(1) - flat.amin(1))).view(n, *ones)
    else:
        sigma = torch.full((n, *ones), float(stdevs), dtype=inputs.dtype, device=inputs.device)
    noise = torch.randn((nt_samples, *inputs.shape), generator=generator, dtype=inputs.dtype, device=inputs.device)
    noisy = inputs + noise * sigma
    per_chunk = _chunk_steps(model, inputs, internal_batch_size)
    total = torch.zeros_like(inputs)
    for start in range(0, nt_samples, per_chunk):
        chunk = noisy[start : start + per_chunk]
        k = chunk.shape[0]
        grad = _input_grad(model, chunk.reshape(k * n, *inputs.shape[1:]), target, copies=k)
        total += (grad.abs() if abs else grad).view(k, *inputs.shape).sum(0)
    return total / nt_samples


class _AttentionCapture:
    """Forward hooks on a fastlayers MultiheadAttention that call it with need_weights=True,
    average_attn_weights=False (so its kernel recomputes the probabilities from the fused
    forward's log-sum-exp), record the per-head weights, and return to the caller what it
    asked for."""

    def __init__(self, maps: list):
        self.maps = maps
        self.asked: list[tuple[bool, bool]] = []  # a stack: (need_weights, average) per open call

    def pre(self, module, args, kwargs):
        from fastlayers.ops import attention as at
        from fastlayers.ops._common import dtype_unsupported_reason

        bound = inspect.signature(module.forward).bind(*args, **kwargs)
        bound.apply_defaults()
        call = bound.arguments
        reason = dtype_unsupported_reason(call["query"], at.CPU_DTYPES, at.CUDA_DTYPES)
        if reason is not None:
            raise RuntimeError(f"attention_maps: no fastlayers attention kernel for {reason}")
        self.asked.append((call["need_weights"], call["average_attn_weights"]))
        call["need_weights"], call["average_attn_weights"] = True, False
        return (), dict(call)

    def post(self, module, args, kwargs, output):
        need, average = self.asked.pop()
        out, weights = output
        self.maps.append((weights if weights.dim() == 4 else weights.unsqueeze(0)).detach())
        if not need:
            return out, None
        return out, weights.mean(dim=-3) if average else weights


def attention_maps(model: torch.nn.Module, inputs) -> list[torch.Tensor]:
    """The attention probabilities [N, heads, L, S] of each :class:`fastlayers.nn.MultiheadAttention`
    call in a forward pass of `model` on `inputs` (a tensor, or a tuple of positional
    arguments), in call order; [1, heads, L, S] for an unbatched call.

    Each map is computed by the fastlayers probability kernel from the fused attention
    kernel's log-sum-exp (the module called with need_weights=True, average_attn_weights=False;
    what its caller asked for is returned to it), never by an unfused softmax. Runs without
    gradients, in the model's current mode: in training mode the maps are those after dropout.
    The modules' outputs are unchanged, except where a caller passes is_causal without weights
    and the module has bias_k or add_zero_attn (then torch's MHA, too, uses attn_mask instead).
    """
    from fastlayers.nn import MultiheadAttention

    maps: list[torch.Tensor] = []
    capture = _AttentionCapture(maps)
    modules = [m for m in model.modules() if isinstance(m, MultiheadAttention)]
    if not modules:
        raise ValueError("attention_maps: the model has no fastlayers.nn.MultiheadAttention layer")
    with contextlib.ExitStack() as stack:
        for m in modules:
            stack.callback(m.register_forward_pre_hook(capture.pre, with_kwargs=True).remove)
            stack.callback(m.register_forward_hook(capture.post, with_kwargs=True).remove)
        with torch.no_grad():
            model(*(inputs if isinstance(inputs, tuple) else (inputs,)))
    return maps


def attention_rollout(maps, head_fusion: str = "mean", residual: bool = True) -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema 2020) of `maps`, the layers' attention in forward
    order (from :func:`attention_maps`: [N, heads, L, S], or heads already fused: [N, L, S]):
    fuse the heads ("mean", "max" or "min"); with `residual` add the identity for the skip
    connection (self-attention, L == S); renormalise the rows to sum to 1; multiply through the
    layers, R = A_last @ ... @ A_first. Returns R [N, L, S]: how much each output token of
    the last layer draws on each input token."""
    if len(maps) == 0:
        raise ValueError("attention_rollout: no attention maps")
    fuse = {"mean": lambda a: a.mean(1), "max": lambda a: a.amax(1), "min": lambda a: a.amin(1)}
    if head_fusion not in fuse:
        raise ValueError(f"head_fusion must be one of {', '.join(fuse)}, got {head_fusion!r}")
    rollout = None
    for i, a in enumerate(maps):
        if a.dim() not in (3, 4):
            raise ValueError(f"attention_rollout: map {i} must be [N, heads, L, S] or [N, L, S], got {tuple(a.shape)}")
        a = fuse[head_fusion](a) if a.dim() == 4 else a
        if residual:
            if a.shape[-1] != a.shape[-2]:
                raise ValueError(
                    f"attention_rollout: residual needs L == S (self-attention), map {i} is {tuple(a.shape)}"
                )
            a = a + torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
        rows = a.sum(-1, keepdim=True)
        a = torch.where(rows > 0, a / rows, a)  # a fully masked row (no residual) stays zero
        if rollout is not None and a.shape[-1] != rollout.shape[-2]:
            raise ValueError(f"attention_rollout: map {i} attends over {a.shape[-1]} tokens, not {rollout.shape[-2]}")
        rollout = a if rollout is None else a @ rollout
    return rollout


def plot(
    attribution: torch.Tensor, input: torch.Tensor, kind: str | None = None, title: str | None = None, labels=None
):
    """A matplotlib Figure (Agg canvas; pyplot and the display are not touched) of one sample's
    `attribution` and `input`, shaped alike.

    kind "image" ([C, H, W] or [H, W]): the input, averaged over channels, in gray, with the
    attribution summed over channels as a semi-transparent heatmap over it (a diverging map
    centred on 0 when it has both signs) and a colorbar. kind "sequence" ([T] or [T, F]): one
    bar per token of the attribution summed over its features, `labels` naming the tokens.
    None picks "image" for 3-D and "sequence" for 1-D inputs; a 2-D one needs `kind`.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    attr = torch.as_tensor(attribution).detach().to("cpu", torch.float64)
    x = torch.as_tensor(input).detach().to("cpu", torch.float64)
    if attr.shape != x.shape:
        raise ValueError(f"attribution {tuple(attr.shape)} and input {tuple(x.shape)} must have the same shape")
    if kind is None:
        if x.dim() == 2:
            raise ValueError(
                "plot: a 2-D input is an image [H, W] or a sequence [T, F]: pass kind='image' or kind='sequence'"
            )
        kind = {3: "image", 1: "sequence"}.get(x.dim())
    if kind == "image" and x.dim() in (2, 3):
        fig = Figure(figsize=(5, 4.2), layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        image = x if x.dim() == 2 else x.mean(0)
        heat = attr if attr.dim() == 2 else attr.sum(0)
        ax.imshow(image.numpy(), cmap="gray", interpolation="nearest")
        if heat.min() < 0 < heat.max():
            lim = float(heat.abs().max())
            cmap, vmin, vmax = "bwr", -lim, lim
        else:
            cmap, vmin, vmax = "inferno", float(heat.min()), float(heat.max())
        overlay = ax.imshow(heat.numpy(), cmap=cmap, vmin=vmin, vmax=vmax, alpha=0.55, interpolation="nearest")
        fig.colorbar(overlay, ax=ax, label="attribution" + (" (sum over channels)" if attr.dim() == 3 else ""))
        ax.set_xlabel("x (pixel)")
        ax.set_ylabel("y (pixel)")
        ax.set_title(title or "Attribution over the input")
        return fig
    if kind == "sequence" and x.dim() in (1, 2):
        per_token = (attr if attr.dim() == 1 else attr.sum(1)).numpy()
        fig = Figure(figsize=(max(4.0, 0.45 * len(per_token) + 2), 3.5), layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        colors = ["tab:red" if v < 0 else "tab:blue" for v in per_token]
        positions = np.arange(len(per_token))
        ax.bar(positions, per_token, color=colors)
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_xticks(positions, labels=labels if labels is not None else [str(i) for i in positions])
        ax.set_xlabel("token")
        ax.set_ylabel("attribution" + (" (sum over features)" if attr.dim() == 2 else ""))
        ax.set_title(title or "Attribution per token")
        return fig
    raise ValueError(f"plot: kind {kind!r} does not fit an input of shape {tuple(x.shape)}")
