"""Helpers shared by the op modules."""

from fastlayers import _build_info


def cuda_built() -> bool:
    """Whether this build of fastlayers._C contains CUDA kernels."""
    return bool(_build_info.with_cuda)
