"""Timing and reporting shared by the bench_<op>.py scripts.

Each benchmark times fastlayers and the PyTorch baseline side by side in one process and
reports, per configuration, the median time of each, their ratio, the rate fastlayers
achieves (GB/s for memory-bound ops, TFLOP/s for compute-bound ones) and that rate as a
fraction of each measured roofline.
"""

import dataclasses
import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable

import torch

import fastlayers

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A CPU call of a benchmarked op takes tens of milliseconds, so a handful of repetitions keeps
# a quick bench of a few shapes within about a minute on two cores.
CPU_TIMING = {"warmup": 2, "reps": 7, "min_time": 0.5}
# A GPU call takes microseconds to a millisecond; many repetitions make the median stable.
CUDA_TIMING = {"warmup": 10, "reps": 50, "min_time": 0.1}
MAX_REPS = 1000
# Several times the L2 of current GPUs (H100/H200: 50 MiB). Overwriting it before each timed
# call makes every call read its inputs from HBM, as it would inside a model.
L2_FLUSH_BYTES = 256 << 20
UNIT_SCALE = {"GB/s": 1e9, "GFLOP/s": 1e9, "TFLOP/s": 1e12, "GOPS": 1e9, "TOPS": 1e12}


def time_fn(
    fn: Callable[[], object],
    device,
    warmup: int | None = None,
    reps: int | None = None,
    min_time: float | None = None,
    max_reps: int = MAX_REPS,
) -> float:
    """Median seconds of one call of `fn()` on `device`.

    After `warmup` calls, `fn` runs at least `reps` times and for about `min_time` seconds in
    all, but at most `max_reps` times (unless `reps` is larger). Defaults: CPU_TIMING or
    CUDA_TIMING. On CUDA each call is timed by a pair of CUDA events, with the L2 cache
    overwritten before it; on CPU by time.perf_counter.
    """
    device = torch.device(device)
    cuda = device.type == "cuda"
    defaults = CUDA_TIMING if cuda else CPU_TIMING
    warmup = max(1, defaults["warmup"] if warmup is None else warmup)
    reps = defaults["reps"] if reps is None else reps
    min_time = defaults["min_time"] if min_time is None else min_time

    def sync():
        if cuda:
            torch.cuda.synchronize(device)

    start = time.perf_counter()
    for _ in range(warmup):
        fn()
    sync()
    per_call = (time.perf_counter() - start) / warmup
    n = max(reps, min(max_reps, math.ceil(min_time / max(per_call, 1e-9))))

    if not cuda:
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    with torch.cuda.device(device):
        flush = torch.empty(L2_FLUSH_BYTES, dtype=torch.int8, device=device)
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
        for begin, end in zip(starts, ends, strict=True):
            flush.zero_()
            begin.record()
            fn()
            end.record()
        sync()
        return statistics.median(b.elapsed_time(e) for b, e in zip(starts, ends, strict=True)) / 1e3


