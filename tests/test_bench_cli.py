"""`python -m fastlayers bench`: argument parsing, the per-op tables, --json and --plot.

The sweep itself runs tiny fake benchmarks (monkeypatched in place of bench/bench_<op>.py,
with the roofline measurements stubbed), so these tests take seconds; the real benchmarks'
interface is checked without timing anything.
"""

import json
import math
import types

import pytest
import torch

from fastlayers.cli import bench as cli_bench
from fastlayers.cli import main

common = cli_bench._common()


def _fake_module(op: str, modes=("forward", "backward", "full"), fail=False, skip_mode=None):
    """A stand-in for a bench_<op>.py module: two configurations, one row per mode each, in
    microseconds; `skip_mode` gets a second baseline whose row is skipped (as a failed
    torch.compile would be); `fail` raises in run."""

    class Case(types.SimpleNamespace):
        @property
        def label(self):
            return f"n{self.n}"

    def cases(device, quick):
        return [Case(n=n, dtype=torch.float32) for n in ((64,) if quick else (64, 128))]

    def roofline(ceilings, dtype):
        return ceilings.compute_roofline(dtype, "GFLOP/s")

    def run(device, quick=False, *, modes=None, ceilings=None, progress=None, compiled=True):
        if fail:
            raise RuntimeError(f"{op} broke")
        rows = []
        for case in progress.over(op, cases(device, quick)):
            for i, mode in enumerate(m for m in MODES if common.wants(m, modes)):
                row = common.Result(
                    op, mode, f"N{case.n}", "float32", "NCHW", 1.0 + i, 2.0 / (1 + i), 1e9 * case.n, "GFLOP/s"
                )
                row.roofline = roofline(ceilings, case.dtype)
                progress.row(row)
                rows.append(row)
                if mode == skip_mode:
                    skipped = common.Result(
                        op, mode, f"N{case.n}", "float32", "NCHW", 1.0, math.nan, 1e9, "GFLOP/s", {}, "torch.compile"
                    )
                    skipped.note = "skipped: BackendCompilerFailed: no compiler"
                    rows.append(skipped)
        return rows

    MODES = tuple(modes)
    return types.SimpleNamespace(OP=op, MODES=MODES, cases=cases, roofline=roofline, run=run)


@pytest.fixture
def fake_benches(monkeypatch):
    """Fake benchmarks for every op and constant ceilings: a sweep without timing anything."""
    modules = {op: _fake_module(op) for op in cli_bench.OPS}
    modules["int8"] = _fake_module("int8", modes=("forward",))
    modules["attention"] = _fake_module("attention", skip_mode="backward")
    monkeypatch.setattr(cli_bench, "bench_module", lambda op: modules[op])
    monkeypatch.setattr(common, "measure_copy_bandwidth", lambda device, nbytes=None: {"copy": 2e10, "clone": 1e10})
    monkeypatch.setattr(common, "measure_matmul_rate", lambda device, dtype, n=None: 1e11)
    return modules


def _captured_run(monkeypatch, argv):
    """The keyword arguments `python -m fastlayers bench ARGV` passes to bench.run."""
    seen = {}
    monkeypatch.setattr(cli_bench, "run", lambda **kwargs: seen.update(kwargs) or 0)
    assert main(["bench", *argv]) == 0
    return seen


def test_op_names_and_bench_stems():
    assert cli_bench.parse_ops("attention,conv2d") == ["attention", "conv2d"]
    assert cli_bench.parse_ops("conv, maxpool,bench_rnn,INT8") == ["conv2d", "max_pool2d", "rnn", "int8"]
    assert cli_bench.parse_ops("conv,conv2d") == ["conv2d"]


def test_arguments_reach_run(monkeypatch, tmp_path):
    seen = _captured_run(
        monkeypatch,
        ["--op", "attention,conv", "--op", "rnn", "--mode", "forward,full", "--quick", "--device", "cpu"]
        + ["--json", str(tmp_path / "r.json"), "--plot", str(tmp_path / "r.png"), "--no-compile", "--no-progress"],
    )
    assert seen["ops"] == ["attention", "conv2d", "rnn"]
    assert seen["modes"] == ["forward", "full"]
    assert seen["quick"] and seen["device"] == "cpu"
    assert seen["json_path"].endswith("r.json") and seen["plot_path"].endswith("r.png")
    assert not seen["compiled"] and not seen["progress"]


def test_defaults_are_every_op_and_mode(monkeypatch):
    seen = _captured_run(monkeypatch, [])
    assert seen["ops"] is None and seen["modes"] is None and not seen["quick"]
    assert seen["device"] is None and seen["compiled"] and seen["progress"]


