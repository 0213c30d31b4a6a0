"""Loads fastlayers._C after checking it was built for the torch that is installed.

A build made for another torch fails at import with an undefined symbol, which says
nothing useful; the generated _build_info.py is read first so the error says how to
rebuild instead.
"""

import importlib

REBUILD = (
    "Rebuild it for this torch from the source tree with "
    "`pip install --no-build-isolation --no-deps -e .` (or `make build`), "
    "or install the fastlayers wheel built for this torch (`make wheel`)."
)


def load_extension():
    import torch

    try:
        info = importlib.import_module("fastlayers._build_info")
    except ImportError:
        raise ImportError(f"fastlayers is not built: its extension fastlayers._C is missing. {REBUILD}") from None
    if info.torch_version != torch.__version__:
        raise ImportError(
            f"fastlayers was built for torch {info.torch_version}, but torch {torch.__version__} "
            f"is installed. {REBUILD}"
        )
    try:
        return importlib.import_module("fastlayers._C")
    except ImportError as e:
        raise ImportError(f"fastlayers._C could not be loaded ({e}). {REBUILD}") from e
