"""fastlayers: hand-written CUDA and C++ kernels behind drop-in torch.nn layers."""

from fastlayers._loader import load_extension as _load_extension

_C = _load_extension()

from fastlayers import functional, nn, ops, quant  # noqa: E402
from fastlayers._build_info import version as __version__  # noqa: E402
from fastlayers._config import is_strict, set_strict  # noqa: E402
from fastlayers.quant import quantize  # noqa: E402

__all__ = ["functional", "nn", "ops", "quant", "quantize", "set_strict", "is_strict", "build_info", "__version__"]


def build_info() -> dict:
    """What the loaded fastlayers._C was built with (version, torch, CUDA archs, CPU ISA)."""
    return dict(_C.build_info())
