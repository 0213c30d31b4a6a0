"""Shared test fixtures: the device matrix, the tolerance table, seeds, strict mode."""

import os

import pytest
import torch

# Strict before fastlayers is imported: a fallback to torch must never hide a missing kernel.
os.environ.setdefault("FASTLAYERS_STRICT", "1")

import fastlayers  # noqa: E402

fastlayers.set_strict(True)

HAS_CUDA = torch.cuda.is_available() and fastlayers.build_info()["with_cuda"]

# Every op is tested on each of these devices from one list of cases. `cuda` is skipped
# where no GPU is present (scripts/gpu_check.sh runs it on a GPU machine).
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not HAS_CUDA, reason="no CUDA GPU"))]

# Tolerances by dtype for results that involve rounding (sums of gradients). Ops that only
# select values (max-pooling forward) are compared exactly.
TOL = {
    torch.float64: dict(rtol=1e-12, atol=1e-12),
    torch.float32: dict(rtol=1e-5, atol=1e-6),
    torch.float16: dict(rtol=1e-3, atol=1e-3),
    torch.bfloat16: dict(rtol=8e-3, atol=8e-3),
}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


def poison_(t: torch.Tensor) -> torch.Tensor:
    """Fill with NaN (or a sentinel for integers) so unwritten outputs are visible."""
    if t.is_floating_point():
        return t.fill_(float("nan"))
    return t.fill_(-(2**62))
