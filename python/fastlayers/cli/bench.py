"""`python -m fastlayers bench`: each op's benchmark, side by side with torch.

The benchmark scripts live in the source tree's bench/ folder (bench_<op>.py, each with
run(device, quick, ...) -> rows); this command finds that folder next to the package. It
measures the rooflines first (a large copy, and a large matrix multiply in each dtype the
chosen ops use), sweeps the configurations under a progress bar on stderr, then prints one
table per op and, if asked, writes the rows with the environment as JSON and plots the
ratios.
"""

import argparse
import importlib
import io
import os
import sys
import time
import traceback

import torch

# The ops on the command line, each with the stem of its bench/bench_<stem>.py.
OPS = {"conv2d": "conv", "max_pool2d": "maxpool", "attention": "attention", "int8": "int8", "rnn": "rnn"}
BENCHES = list(OPS.values())
MODES = ("forward", "backward", "full")
# Other names accepted for an op: its bench file's stem, with and without "bench_".
ALIASES = {alias: op for op, stem in OPS.items() for alias in (op, stem, f"bench_{stem}")}


def _split(text: str) -> list[str]:
    return [part.strip().lower() for part in text.split(",") if part.strip()]


def parse_ops(text: str) -> list[str]:
    """`--op` (comma-separated op names or bench file stems) as op names, in order, each once;
    an unknown name is an argparse error that lists the valid ones."""
    names = _split(text)
    unknown = [name for name in names if name not in ALIASES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown op {', '.join(map(repr, unknown)) or repr(text)}: valid ops are {', '.join(OPS)} "
            f"(or their bench file stems: {', '.join(OPS.values())})"
        )
    return list(dict.fromkeys(ALIASES[name] for name in names))


def parse_modes(text: str) -> list[str]:
    """`--mode` (comma-separated) as modes, in order, each once; an unknown one is an argparse
    error that lists the valid ones."""
    names = _split(text)
    unknown = [name for name in names if name not in MODES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown mode {', '.join(map(repr, unknown)) or repr(text)}: valid modes are {', '.join(MODES)}"
        )
    return list(dict.fromkeys(names))


def _built_with_cuda() -> bool:
    import fastlayers

    return bool(fastlayers.build_info()["with_cuda"])


def best_device() -> str:
    """cuda where a GPU is present and fastlayers was built with its kernels, else cpu."""
    return "cuda" if torch.cuda.is_available() and _built_with_cuda() else "cpu"


def _bench_root():
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.abspath(os.path.join(here, "..", "..", ".."))
    if not os.path.isdir(os.path.join(root, "bench")):
        raise SystemExit("python -m fastlayers bench needs the fastlayers source tree (its bench/ folder)")
    return root


def _common():
    root = _bench_root()
    if root not in sys.path:
        sys.path.insert(0, root)
    return importlib.import_module("bench.common")


def bench_module(op: str):
    """The bench/bench_<stem>.py module of `op` (a name of OPS)."""
    _common()
    return importlib.import_module(f"bench.bench_{OPS[op]}")


def _selected(ops, modes) -> dict:
    """{op: module} of the ops in `ops` (default: all) that have a mode of `modes`."""
    chosen = {}
    for op in ops or OPS:
        module = bench_module(op)
        if modes is None or set(modes) & set(module.MODES):
            chosen[op] = module
        else:
            print(
                f"bench: {op} skipped: it has no {'/'.join(modes)} mode (only {', '.join(module.MODES)})",
                file=sys.stderr,
            )
    return chosen


def measure_ceilings(ceilings, modules: dict, device: str, quick: bool) -> None:
    """Measure up front every roofline the rows of `modules` will carry: the copy bandwidth and
    a matrix multiply in each dtype of their cases."""
    ceilings.bandwidth()
    for module in modules.values():
        for dtype in dict.fromkeys(case.dtype for case in module.cases(device, quick)):
            module.roofline(ceilings, dtype)


def sweep(device, quick, modules: dict, modes=None, ceilings=None, progress=None, compiled=True, done=None):
    """({op: rows}, {op: error}) of running each module's benchmark; an op whose benchmark
    raises is reported (traceback on stderr) and the sweep goes on. `done(op, rows, error,
    seconds)` is called as each op ends."""
    groups, errors = {}, {}
    for op, module in modules.items():
        start = time.perf_counter()
        try:
            groups[op] = module.run(device, quick, modes=modes, ceilings=ceilings, progress=progress, compiled=compiled)
        except Exception as err:  # one op's failure must not lose the others' rows
            traceback.print_exc(file=sys.stderr)
            errors[op] = f"{type(err).__name__}: {err}"
        if done is not None:
            done(op, groups.get(op), errors.get(op), time.perf_counter() - start)
    return groups, errors