def measure_copy_bandwidth(device, nbytes: int | None = None) -> dict[str, float]:
    """Memory bandwidth in bytes/s (bytes read + bytes written) on `device`, two ways.

    - "copy": `dst.copy_(src)` into a preallocated tensor, the ceiling for an op that writes
      into existing memory;
    - "clone": `src.clone()`, allocation + copy. An op that allocates its output pays the
      allocation too: on CPU a fresh large allocation page-faults on first touch.

    `nbytes` (default 256 MiB on CPU, 2 GiB on CUDA) must exceed the last-level cache; it is
    returned as "tensor_bytes".
    """
    cuda = torch.device(device).type == "cuda"
    nbytes = nbytes or ((2 << 30) if cuda else (256 << 20))
    src = torch.randn(nbytes // 4, device=device)
    dst = torch.empty_like(src)
    moved = 2 * src.numel() * src.element_size()
    copy_s = time_fn(lambda: dst.copy_(src), device)
    clone_s = time_fn(src.clone, device)
    return {"copy": moved / copy_s, "clone": moved / clone_s, "tensor_bytes": src.numel() * src.element_size()}


def measure_matmul_rate(device, dtype, n: int | None = None) -> float:
    """FLOP/s of a large square matrix multiply in `dtype` on `device` (n = 2048 on CPU,
    8192 on CUDA): the compute ceiling of GEMM-shaped ops, measured rather than taken from a
    datasheet."""
    n = n or (8192 if torch.device(device).type == "cuda" else 2048)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    return 2.0 * n**3 / time_fn(lambda: a @ b, device)


def bandwidth_roofline(bandwidth: dict[str, float]) -> dict[str, float]:
    """The "copy" and "clone" ceilings of measure_copy_bandwidth in GB/s, as Result.roofline."""
    return {name: bandwidth[name] / UNIT_SCALE["GB/s"] for name in ("copy", "clone")}


@dataclasses.dataclass
class Result:
    """One configuration of one op in one mode, fastlayers against the torch baseline."""

    op: str
    mode: str  # forward, backward or full (forward + backward)
    config: str  # shape and op arguments
    dtype: str
    layout: str
    fl_ms: float  # median per call
    torch_ms: float
    work: float  # per call: bytes moved (GB/s), FLOPs (GFLOP/s, TFLOP/s) or integer ops (GOPS, TOPS)
    unit: str = "GB/s"
    roofline: dict[str, float] = dataclasses.field(default_factory=dict)  # ceiling name -> rate in `unit`

    @property
    def ratio(self) -> float:
        """torch time / fastlayers time: above 1 means fastlayers is faster."""
        return self.torch_ms / self.fl_ms

    def rate(self, ms: float) -> float:
        return self.work / (ms / 1e3) / UNIT_SCALE[self.unit]

    @property
    def fl_rate(self) -> float:
        return self.rate(self.fl_ms)

    @property
    def torch_rate(self) -> float:
        return self.rate(self.torch_ms)

    def fractions(self) -> dict[str, float]:
        """fastlayers' rate as a fraction of each roofline ceiling."""
        return {name: self.fl_rate / ceiling for name, ceiling in self.roofline.items()}

    def as_dict(self) -> dict:
        return {
            **dataclasses.asdict(self),
            "ratio": self.ratio,
            "fl_rate": self.fl_rate,
            "torch_rate": self.torch_rate,
            "fl_fraction_of_roofline": self.fractions(),
        }


def print_table(rows: list[Result]) -> None:
    """Rows as an aligned plain-text table; the roofline columns are fastlayers' rate as a
    percentage of each ceiling."""
    units = {r.unit for r in rows}
    unit = units.pop() if len(units) == 1 else None
    ceilings = list(dict.fromkeys(name for r in rows for name in r.roofline))

    def rate(r: Result, ms: float) -> str:
        return f"{r.rate(ms):.1f}" if unit else f"{r.rate(ms):.3g} {r.unit}"

    header = ["op", "mode", "config", "dtype", "layout", "fastlayers ms", "torch ms", "torch/fl"]
    header += [f"fl {unit or 'rate'}", f"torch {unit or 'rate'}"]
    header += [f"fl % of {name} roofline" for name in ceilings]
    table = [header]
    for r in rows:
        fractions = r.fractions()
        cells = [r.op, r.mode, r.config, r.dtype, r.layout, f"{r.fl_ms:.4g}", f"{r.torch_ms:.4g}", f"{r.ratio:.2f}"]
        cells += [rate(r, r.fl_ms), rate(r, r.torch_ms)]
        cells += [f"{100 * fractions[name]:.0f}%" if name in fractions else "" for name in ceilings]
        table.append(cells)
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    first_number_column = 5  # text left-aligned, numbers right-aligned
    for row in table:
        print(
            "  ".join(
                cell.ljust(w) if i < first_number_column else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
        )


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def git_sha() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"


def environment(device, bandwidth: dict[str, float] | None = None) -> dict:
    """What a result depends on: hardware, versions, threads, date and the measured bandwidth
    (measure_copy_bandwidth's dict, bytes/s)."""
    device = torch.device(device)
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model(),
        "cpu": cpu_model(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "fastlayers": fastlayers.__version__,
        "git_sha": git_sha(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "bandwidth_bytes_per_s": bandwidth,
    }


def summary(env: dict) -> str:
    """One line naming the machine and its measured bandwidth, to print above a table."""
    line = f"{env['device']} | torch {env['torch']} (CUDA {env['cuda']}) | fastlayers {env['fastlayers']}"
    line += f" ({env['git_sha']}) | {env['threads']} threads"
    bandwidth = env.get("bandwidth_bytes_per_s")
    if bandwidth:
        line += f" | copy {bandwidth['copy'] / 1e9:.1f} GB/s, clone {bandwidth['clone'] / 1e9:.1f} GB/s"
    return line


def write_json(rows: list[Result], path: str, env: dict) -> None:
    """Rows and the environment (see environment()) as one JSON document at `path`."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    with open(path, "w") as f:
        json.dump({"env": env, "results": [r.as_dict() for r in rows]}, f, indent=2)
        f.write("\n")


def main(run, description: str, argv=None, quick_help: str = "fewer shapes"):
    """The command line of a bench_<op>.py whose ``run(device, quick)`` returns rows:
    [--device cpu|cuda] [--quick] [--json PATH]; prints the environment and the table."""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--json", metavar="PATH", help="also write the rows and the environment to PATH")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    rows = run(args.device, args.quick)
    env = environment(args.device)
    print(summary(env))
    print_table(rows)
    if args.json:
        write_json(rows, args.json, env)
