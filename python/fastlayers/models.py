"""Seed models built on fastlayers layers: a CNN, an RNN classifier and a Transformer encoder.

Every convolution, pooling, recurrence, attention, softmax and positional-encoding layer is a
fastlayers layer; Linear, LayerNorm and Dropout stay torch.nn. The defaults fit sklearn's 8x8
digits: the CNN takes the images [N, 1, 8, 8], the RNN and the Transformer take their rows as
a sequence [N, 8, 8] of 8 steps (tokens) of 8 features.

Each model's ``torch_reference()`` is a twin built from torch.nn layers only, with the same
state_dict keys and a copy of the parameters: the baseline the models are tested and
benchmarked against. Both are built by the same constructor (the private ``_torch`` flag
picks the layer implementations), so the structure is written once.
"""

import math
from types import SimpleNamespace

import torch
import torch.nn.functional as F

import fastlayers.nn as fnn

__all__ = ["CNN", "RNNClassifier", "TorchPositionalEncoding", "TransformerEncoder"]


class TorchPositionalEncoding(torch.nn.Module):
    """Pure-torch twin of :class:`fastlayers.nn.PositionalEncoding`: the same constructor,
    input layouts and (empty) state_dict, adding the same sinusoidal encoding, which is
    recomputed at each call (no buffers).

    As the kernel does, the encoding is computed in float64, rounded to the accumulation type
    (float64 for float64 inputs, float32 otherwise) and added in that type: the result is
    bit-identical to fastlayers' in float32 and bfloat16, and within a few ulps in float64
    (torch's vectorised sin/cos against the C library's).
    """

    def __init__(self, d_model: int, max_len: int = 5000, dropout: float = 0.0, batch_first: bool = False):
        super().__init__()
        if d_model <= 0 or max_len <= 0:
            raise ValueError(f"d_model and max_len must be positive, got {d_model} and {max_len}")
        self.d_model, self.max_len, self.batch_first = d_model, max_len, batch_first
        self.dropout = torch.nn.Dropout(dropout)

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, max_len={self.max_len}, batch_first={self.batch_first}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2 or x.shape[-1] != self.d_model:
            raise ValueError(f"TorchPositionalEncoding: expected [..., {self.d_model}] input, got {tuple(x.shape)}")
        seq_dim = 1 if (self.batch_first and x.dim() >= 3) else 0
        length = x.shape[seq_dim]
        if length > self.max_len:
            raise ValueError(f"TorchPositionalEncoding: sequence length {length} exceeds max_len={self.max_len}")
        # w_i = 10000^(-2i / d_model); even features get sin(pos * w_i), odd ones cos(pos * w_i).
        pos = torch.arange(length, dtype=torch.float64, device=x.device)[:, None]
        w = torch.exp(
            torch.arange(0, self.d_model, 2, dtype=torch.float64, device=x.device) * (-math.log(10000.0) / self.d_model)
        )
        pe = torch.zeros(length, self.d_model, dtype=torch.float64, device=x.device)
        pe[:, 0::2] = torch.sin(pos * w)
        pe[:, 1::2] = torch.cos(pos * w[: self.d_model // 2])
        acc = torch.float64 if x.dtype == torch.float64 else torch.float32
        pe = pe.to(acc).view(length, *([1] * (x.dim() - seq_dim - 2)), self.d_model)
        return self.dropout((x.to(acc) + pe).to(x.dtype))


_FASTLAYERS = SimpleNamespace(
    Conv2d=fnn.Conv2d,
    MaxPool2d=fnn.MaxPool2d,
    RNN=fnn.RNN,
    MultiheadAttention=fnn.MultiheadAttention,
    PositionalEncoding=fnn.PositionalEncoding,
    Softmax=fnn.Softmax,
)
_TORCH = SimpleNamespace(
    Conv2d=torch.nn.Conv2d,
    MaxPool2d=torch.nn.MaxPool2d,
    RNN=torch.nn.RNN,
    MultiheadAttention=torch.nn.MultiheadAttention,
    PositionalEncoding=TorchPositionalEncoding,
    Softmax=torch.nn.Softmax,
)


class _SeedModel(torch.nn.Module):
    """What the three models share: the layer set, predict_proba, reset_parameters and the
    torch twin. A subclass calls ``_setup(locals())`` first in its constructor."""

    def _setup(self, config: dict) -> SimpleNamespace:
        # The constructor's arguments, to build the twin with; the layer implementations to use.
        self._config = {k: v for k, v in config.items() if k not in ("self", "__class__", "_torch")}
        layers = _TORCH if config["_torch"] else _FASTLAYERS
        self.softmax = layers.Softmax(dim=-1)
        return layers

    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities: the softmax of the logits over the last dimension."""
        return self.softmax(self(x))

    def reset_parameters(self) -> None:
        """Re-initialises every submodule's parameters as its constructor does."""
        # Children before parents: MultiheadAttention's own init zeroes out_proj.bias, so it must
        # run after out_proj's (which, as torch's, draws a uniform bias).
        for m in reversed(list(self.modules())):
            if m is self:
                continue
            if isinstance(m, torch.nn.MultiheadAttention):
                m._reset_parameters()
            elif hasattr(m, "reset_parameters"):
                m.reset_parameters()

    def torch_reference(self) -> "_SeedModel":
        """A twin of this model built from torch.nn layers only, with the same state_dict keys
        and a copy of this model's state_dict, on the same device, with the same dtype and
        train/eval mode. Building it draws no random numbers."""
        p = next(self.parameters())
        with torch.device("meta"):
            twin = type(self)(**self._config, _torch=True)
        twin = twin.to_empty(device=p.device).to(p.dtype)
        twin.load_state_dict(self.state_dict())
        return twin.train(self.training)


class CNN(_SeedModel):
    """Convolutional classifier for [N, in_channels, image_size, image_size] images: per entry
    of ``channels`` a conv (``kernel_size``, padding ``kernel_size // 2``), ReLU and 2x2 max
    pooling (``conv1``, ``pool1``, ``conv2``, ...), then flatten, ``fc1`` (``hidden`` units),
    ReLU and ``fc2`` to ``num_classes`` logits."""

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        channels: tuple = (16, 32),
        kernel_size: int = 3,
        image_size: int = 8,
        hidden: int = 64,
        _torch: bool = False,
    ):
        super().__init__()
        layers = self._setup(locals())
        if len(channels) == 0:
            raise ValueError("CNN: channels must name at least one conv layer")
        self.num_stages = len(channels)
        size, c_in = image_size, in_channels
        for i, c_out in enumerate(channels, 1):
            self.add_module(f"conv{i}", layers.Conv2d(c_in, c_out, kernel_size, padding=kernel_size // 2))
            self.add_module(f"pool{i}", layers.MaxPool2d(2))
            size = (size + 2 * (kernel_size // 2) - kernel_size + 1) // 2
            c_in = c_out
        if size <= 0:
            raise ValueError(f"CNN: {image_size}x{image_size} images are too small for {len(channels)} pooling stages")
        self.fc1 = torch.nn.Linear(c_in * size * size, hidden)
        self.fc2 = torch.nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(1, self.num_stages + 1):
            x = getattr(self, f"pool{i}")(F.relu(getattr(self, f"conv{i}")(x)))
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


class RNNClassifier(_SeedModel):
    """Sequence classifier for [N, T, input_size] inputs: an Elman RNN (``rnn``, batch_first)
    whose last layer's final hidden state (both directions concatenated when bidirectional)
    feeds a linear head ``fc`` to ``num_classes`` logits."""

    def __init__(
        self,
        input_size: int = 8,
        hidden_size: int = 64,
        num_layers: int = 1,
        num_classes: int = 10,
        nonlinearity: str = "tanh",
        bidirectional: bool = False,
        dropout: float = 0.0,
        _torch: bool = False,
    ):
        super().__init__()
        layers = self._setup(locals())
        self.rnn = layers.RNN(
            input_size,
            hidden_size,
            num_layers,
            nonlinearity=nonlinearity,
            batch_first=True,
            dropout=dropout,
            bidirectional=bidirectional,
        )
        self.fc = torch.nn.Linear(hidden_size * (2 if bidirectional else 1), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, h_n = self.rnn(x)  # h_n: [num_layers * dirs, N, hidden_size], the last layer's last
        dirs = 2 if self.rnn.bidirectional else 1
        return self.fc(h_n[-dirs:].transpose(0, 1).flatten(1))


class _EncoderBlock(torch.nn.Module):
    """Post-norm Transformer encoder layer, named as torch.nn.TransformerEncoderLayer's:
    x = norm1(x + dropout1(self_attn(x))); x = norm2(x + dropout2(linear2(dropout(relu(linear1(x))))))."""

    def __init__(self, layers: SimpleNamespace, d_model: int, nhead: int, dim_feedforward: int, dropout: float):
        super().__init__()
        self.self_attn = layers.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.linear1 = torch.nn.Linear(d_model, dim_feedforward)
        self.dropout = torch.nn.Dropout(dropout)
        self.linear2 = torch.nn.Linear(dim_feedforward, d_model)
        self.norm1 = torch.nn.LayerNorm(d_model)
        self.norm2 = torch.nn.LayerNorm(d_model)
        self.dropout1 = torch.nn.Dropout(dropout)
        self.dropout2 = torch.nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.dropout1(self.self_attn(x, x, x, need_weights=False)[0]))
        return self.norm2(x + self.dropout2(self.linear2(self.dropout(F.relu(self.linear1(x))))))


class TransformerEncoder(_SeedModel):
    """Transformer encoder classifier for [N, T, input_size] inputs (T at most ``max_len``):
    a linear token projection ``input_proj`` to ``d_model``, the sinusoidal positional
    encoding ``pos_encoder``, ``num_layers`` post-norm encoder blocks ``layers`` (self-attention
    with ``nhead`` heads, feed-forward of width ``dim_feedforward``), the mean over tokens and a
    linear head ``head`` to ``num_classes`` logits."""

    def __init__(
        self,
        input_size: int = 8,
        d_model: int = 64,
        nhead: int = 4,
        num_layers: int = 2,
        dim_feedforward: int = 128,
        num_classes: int = 10,
        max_len: int = 64,
        dropout: float = 0.0,
        _torch: bool = False,
    ):
        super().__init__()
        layers = self._setup(locals())
        self.input_proj = torch.nn.Linear(input_size, d_model)
        self.pos_encoder = layers.PositionalEncoding(d_model, max_len=max_len, dropout=dropout, batch_first=True)
        self.layers = torch.nn.ModuleList(
            _EncoderBlock(layers, d_model, nhead, dim_feedforward, dropout) for _ in range(num_layers)
        )
        self.head = torch.nn.Linear(d_model, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pos_encoder(self.input_proj(x))
        for block in self.layers:
            x = block(x)
        return self.head(x.mean(dim=1))
