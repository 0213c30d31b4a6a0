"""RNN and RNNCell on fastlayers' fused recurrence (fastlayers.ops.rnn)."""

import torch
from torch.nn.utils.rnn import PackedSequence

from fastlayers.ops import rnn as R


class RNN(torch.nn.RNNBase):
    """Drop-in for :class:`torch.nn.RNN`: the same constructor, parameters, state_dict keys,
    initialisation, inputs (padded, batch_first, unbatched, PackedSequence) and outputs.
    Each layer and direction is one GEMM for the input projection of every step and one
    fused recurrence op; the whole module compiles under ``torch.compile(fullgraph=True)``.

    It derives from :class:`torch.nn.RNNBase`, not :class:`torch.nn.RNN` (which adds only
    the constructor below and its forward): Dynamo refuses to trace any instance of
    torch.nn.RNN, and tracing through is what this module is for.
    """

    def __init__(self, *args, **kwargs):
        # torch.nn.RNN's constructor: nonlinearity is the fourth argument.
        if "proj_size" in kwargs:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        if len(args) > 3:
            self.nonlinearity = args[3]
            args = args[:3] + args[4:]
        else:
            self.nonlinearity = kwargs.pop("nonlinearity", "tanh")
        if self.nonlinearity == "tanh":
            mode = "RNN_TANH"
        elif self.nonlinearity == "relu":
            mode = "RNN_RELU"
        else:
            raise ValueError(f"Unknown nonlinearity '{self.nonlinearity}'. Select from 'tanh' or 'relu'.")
        super().__init__(mode, *args, **kwargs)

    def forward(self, input, hx=None):
        self._update_flat_weights()
        dirs = 2 if self.bidirectional else 1
        orig_input = input
        is_batched = True
        batch_dim = 0 if self.batch_first else 1
        if isinstance(orig_input, PackedSequence):
            input, batch_sizes, sorted_indices, unsorted_indices = input
            max_batch_size = int(batch_sizes[0])
        else:
            batch_sizes = sorted_indices = unsorted_indices = None
            if input.dim() not in (2, 3):
                raise ValueError(f"RNN: Expected input to be 2D or 3D, got {input.dim()}D tensor instead")
            is_batched = input.dim() == 3
            if not is_batched:
                input = input.unsqueeze(batch_dim)
                if hx is not None:
                    if hx.dim() != 2:
                        raise RuntimeError(
                            f"For unbatched 2-D input, hx should also be 2-D but got {hx.dim()}-D tensor"
                        )
                    hx = hx.unsqueeze(1)
            elif hx is not None and hx.dim() != 3:
                raise RuntimeError(f"For batched 3-D input, hx should also be 3-D but got {hx.dim()}-D tensor")
            max_batch_size = input.size(0) if self.batch_first else input.size(1)
        if hx is None:
            hx = torch.zeros(
                self.num_layers * dirs, max_batch_size, self.hidden_size, dtype=input.dtype, device=input.device
            )
        else:
            hx = self.permute_hidden(hx, sorted_indices)
        self.check_forward_args(input, hx, batch_sizes)
        output, hidden = R.rnn(
            input,
            hx,
            self._flat_weights,
            self.bias,
            self.num_layers,
            self.dropout,
            self.training,
            self.bidirectional,
            self.batch_first,
            batch_sizes,
            self.nonlinearity,
        )
        if isinstance(orig_input, PackedSequence):
            return PackedSequence(output, batch_sizes, sorted_indices, unsorted_indices), self.permute_hidden(
                hidden, unsorted_indices
            )
        if not is_batched:
            output, hidden = output.squeeze(batch_dim), hidden.squeeze(1)
        return output, hidden

    @classmethod
    def from_torch(cls, module: torch.nn.RNNBase) -> "RNN":
        """A fastlayers RNN with the configuration of `module`, sharing its parameters (the
        same Parameter objects), in its training mode."""
        m = cls(
            module.input_size,
            module.hidden_size,
            module.num_layers,
            module.nonlinearity,
            module.bias,
            module.batch_first,
            module.dropout,
            module.bidirectional,
            device="meta",
            dtype=module.weight_ih_l0.dtype,
        )
        for name in module._flat_weights_names:
            setattr(m, name, getattr(module, name))
        m._init_flat_weights()
        return m.train(module.training)


class RNNCell(torch.nn.RNNCell):
    """Drop-in for :class:`torch.nn.RNNCell` (same constructor, parameters, state_dict keys
    and interface), one fused step of fastlayers' recurrence."""

    def forward(self, input, hx=None):
        return R.rnn_cell(input, hx, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh, self.nonlinearity)

    @classmethod
    def from_torch(cls, module: torch.nn.RNNCell) -> "RNNCell":
        """A fastlayers RNNCell sharing `module`'s parameters, in its training mode."""
        m = cls(
            module.input_size,
            module.hidden_size,
            module.bias,
            module.nonlinearity,
            device="meta",
            dtype=module.weight_ih.dtype,
        )
        m.weight_ih, m.weight_hh = module.weight_ih, module.weight_hh
        m.bias_ih, m.bias_hh = module.bias_ih, module.bias_hh
        return m.train(module.training)
