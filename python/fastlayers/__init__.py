"""fastlayers: hand-written CUDA and C++ kernels behind drop-in torch.nn layers."""

from fastlayers._loader import load_extension as _load_extension

_C = _load_extension()

from fastlayers import explain, functional, models, nn, ops, quant  # noqa: E402
from fastlayers._build_info import version as __version__  # noqa: E402
from fastlayers._config import is_strict, set_strict  # noqa: E402
from fastlayers.convert import ConversionReport, convert  # noqa: E402
from fastlayers.quant import quantize  # noqa: E402

__all__ = [
    "ConversionReport",
    "build_info",
    "convert",
    "explain",
    "functional",
    "is_strict",
    "models",
    "nn",
    "ops",
    "quant",
    "quantize",
    "set_strict",
    "__version__",
]


def build_info() -> dict:
    """What the loaded fastlayers._C was built with (version, torch, CUDA archs, CPU ISA)."""
    return dict(_C.build_info())
