"""Python side of the torch.ops.fastlayers ops: fake impls, autograd, autocast."""

from fastlayers.ops import attention, conv2d, dropout, int8, max_pool2d, positional_encoding, rnn, softmax  # noqa: F401
