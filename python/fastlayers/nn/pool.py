"""Pooling layers."""

import torch

from fastlayers.ops.max_pool2d import max_pool2d


class MaxPool2d(torch.nn.MaxPool2d):
    """Drop-in for :class:`torch.nn.MaxPool2d`: same constructor, attributes, ``extra_repr``
    and (empty) state_dict; ``isinstance(m, torch.nn.MaxPool2d)`` holds. Forward runs the
    fastlayers kernel."""

    def forward(self, input: torch.Tensor):
        return max_pool2d(
            input,
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            ceil_mode=self.ceil_mode,
            return_indices=self.return_indices,
        )

    @classmethod
    def from_torch(cls, module: torch.nn.MaxPool2d) -> "MaxPool2d":
        """A fastlayers MaxPool2d with the configuration of `module`."""
        return cls(
            module.kernel_size,
            module.stride,
            module.padding,
            module.dilation,
            return_indices=module.return_indices,
            ceil_mode=module.ceil_mode,
        )
