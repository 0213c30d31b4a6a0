"""Activation layers."""

import torch

from fastlayers.ops.softmax import softmax


class Softmax(torch.nn.Softmax):
    """Drop-in for :class:`torch.nn.Softmax`: same constructor, attributes and ``extra_repr``;
    ``isinstance(m, torch.nn.Softmax)`` holds. Forward runs the fastlayers kernel."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return softmax(input, self.dim, _stacklevel=5)

    @classmethod
    def from_torch(cls, module: torch.nn.Softmax) -> "Softmax":
        """A fastlayers Softmax with the configuration of `module`."""
        return cls(module.dim)
