"""Drop-in replacements for torch.nn layers, backed by fastlayers kernels."""

from fastlayers.nn.activation import Softmax
from fastlayers.nn.pool import MaxPool2d

__all__ = ["MaxPool2d", "Softmax"]