def test_bad_op_lists_the_valid_names(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--op", "attention,convolution"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "unknown op 'convolution'" in err
    for name in [*cli_bench.OPS, *cli_bench.OPS.values()]:
        assert name in err


def test_bad_mode_lists_the_valid_modes(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--mode", "forward,fwd"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "unknown mode 'fwd'" in err and "forward, backward, full" in err


def test_sweep_writes_tables_json_and_plot(fake_benches, tmp_path, capsys):
    json_path, plot_path = tmp_path / "out" / "bench.json", tmp_path / "bench.png"
    rc = main(["bench", "--device", "cpu", "--quick", "--json", str(json_path), "--plot", str(plot_path)])
    assert rc == 0
    out = capsys.readouterr().out
    for op in cli_bench.OPS:  # a table per op, with the fastlayers / torch columns and the roofline
        assert f"== {op} on cpu" in out
    assert "fastlayers ms" in out and "torch ms" in out and "torch/fl" in out and "fl % of matmul roofline" in out
    assert "skipped: BackendCompilerFailed" in out

    doc = json.loads(json_path.read_text())  # strict JSON: a skipped row's times are null, not NaN
    env = doc["env"]
    for key in ("device", "gpu", "cpu", "torch", "cuda", "git_sha", "date", "ceilings"):
        assert key in env
    assert env["device_type"] == "cpu" and env["gpu"] is None
    assert env["ceilings"]["matmul_flop_per_s"] == {"float32": 1e11}
    assert env["settings"]["ops"] == list(cli_bench.OPS) and env["settings"]["quick"]
    results = doc["results"]
    assert {r["op"] for r in results} == set(cli_bench.OPS)
    assert all(r["roofline"] for r in results if not r["note"])
    skipped = [r for r in results if r["note"]]
    assert skipped and all(r["torch_ms"] is None and r["ratio"] is None for r in skipped)

    png = plot_path.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_op_and_mode_selection(fake_benches, capsys):
    assert main(["bench", "--device", "cpu", "--op", "int8,rnn", "--mode", "backward", "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "== rnn on cpu" in captured.out and "== int8" not in captured.out and "== conv2d" not in captured.out
    assert "int8 skipped: it has no backward mode" in captured.err
    table = captured.out.split("== rnn on cpu", 1)[1]
    assert "backward" in table and "forward" not in table.split("\n", 2)[2]


def test_no_op_with_the_mode_is_an_error(fake_benches):
    with pytest.raises(SystemExit, match="no chosen op has a backward mode"):
        main(["bench", "--device", "cpu", "--op", "int8", "--mode", "backward"])


def test_a_failing_op_keeps_the_others(fake_benches, monkeypatch, capsys):
    fake_benches["conv2d"] = _fake_module("conv2d", fail=True)
    assert main(["bench", "--device", "cpu", "--op", "conv2d,max_pool2d", "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert "== max_pool2d on cpu" in out and "== conv2d: FAILED (RuntimeError: conv2d broke)" in out


def test_collect_for_the_demo(fake_benches, capsys):
    rows = cli_bench.collect(device="cpu", quick=True)
    assert {r.op for r in rows} == set(cli_bench.OPS)
    cli_bench._common().print_table(rows)
    assert "attention" in capsys.readouterr().out


def test_bench_modules_interface():
    """Each real bench_<op>.py has what the command needs: its op name and modes, cases with
    a dtype (for its ceiling) and a label (for the progress bar), a roofline and run."""
    for op in cli_bench.OPS:
        module = cli_bench.bench_module(op)
        assert module.OP == op
        assert set(module.MODES) <= set(cli_bench.MODES)
        for device in ("cpu", "cuda"):
            for quick in (True, False):
                cases = module.cases(device, quick)
                assert cases and all(isinstance(c.dtype, torch.dtype) and c.label for c in cases)
        assert callable(module.roofline) and callable(module.run)
    assert cli_bench.bench_module("int8").MODES == ("forward",)


def test_pass_fn_modes():
    x, w = torch.randn(3, 4), torch.randn(4, 2)
    grad = torch.ones(3, 2)
    assert torch.equal(common.pass_fn("forward", torch.mm, (x, w), grad)(), x @ w)
    gx, gw = common.pass_fn("backward", torch.mm, (x, w), grad)()
    torch.testing.assert_close(gx, grad @ w.T)
    torch.testing.assert_close(gw, x.T @ grad)
    assert len(common.pass_fn("full", torch.mm, (x, w), grad)()) == 2
    (only_w,) = common.pass_fn("grad_weight", torch.mm, (x, w), grad)()
    torch.testing.assert_close(only_w, x.T @ grad)
    assert common.wants("grad_input", ["backward"]) and not common.wants("grad_input", ["forward"])


def test_a_failing_baseline_is_a_skipped_row():
    def broken():
        raise RuntimeError("compile failed\nmore detail")

    ms, note = common.time_baseline(broken, "cpu")
    assert math.isnan(ms) and note == "skipped: RuntimeError: compile failed"


def test_time_fns_interleaves_the_calls_on_cpu():
    calls = []
    a, b = (lambda: calls.append("a")), (lambda: calls.append("b"))
    times = common.time_fns([a, b], "cpu", warmup=1, reps=3, min_time=1e-9)
    assert len(times) == 2 and all(t >= 0 for t in times)
    assert calls == ["a", "b"] * (len(calls) // 2) and len(calls) >= 8
