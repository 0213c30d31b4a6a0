"""Timing and reporting shared by the bench_<op>.py scripts.

Each benchmark times fastlayers and the PyTorch baseline side by side in one process and
reports, per configuration, the median time of each, their ratio, the rate fastlayers
achieves (GB/s for memory-bound ops, TFLOP/s for compute-bound ones) and that rate as a
fraction of each measured roofline.

A bench_<op>.py module exposes:
- OP, its name on the command line, and MODES, the modes it can time (of forward, backward
  and full = forward + backward);
- cases(device, quick): its configurations, each with a `.dtype` and a `.label`;
- roofline(ceilings, dtype): the ceilings its rows carry (a Ceilings measures them once);
- run(device, quick=False, *, modes=None, ceilings=None, progress=None, compiled=True): the
  rows (Result). `compiled` adds torch.compile'd torch as a further baseline on CUDA.
"""

import dataclasses
import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import sys
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
MODES = ("forward", "backward", "full")
# Rows timing one gradient on its own belong to the backward mode when modes are selected.
MODE_OF = {"grad_input": "backward", "grad_weight": "backward"}


def wants(mode: str, modes) -> bool:
    """Whether a row of `mode` is asked for by `modes` (None: every mode)."""
    return modes is None or MODE_OF.get(mode, mode) in modes


def dtype_name(dtype: torch.dtype) -> str:
    """The dtype as result rows and labels spell it: "float32" for torch.float32."""
    return str(dtype).removeprefix("torch.")


def compute_unit(device) -> str:
    """The FLOP rate unit of a device's rows: GFLOP/s on CPU, TFLOP/s on GPU."""
    return "GFLOP/s" if torch.device(device).type == "cpu" else "TFLOP/s"


def time_fn(
    fn: Callable[[], object],
    device,
    warmup: int | None = None,
    reps: int | None = None,
    min_time: float | None = None,
    max_reps: int = MAX_REPS,
    stat: Callable = statistics.median,
) -> float:
    """Median (or `stat`, e.g. min) seconds of one call of `fn()` on `device`: time_fns of
    one fn."""
    return time_fns([fn], device, warmup, reps, min_time, max_reps, stat)[0]


def time_fns(
    fns: list[Callable[[], object]],
    device,
    warmup: int | None = None,
    reps: int | None = None,
    min_time: float | None = None,
    max_reps: int = MAX_REPS,
    stat: Callable = statistics.median,
) -> list[float]:
    """Median (or `stat`) seconds of one call of each of `fns` (fastlayers and its baselines)
    on `device`.

    After `warmup` rounds, each fn runs at least `reps` times and for about `min_time` seconds
    in all, but at most `max_reps` times (unless `reps` is larger). Defaults: CPU_TIMING or
    CUDA_TIMING. On CPU the calls interleave (each repetition calls every fn once, in turn),
    timed by time.perf_counter: the state of a shared machine (other processes, the memory
    allocator, frequency) drifts over a run and would otherwise favour whichever fn happened
    to run in a quiet stretch; timed one after the other, the ratio of the same two calls
    moved by up to 2x between runs here. On CUDA each fn is timed on its own, each call by a
    pair of CUDA events with the L2 cache overwritten before it.
    """
    device = torch.device(device)
    cuda = device.type == "cuda"
    if cuda and len(fns) > 1:
        return [time_fns([fn], device, warmup, reps, min_time, max_reps, stat)[0] for fn in fns]
    defaults = CUDA_TIMING if cuda else CPU_TIMING
    warmup = max(1, defaults["warmup"] if warmup is None else warmup)
    reps = defaults["reps"] if reps is None else reps
    min_time = defaults["min_time"] if min_time is None else min_time

    def sync():
        if cuda:
            torch.cuda.synchronize(device)

    start = time.perf_counter()
    for _ in range(warmup):
        for fn in fns:
            fn()
    sync()
    per_call = (time.perf_counter() - start) / (warmup * len(fns))
    n = max(reps, min(max_reps, math.ceil(min_time / max(per_call, 1e-9))))

    if not cuda:
        times = [[] for _ in fns]
        for _ in range(n):
            for fn, ts in zip(fns, times, strict=True):
                t0 = time.perf_counter()
                fn()
                ts.append(time.perf_counter() - t0)
        return [stat(ts) for ts in times]

    (fn,) = fns
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
        return [stat([b.elapsed_time(e) for b, e in zip(starts, ends, strict=True)]) / 1e3]


