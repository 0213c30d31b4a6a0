"""Loads fastlayers._C after checking it was built for the torch that is installed.

A build made for another torch fails at import with an undefined symbol, which says
nothing useful; the generated _build_info.py is read first so the error says which wheel
to build or install instead. This module imports nothing at module level: setup.py loads
it by path for local_tag before the package exists.
"""

import importlib

VERSION = "0.1.0"


def local_tag(torch_version: str, torch_cuda: str | None, with_cuda: bool) -> str:
    """The wheel's local version tag: the torch it is pinned to and its CUDA, e.g.
    torch2.14.1cu130 or torch2.13.0cpu; ".cpuonly" marks a build without CUDA kernels
    against a CUDA torch (FASTLAYERS_CUDA=0)."""
    tag = "torch" + torch_version.split("+")[0] + ("cu" + torch_cuda.replace(".", "") if torch_cuda else "cpu")
    return tag + (".cpuonly" if torch_cuda and not with_cuda else "")


def _describe(torch_version: str, torch_cuda: str | None) -> str:
    return f"torch {torch_version} ({f'CUDA {torch_cuda}' if torch_cuda else 'CPU-only'})"


def _remedy(torch) -> str:
    wheel = f"fastlayers-{VERSION}+{local_tag(torch.__version__, torch.version.cuda, torch.version.cuda is not None)}"
    cpu_only = " (`make wheel-cpu`: CPU kernels only)" if torch.version.cuda else ""
    return (
        f"Install {wheel}, the wheel for this torch, or build it from the source tree with `make wheel` "
        f"against torch {torch.__version__}{cpu_only}; in a source checkout, `make build` rebuilds the "
        "in-place extension."
    )


def load_extension():
    import torch

    try:
        info = importlib.import_module("fastlayers._build_info")
    except ImportError:
        raise ImportError(
            f"fastlayers is not built: its extension fastlayers._C is missing. {_remedy(torch)}"
        ) from None
    # Before the local tag existed, _build_info.py lacked torch_cuda_version.
    built_cuda = getattr(info, "torch_cuda_version", info.cuda_version)
    if info.torch_version != torch.__version__:
        built, installed = _describe(info.torch_version, built_cuda), _describe(torch.__version__, torch.version.cuda)
        if info.with_cuda and torch.version.cuda is None:
            why = f"has CUDA kernels built for {built}, but the installed torch {torch.__version__} is CPU-only"
        elif built_cuda is None and torch.version.cuda is not None:
            why = f"was built for the CPU-only torch {info.torch_version}, but {installed} is installed"
        else:
            why = f"was built for {built}, but {installed} is installed"
        raise ImportError(f"this fastlayers {info.version} {why}. {_remedy(torch)}")
    try:
        return importlib.import_module("fastlayers._C")
    except ImportError as e:
        raise ImportError(f"fastlayers._C could not be loaded ({e}). {_remedy(torch)}") from e
