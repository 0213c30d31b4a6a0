"""fastlayers ops with the signatures of :mod:`torch.nn.functional`."""

from fastlayers.ops import dropout as _dropout
from fastlayers.ops.attention import scaled_dot_product_attention
from fastlayers.ops.conv2d import conv2d
from fastlayers.ops.max_pool2d import max_pool2d
from fastlayers.ops.rnn import rnn, rnn_cell
from fastlayers.ops.softmax import softmax

__all__ = [
    "conv2d",
    "dropout",
    "max_pool2d",
    "max_pool2d_with_indices",
    "rnn",
    "rnn_cell",
    "scaled_dot_product_attention",
    "softmax",
]


def max_pool2d_with_indices(
    input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=True
):
    """As :func:`torch.nn.functional.max_pool2d_with_indices`: values and indices."""
    return max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode, return_indices=True)


def dropout(input, p=0.5, training=True, inplace=False):
    """As :func:`torch.nn.functional.dropout`; the mask's seed is drawn from torch's default
    generator (torch.manual_seed). ``inplace=True`` writes the result into ``input`` and
    returns it."""
    out = _dropout.dropout(input, p, training)
    if inplace and out is not input:
        return input.copy_(out)
    return out
