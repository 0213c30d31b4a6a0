"""Positional encodings for sequence models: sinusoidal (computed in the kernel) and learned."""

import torch

from fastlayers.ops.positional_encoding import add_positional_encoding


class PositionalEncoding(torch.nn.Module):
    """Adds the sinusoidal positional encoding of "Attention Is All You Need" (3.5), then
    applies dropout, as the PyTorch Transformer tutorial's module does, but with the encoding
    computed in the kernel instead of a stored [max_len, d_model] table (so the module has
    no buffers and an empty state_dict).

    Input (L, N, E), or (N, L, E) with ``batch_first=True``, or unbatched (L, E); E must be
    ``d_model`` and L at most ``max_len``.
    """

    def __init__(self, d_model: int, max_len: int = 5000, dropout: float = 0.0, batch_first: bool = False):
        super().__init__()
        if d_model <= 0 or max_len <= 0:
            raise ValueError(f"d_model and max_len must be positive, got {d_model} and {max_len}")
        self.d_model, self.max_len, self.batch_first = d_model, max_len, batch_first
        self.dropout = torch.nn.Dropout(dropout)

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, max_len={self.max_len}, batch_first={self.batch_first}"

    def _seq_dim(self, x: torch.Tensor) -> int:
        if x.dim() < 2:
            raise ValueError(f"PositionalEncoding: expected (L, E), (L, N, E) or (N, L, E) input, got {tuple(x.shape)}")
        if x.shape[-1] != self.d_model:
            raise ValueError(f"PositionalEncoding: expected last dimension {self.d_model}, got {x.shape[-1]}")
        seq_dim = 1 if (self.batch_first and x.dim() >= 3) else 0
        if x.shape[seq_dim] > self.max_len:
            raise ValueError(f"PositionalEncoding: sequence length {x.shape[seq_dim]} exceeds max_len={self.max_len}")
        return seq_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(add_positional_encoding(x, self._seq_dim(x)))


class LearnedPositionalEncoding(PositionalEncoding):
    """Adds a learned embedding of each position (a ``weight`` parameter of shape
    [max_len, d_model], initialised from N(0, 0.02^2)), then applies dropout. Same input
    layouts as :class:`PositionalEncoding`."""

    def __init__(self, d_model: int, max_len: int = 5000, dropout: float = 0.0, batch_first: bool = False):
        super().__init__(d_model, max_len, dropout, batch_first)
        self.weight = torch.nn.Parameter(torch.empty(max_len, d_model))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        torch.nn.init.normal_(self.weight, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq_dim = self._seq_dim(x)
        length = x.shape[seq_dim]
        pe = self.weight[:length].view(length, *([1] * (x.dim() - seq_dim - 2)), self.d_model)
        return self.dropout(x + pe)