def measure_copy_bandwidth(device, nbytes: int | None = None) -> dict[str, float]:
    """Memory bandwidth in bytes/s (bytes read + bytes written) on `device`, two ways.

    - "copy": `dst.copy_(src)` into a preallocated tensor, the ceiling for an op that writes
      into existing memory;
    - "clone": `src.clone()`, allocation + copy. An op that allocates its output pays the
      allocation too: on CPU a fresh large allocation page-faults on first touch.

    `nbytes` (default 256 MiB on CPU, 2 GiB on CUDA) must exceed the last-level cache; it is
    returned as "tensor_bytes". A ceiling is the fastest call timed, not the median: on a busy
    machine the median of a ceiling drops below what the ops then reach.
    """
    cuda = torch.device(device).type == "cuda"
    nbytes = nbytes or ((2 << 30) if cuda else (256 << 20))
    src = torch.randn(nbytes // 4, device=device)
    dst = torch.empty_like(src)
    moved = 2 * src.numel() * src.element_size()
    copy_s = time_fn(lambda: dst.copy_(src), device, stat=min)
    clone_s = time_fn(src.clone, device, stat=min)
    return {"copy": moved / copy_s, "clone": moved / clone_s, "tensor_bytes": src.numel() * src.element_size()}


def measure_matmul_rate(device, dtype, n: int | None = None) -> float:
    """FLOP/s (integer ops/s for int8) of a large square matrix multiply in `dtype` on
    `device` (n = 2048 on CPU, 8192 on CUDA): the compute ceiling of GEMM-shaped ops, measured
    rather than taken from a datasheet, from the fastest call. int8 multiplies with
    torch._int_mm (int32 out)."""
    n = n or (8192 if torch.device(device).type == "cuda" else 2048)
    if dtype == torch.int8:
        a = torch.randint(-128, 128, (n, n), device=device, dtype=dtype)
        b = torch.randint(-128, 128, (n, n), device=device, dtype=dtype)
        return 2.0 * n**3 / time_fn(lambda: torch._int_mm(a, b), device, stat=min)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    return 2.0 * n**3 / time_fn(lambda: a @ b, device, stat=min)


def bandwidth_roofline(bandwidth: dict[str, float]) -> dict[str, float]:
    """The "copy" and "clone" ceilings of measure_copy_bandwidth in GB/s, as Result.roofline."""
    return {name: bandwidth[name] / UNIT_SCALE["GB/s"] for name in ("copy", "clone")}


class Ceilings:
    """The rooflines of one device, each measured once, on first use: the copy bandwidth and
    a large matrix multiply per dtype. One instance serves every op of a sweep."""

    def __init__(self, device, bandwidth: dict[str, float] | None = None):
        self.device = str(device)
        self._bandwidth = bandwidth
        self._matmul: dict[torch.dtype, float] = {}

    def bandwidth(self) -> dict[str, float]:
        """measure_copy_bandwidth(device): bytes/s."""
        if self._bandwidth is None:
            self._bandwidth = measure_copy_bandwidth(self.device)
        return self._bandwidth

    def matmul(self, dtype) -> float:
        """measure_matmul_rate(device, dtype): FLOP/s (int8: integer ops/s)."""
        if dtype not in self._matmul:
            self._matmul[dtype] = measure_matmul_rate(self.device, dtype)
        return self._matmul[dtype]

    def memory_roofline(self) -> dict[str, float]:
        """Result.roofline of a memory-bound op: the copy and clone ceilings in GB/s."""
        return bandwidth_roofline(self.bandwidth())

    def compute_roofline(self, dtype, unit: str) -> dict[str, float]:
        """Result.roofline of a GEMM-shaped op in `dtype`: the matmul ceiling in `unit`."""
        return {"matmul": self.matmul(dtype) / UNIT_SCALE[unit]}

    def as_dict(self) -> dict:
        """What was measured, for the JSON environment: bytes/s and FLOP/s (int8: ops/s)."""
        return {
            "bandwidth_bytes_per_s": self._bandwidth,
            "matmul_flop_per_s": {dtype_name(dt): rate for dt, rate in self._matmul.items()},
        }


def pass_fn(
    mode: str, fn: Callable, inputs, grad_out: torch.Tensor, wrt: tuple[int, ...] | None = None, params=()
) -> Callable[[], object]:
    """The callable a benchmark times for one pass of `fn(*inputs)`, the same for fastlayers
    and the baselines so that both go through the same autograd path:

    - forward: fn under no_grad;
    - backward: the gradients of a graph built once and replayed (retain_graph), so only the
      backward is timed; grad_input / grad_weight: the gradient of inputs[0] / inputs[1] alone;
    - full: forward and backward, the graph built in each call.

    `wrt` (default: every input) are the indices of the inputs differentiated; `params` are
    further leaves (a module's parameters) differentiated too. Building the backward graph
    runs fn once, here: a baseline that compiles fails here, not inside the timing.
    """
    if mode == "forward":

        def forward():
            with torch.no_grad():
                return fn(*inputs)

        return forward
    leaves = [t.detach().requires_grad_() for t in inputs]
    if mode in ("grad_input", "grad_weight"):
        wrt = (0,) if mode == "grad_input" else (1,)
    chosen = [leaves[i] for i in (range(len(leaves)) if wrt is None else wrt)] + list(params)
    if mode in ("backward", "grad_input", "grad_weight"):
        out = fn(*leaves)
        return lambda: torch.autograd.grad(out, chosen, grad_out, retain_graph=True)
    if mode == "full":
        return lambda: torch.autograd.grad(fn(*leaves), chosen, grad_out)
    raise ValueError(f"unknown mode {mode!r}")


def compiled(fn: Callable) -> Callable:
    """torch.compile(fn) for a baseline: one graph (a graph break raises rather than running
    part of fn eagerly), specialised to the shapes it sees. Dynamo's caches are cleared first:
    over a sweep's many shapes it would reach its recompile limit and then run fn eagerly,
    unnoticed. Call once per configuration."""
    torch._dynamo.reset()
    return torch.compile(fn, fullgraph=True, dynamic=False)


def time_baseline(make: Callable[[], Callable[[], object]], device) -> tuple[float, str]:
    """(median ms, "") of the callable that `make()` returns, or (nan, "skipped: why") when
    making or running it raises: for a baseline that may not work here (torch.compile), whose
    failure is a skipped row rather than the end of the sweep."""
    try:
        return time_fn(make(), device) * 1e3, ""
    except Exception as err:  # any failure of the baseline skips its row
        first = (str(err).strip().splitlines() or [""])[0]
        return math.nan, f"skipped: {type(err).__name__}: {first}"[:200]


class Progress:
    """Where a benchmark reports while it sweeps: row() each row as it is timed, over() its
    configurations. This default prints the rows to stderr; the CLI's wraps a tqdm bar."""

    def note(self, line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    def row(self, r: "Result") -> None:
        timed = r.note or f"{r.torch_ms:.4g} ms (torch/fl {r.ratio:.2f})"
        self.note(
            f"{r.mode:8s} {r.op} {r.config} {r.dtype} {r.layout}: fastlayers {r.fl_ms:.4g} ms, {r.baseline} {timed}"
        )

    def begin(self, op: str, label: str) -> None:
        """A configuration starts."""

    def end(self) -> None:
        """The configuration begun last is done."""

    def over(self, op: str, cases):
        """Each case of `cases`, begin() before and end() after its turn."""
        for case in cases:
            self.begin(op, case.label)
            yield case
            self.end()


@dataclasses.dataclass
class Result:
    """One configuration of one op in one mode, fastlayers against a torch baseline."""

    op: str
    mode: str  # forward, backward or full (forward + backward); grad_input, grad_weight
    config: str  # shape and op arguments
    dtype: str
    layout: str
    fl_ms: float  # median per call
    torch_ms: float  # nan when the baseline could not run (see note)
    work: float  # per call: bytes moved (GB/s), FLOPs (GFLOP/s, TFLOP/s) or integer ops (GOPS, TOPS)
    unit: str = "GB/s"
    roofline: dict[str, float] = dataclasses.field(default_factory=dict)  # ceiling name -> rate in `unit`
    baseline: str = "torch"  # what torch_ms timed: eager torch, or e.g. "torch.compile"
    note: str = ""  # "skipped: why" when the baseline could not run

    @property
    def ratio(self) -> float:
        """torch time / fastlayers time: above 1 means fastlayers is faster (nan if skipped)."""
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


def _number(x: float, fmt: str) -> str:
    return "-" if math.isnan(x) else format(x, fmt)


def print_table(rows: list[Result], title: str | None = None, file=None) -> None:
    """Rows as an aligned plain-text table, under `title` with the ceilings the rows carry when
    given; the roofline columns are fastlayers' rate as a percentage of each ceiling. The
    baseline and note columns appear when some row has a baseline other than eager torch, or
    a note."""
    file = file or sys.stdout
    units = {r.unit for r in rows}
    unit = units.pop() if len(units) == 1 else None
    ceilings = list(dict.fromkeys(name for r in rows for name in r.roofline))
    baselines = any(r.baseline != "torch" for r in rows)
    notes = any(r.note for r in rows)

    def rate(r: Result, ms: float) -> str:
        return _number(r.rate(ms), ".1f") if unit else f"{_number(r.rate(ms), '.3g')} {r.unit}"

    header = ["op", "mode", "config", "dtype", "layout"] + (["baseline"] if baselines else [])
    first_number_column = len(header)  # text left-aligned, numbers right-aligned
    header += ["fastlayers ms", "torch ms", "torch/fl", f"fl {unit or 'rate'}", f"torch {unit or 'rate'}"]
    header += [f"fl % of {name} roofline" for name in ceilings]
    header += ["note"] if notes else []
    table = [header]
    for r in rows:
        fractions = r.fractions()
        cells = [r.op, r.mode, r.config, r.dtype, r.layout] + ([r.baseline] if baselines else [])
        cells += [f"{r.fl_ms:.4g}", _number(r.torch_ms, ".4g"), _number(r.ratio, ".2f")]
        cells += [rate(r, r.fl_ms), rate(r, r.torch_ms)]
        cells += [f"{100 * fractions[name]:.0f}%" if name in fractions else "" for name in ceilings]
        cells += [r.note] if notes else []
        table.append(cells)
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    if title:
        peaks = {}
        for r in rows:
            for name, value in r.roofline.items():
                peaks.setdefault((name, r.unit), set()).add(value)
        line = ", ".join(
            f"{name} " + "/".join(f"{v:.4g}" for v in sorted(values)) + f" {u}" for (name, u), values in peaks.items()
        )
        print(f"\n{title}" + (f" (roofline: {line})" if line else ""), file=file)
    for row in table:
        text = "  ".join(
            cell.ljust(w) if i < first_number_column or i == len(header) - 1 and notes else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        print(text.rstrip(), file=file)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_sha() -> str:
    return _git("rev-parse", "--short", "HEAD") or "unknown"


def environment(device, bandwidth: dict[str, float] | None = None, ceilings: Ceilings | None = None) -> dict:
    """What a result depends on: hardware (`device` names the GPU on CUDA, else the CPU),
    versions, the commit, threads, date and the measured ceilings (bandwidth: bytes/s, as
    measure_copy_bandwidth returns it; ceilings: a Ceilings, whose bandwidth it then is)."""
    device = torch.device(device)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    status = _git("status", "--porcelain", "--untracked-files=no")
    if ceilings is not None:
        bandwidth = ceilings.as_dict()["bandwidth_bytes_per_s"]
    return {
        "device": gpu or cpu_model(),
        "device_type": device.type,
        "gpu": gpu,
        "cpu": cpu_model(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "fastlayers": fastlayers.__version__,
        "git_sha": git_sha(),
        "git_dirty": None if status is None else bool(status),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "bandwidth_bytes_per_s": bandwidth,
        "ceilings": ceilings.as_dict() if ceilings is not None else None,
    }


def summary(env: dict) -> str:
    """One line naming the machine and its measured ceilings, to print above a table."""
    line = f"{env['device']} | torch {env['torch']} (CUDA {env['cuda']}) | fastlayers {env['fastlayers']}"
    line += f" ({env['git_sha']}{'+dirty' if env.get('git_dirty') else ''}) | {env['threads']} threads"
    bandwidth = env.get("bandwidth_bytes_per_s")
    if bandwidth:
        line += f" | copy {bandwidth['copy'] / 1e9:.1f} GB/s, clone {bandwidth['clone'] / 1e9:.1f} GB/s"
    for dtype, rate in ((env.get("ceilings") or {}).get("matmul_flop_per_s") or {}).items():
        line += f" | {dtype} matmul {rate / 1e9:.4g} G{'OPS' if dtype == 'int8' else 'FLOP/s'}"
    return line


def _finite(value):
    """`value` with every non-finite float (a skipped row's times) as None: strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def write_json(rows: list[Result], path: str, env: dict) -> None:
    """Rows and the environment (see environment()) as one JSON document at `path`; a skipped
    baseline's times are null."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    doc = _finite({"env": env, "results": [r.as_dict() for r in rows]})
    with open(path, "w") as f:
        json.dump(doc, f, indent=2, allow_nan=False)
        f.write("\n")


def _label_fields(rows: list[Result]) -> tuple[list[str], list[str]]:
    """Of a Result's descriptive fields, those that vary across `rows` (each bar's label) and
    those that do not (the subplot's title)."""
    fields = ["op", "config", "layout", "dtype", "mode"]
    varying = [f for f in fields if len({getattr(r, f) for r in rows}) > 1]
    return varying or ["config"], [f for f in fields if f not in varying]


def plot_ratios(groups: dict[str, list[Result]], path: str, env: dict) -> None:
    """A PNG at `path`: per op (one subplot each, in `groups`' order), the ratio torch time /
    fastlayers time of every configuration, one bar per baseline side by side, against a line
    at 1.0 (as fast as torch). The y axis is logarithmic when the ratios span more than 10x. Uses
    matplotlib's Agg canvas: no display needed."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    groups = {op: rows for op, rows in groups.items() if rows}
    if not groups:
        raise ValueError("plot_ratios: no rows to plot")
    keys = {
        op: list(dict.fromkeys((r.op, r.config, r.layout, r.dtype, r.mode) for r in rows))
        for op, rows in groups.items()
    }
    widest = max(len(k) for k in keys.values())
    fig = Figure(figsize=(min(40.0, max(9.0, 1.2 + 0.42 * widest)), 1.0 + 4.3 * len(groups)), layout="constrained")
    axes = fig.subplots(len(groups), 1, squeeze=False)[:, 0]
    colors = ["#3b75af", "#ef8636", "#519e3e", "#c53a32", "#8d69b8", "#84584e"]
    all_baselines = list(dict.fromkeys(r.baseline for rows in groups.values() for r in rows))
    for ax, (op, rows) in zip(axes, groups.items(), strict=True):
        varying, constant = _label_fields(rows)
        index = {k: i for i, k in enumerate(keys[op])}
        at: dict[tuple, list[str]] = {}  # the baselines of each configuration, side by side there
        for r in rows:
            at.setdefault((r.op, r.config, r.layout, r.dtype, r.mode), []).append(r.baseline)
        ratios = [r.ratio for r in rows if math.isfinite(r.ratio) and r.ratio > 0]
        log = bool(ratios) and max(ratios) / min(ratios) > 10
        many = len(rows) > 48  # too many bars to print each value
        labelled = set()
        for r in rows:
            key = (r.op, r.config, r.layout, r.dtype, r.mode)
            width = 0.8 / max(len(names) for names in at.values())
            x = index[key] + (at[key].index(r.baseline) - (len(at[key]) - 1) / 2) * width
            if not math.isfinite(r.ratio):
                ax.text(x, 1.0, "skipped", rotation=90, ha="center", va="bottom", fontsize=7, color="gray")
                continue
            color = colors[all_baselines.index(r.baseline) % len(colors)]
            label = None if r.baseline in labelled else f"vs {r.baseline}"
            labelled.add(r.baseline)
            ax.bar(x, r.ratio, width * 0.92, color=color, label=label)
            if not many:
                text = f"{r.ratio:.2f}" if r.ratio < 10 else f"{r.ratio:.1f}" if r.ratio < 100 else f"{r.ratio:.0f}"
                ax.annotate(
                    text, (x, r.ratio), xytext=(0, 2), textcoords="offset points", ha="center", va="bottom", fontsize=7
                )
        ax.axhline(1.0, color="black", linewidth=1.0, linestyle="--")
        ax.text(1.002, 1.0, "torch", transform=ax.get_yaxis_transform(), va="center", ha="left", fontsize=9)
        if log:
            ax.set_yscale("log")
            ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_minor_formatter(NullFormatter())
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        top = max([*ratios, 1.0])
        bottom = min([*ratios, 1.0])
        if log:
            ax.set_ylim(bottom / 1.6, top * 1.8)
        else:
            ax.set_ylim(0, top * 1.15)
        ax.set_xticks(range(len(keys[op])))
        labels = [
            " ".join(
                str(v) for f, v in zip(("op", "config", "layout", "dtype", "mode"), k, strict=True) if f in varying
            )
            for k in keys[op]
        ]
        long = max(len(s) for s in labels) > 12 or len(labels) > 8
        rotation = (45 if len(labels) > 24 else 35) if long else 0
        ax.set_xticklabels(
            labels, rotation=rotation, ha="right" if long else "center", fontsize=8, rotation_mode="anchor"
        )
        ax.set_xlim(-0.6, len(keys[op]) - 0.4)
        same = [str(getattr(rows[0], f)) for f in constant]
        ax.set_title(" | ".join(dict.fromkeys([op, *same])), fontsize=10, loc="left")
        ax.set_ylabel("torch time / fastlayers time")
        ax.grid(axis="y", which="major", alpha=0.3)
        # Above the axes, right-aligned, on the line of the left-aligned title: clear of the bars.
        ax.legend(fontsize=8, loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=4, frameon=False, borderaxespad=0.2)
    date = str(env.get("date", ""))[:16].replace("T", " ")
    fig.suptitle(
        f"fastlayers vs torch on {env.get('device', '?')} ({date} UTC, {env.get('git_sha', '?')})\n"
        "bars above 1: fastlayers faster",
        fontsize=11,
    )
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    fig.savefig(path, dpi=110)


def main(run, description: str, argv=None, quick_help: str = "fewer shapes"):
    """The command line of a bench_<op>.py whose ``run(device, quick, ...)`` returns rows:
    [--device cpu|cuda] [--quick] [--mode M,...] [--no-compile] [--json PATH] [--plot PATH];
    prints the environment and the table."""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--mode", help=f"comma-separated, of {', '.join(MODES)} (default: all the op has)")
    parser.add_argument("--no-compile", action="store_true", help="no torch.compile baselines (CUDA)")
    parser.add_argument("--json", metavar="PATH", help="also write the rows and the environment to PATH")
    parser.add_argument("--plot", metavar="PATH", help="also plot the ratios to PATH (PNG)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    modes = None
    if args.mode:
        modes = [m.strip() for m in args.mode.split(",") if m.strip()]
        bad = [m for m in modes if m not in MODES]
        if bad:
            parser.error(f"--mode: unknown {', '.join(bad)}; valid: {', '.join(MODES)}")
    ceilings = Ceilings(args.device)
    rows = run(args.device, args.quick, modes=modes, ceilings=ceilings, compiled=not args.no_compile)
    env = environment(args.device, ceilings=ceilings)
    print(summary(env))
    if not rows:
        print(f"no rows: this benchmark has no {'/'.join(modes or MODES)} mode")
        return
    print_table(rows)
    if args.json:
        write_json(rows, args.json, env)
    if args.plot:
        plot_ratios({description.split(":")[0]: rows}, args.plot, env)
