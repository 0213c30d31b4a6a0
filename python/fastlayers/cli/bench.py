"""`python -m fastlayers bench`: every op's benchmark, side by side with torch.

The benchmark scripts live in the source tree's bench/ folder (bench_<op>.py, each with
run(device, quick) -> rows); this command finds that folder next to the package.
"""

import importlib
import os
import sys

import torch

BENCHES = ["conv", "maxpool", "attention", "int8", "rnn"]


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


def collect(device=None, quick=False) -> list:
    """Every op's benchmark rows (bench.common.Result) on `device` (default: the best)."""
    _common()
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    rows = []
    for name in BENCHES:
        module = importlib.import_module(f"bench.bench_{name}")
        rows.extend(module.run(device, quick))
    return rows


def run(device=None, quick=False, json_path=None) -> int:
    common = _common()
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    rows = collect(device, quick)
    common.print_table(rows)
    if json_path:
        common.write_json(rows, json_path, common.environment(device))
    return 0
