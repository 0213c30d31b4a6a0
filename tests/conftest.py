"""Shared test fixtures: the device matrix, the tolerance table, seeds, strict mode."""

import os

import pytest
import torch

# Strict before fastlayers is imported: a fallback to torch must never hide a missing kernel.
os.environ.setdefault("FASTLAYERS_STRICT", "1")

import fastlayers  # noqa: E402

fastlayers.set_strict(True)

import emu_support  # noqa: E402

HAS_CUDA = torch.cuda.is_available() and fastlayers.build_info()["with_cuda"]
# FASTLAYERS_EMU=0 leaves the emulated device out (it needs a C++ compiler to build).
HAS_EMU = os.environ.get("FASTLAYERS_EMU", "1") != "0"

# Every op is tested on each of these devices from one list of cases. `emu` runs the CUDA
# kernels under the SIMT emulator on CPU tensors (tests/emu_support.py); `cuda` is skipped
# where no GPU is present (scripts/gpu_check.sh runs it on a GPU machine).
DEVICES = [
    "cpu",
    pytest.param("emu", marks=pytest.mark.skipif(not HAS_EMU, reason="FASTLAYERS_EMU=0")),
    pytest.param("cuda", marks=pytest.mark.skipif(not HAS_CUDA, reason="no CUDA GPU")),
]


def pytest_sessionfinish(session, exitstatus):
    emu_support.record_coverage()


def device_dtype_params(dtypes: dict):
    """(device, dtype) parameters over DEVICES, with each device's marks, for an op whose
    kernels take `dtypes[device]` ({"cpu": ..., "emu": ..., "cuda": ...}; missing: none)."""
    out = []
    for dev in DEVICES:
        name = dev if isinstance(dev, str) else dev.values[0]
        marks = () if isinstance(dev, str) else dev.marks
        for dt in dtypes.get(name, ()):
            out.append(pytest.param(name, dt, marks=marks, id=f"{name}-{str(dt).split('.')[-1]}"))
    return out


def torch_device(device: str) -> str:
    """The torch device of a test device: `emu` works on CPU tensors."""
    return "cpu" if device == "emu" else device


@pytest.fixture(autouse=True)
def _emulate(request):
    """Tests parametrized with device="emu" run with the emulated CUDA kernels in place."""
    params = getattr(getattr(request.node, "callspec", None), "params", {})
    if params.get("device") == "emu":
        with emu_support.emulated():
            yield
    else:
        yield


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
