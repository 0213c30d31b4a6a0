"""Helpers shared by the op modules."""

from fastlayers import _build_info


def cuda_built() -> bool:
    """Whether this build of fastlayers._C contains CUDA kernels."""
    return bool(_build_info.with_cuda)


def dtype_unsupported_reason(x, cpu_dtypes, cuda_dtypes) -> str | None:
    """Why no fastlayers kernel covers tensor `x` given the dtypes an op's kernels take on each
    device, or None when one does (meta tensors always are: fake impls cover them)."""
    dev = x.device.type
    if dev == "meta":
        return None
    if dev == "cuda" and not cuda_built():
        return "cuda (this build of fastlayers has no CUDA kernels)"
    ok = {"cpu": cpu_dtypes, "cuda": cuda_dtypes}.get(dev)
    if ok is None:
        return f"device {dev}"
    return None if x.dtype in ok else f"{x.dtype} on {dev}"
