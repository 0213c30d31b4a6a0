"""Convolution layers."""

import torch
import torch.nn.functional as F
from torch.nn.modules.utils import _pair

from fastlayers.ops.conv2d import conv2d, same_padding


class Conv2d(torch.nn.Conv2d):
    """Drop-in for :class:`torch.nn.Conv2d`: same constructor, initialisation, attributes,
    ``extra_repr`` and state_dict keys; ``isinstance(m, torch.nn.Conv2d)`` holds. Forward runs
    the fastlayers kernels.

    Beyond torch: ``padding='same'`` is also accepted with stride > 1, padding as TensorFlow
    does (output size ceil(H / stride); the odd row or column of padding at the bottom or
    right), with every padding_mode.
    """

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups=1,
        bias=True,
        padding_mode="zeros",
        device=None,
        dtype=None,
    ):
        strided_same = isinstance(padding, str) and padding == "same" and _pair(stride) != (1, 1)
        # torch.nn.Conv2d refuses strided 'same': build it at stride 1, then set the stride.
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            1 if strided_same else stride,
            padding,
            dilation,
            groups,
            bias,
            padding_mode,
            device,
            dtype,
        )
        if strided_same:
            self.stride = _pair(stride)

    def _conv_forward(self, input, weight, bias):
        if self.padding_mode == "zeros":
            return conv2d(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)
        if self.padding == "same":
            top, bottom, left, right = same_padding(input.shape[-2:], self.kernel_size, self.stride, self.dilation)
            pad = (left, right, top, bottom)
        else:
            pad = self._reversed_padding_repeated_twice
        input = F.pad(input, pad, mode=self.padding_mode)
        return conv2d(input, weight, bias, self.stride, 0, self.dilation, self.groups)

    @classmethod
    def from_torch(cls, module: torch.nn.Conv2d) -> "Conv2d":
        """A fastlayers Conv2d with the configuration of `module`, sharing its parameters
        (the same Parameter objects), in its training mode."""
        m = cls(
            module.in_channels,
            module.out_channels,
            module.kernel_size,
            module.stride,
            module.padding,
            module.dilation,
            module.groups,
            module.bias is not None,
            module.padding_mode,
            device="meta",
            dtype=module.weight.dtype,
        )
        m.weight = module.weight
        m.bias = module.bias
        return m.train(module.training)