def collect(device=None, quick=False, ops=None, modes=None, compiled=True) -> list:
    """Every chosen op's benchmark rows (bench.common.Result) on `device` (default: the
    best), in one list; each row is printed to stderr as it is timed."""
    common = _common()
    device = device or best_device()
    modules = _selected(ops, modes)
    ceilings = common.Ceilings(device)
    groups, errors = sweep(device, quick, modules, modes, ceilings, common.Progress(), compiled)
    if errors:
        raise RuntimeError("bench failed for " + "; ".join(f"{op}: {why}" for op, why in errors.items()))
    return [row for rows in groups.values() for row in rows]


def _bar_progress(common, total: int, verbose: bool, enabled: bool):
    """A common.Progress over a tqdm bar on stderr (none without tqdm, or when not enabled),
    whose rows are printed above the bar when `verbose`."""
    try:
        from tqdm import tqdm
    except ImportError:
        tqdm = None

    class BarProgress(common.Progress):
        def __init__(self):
            self.bar = None
            if tqdm is not None and enabled:
                self.bar = tqdm(total=total, unit="config", file=sys.stderr, dynamic_ncols=True, leave=False)

        def note(self, line):
            if not verbose:
                return
            if self.bar is not None:
                self.bar.write(line, file=sys.stderr)
            else:
                super().note(line)

        def begin(self, op, label):
            if self.bar is not None:
                self.bar.set_description(op, refresh=False)
                self.bar.set_postfix_str(label)

        def end(self):
            if self.bar is not None:
                self.bar.update()

        def print(self, text):
            """`text` on stdout, above the bar."""
            if self.bar is not None:
                self.bar.write(text, file=sys.stdout)
            else:
                print(text, flush=True)

        def close(self):
            if self.bar is not None:
                self.bar.close()

    return BarProgress()


def run(
    device=None,
    quick=False,
    json_path=None,
    ops=None,
    modes=None,
    plot_path=None,
    compiled=True,
    progress=True,
    verbose=False,
) -> int:
    """The command: 0 when every chosen op ran, 1 when one failed (the others' tables are
    printed and written all the same)."""
    start = time.perf_counter()
    common = _common()
    device = device or best_device()
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("python -m fastlayers bench: --device cuda, but no CUDA device is available")
    if device == "cuda" and not _built_with_cuda():
        raise SystemExit(
            "python -m fastlayers bench: --device cuda, but this fastlayers was built without CUDA kernels"
        )
    modules = _selected(ops, modes)
    if not modules:
        raise SystemExit(f"python -m fastlayers bench: no chosen op has a {'/'.join(modes or MODES)} mode")

    ceilings = common.Ceilings(device)
    print("bench: measuring the rooflines (a large copy and matrix multiplies)", file=sys.stderr, flush=True)
    measure_ceilings(ceilings, modules, device, quick)
    env = common.environment(device, ceilings=ceilings)
    env["settings"] = {"ops": list(modules), "modes": list(modes or MODES), "quick": quick}
    env["settings"]["compiled"] = compiled and device == "cuda"
    print(common.summary(env), flush=True)

    total = sum(len(module.cases(device, quick)) for module in modules.values())
    bar = _bar_progress(common, total, verbose, progress)
    seconds = {}

    def done(op, rows, error, wall_s):
        """Each op's table as soon as it is done, above the bar."""
        seconds[op] = round(wall_s, 1)
        if error is not None:
            bar.print(f"\n== {op}: FAILED ({error})")
            return
        table = io.StringIO()
        common.print_table(rows, title=f"== {op} on {device}: {len(rows)} rows in {wall_s:.0f} s", file=table)
        bar.print(table.getvalue().rstrip("\n"))

    try:
        groups, errors = sweep(device, quick, modules, modes, ceilings, bar, compiled, done)
    finally:
        bar.close()
    env["ceilings"] = ceilings.as_dict()
    env["elapsed_s"] = round(time.perf_counter() - start, 1)
    env["op_seconds"] = seconds
    rows = [row for rows in groups.values() for row in rows]
    if json_path:
        common.write_json(rows, json_path, env)
        print(f"bench: wrote {json_path}", file=sys.stderr)
    if plot_path:
        try:
            common.plot_ratios(groups, plot_path, env)
            print(f"bench: wrote {plot_path}", file=sys.stderr)
        except ImportError as err:
            print(f"bench: no plot: {err} (pip install matplotlib)", file=sys.stderr)
        except ValueError as err:  # no rows
            print(f"bench: no plot: {err}", file=sys.stderr)
    print(f"bench: {env['elapsed_s']:.0f} s", file=sys.stderr)
    return 1 if errors else 0
