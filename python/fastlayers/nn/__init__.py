"""Drop-in replacements for torch.nn layers, backed by fastlayers kernels."""

from fastlayers.nn.activation import Softmax
from fastlayers.nn.attention import MultiheadAttention
from fastlayers.nn.conv import Conv2d
from fastlayers.nn.pool import MaxPool2d
from fastlayers.nn.positional import LearnedPositionalEncoding, PositionalEncoding
from fastlayers.nn.quantized import Int8Linear
from fastlayers.nn.rnn import RNN, RNNCell

__all__ = [
    "Conv2d",
    "Int8Linear",
    "LearnedPositionalEncoding",
    "MaxPool2d",
    "MultiheadAttention",
    "PositionalEncoding",
    "RNN",
    "RNNCell",
    "Softmax",
]
