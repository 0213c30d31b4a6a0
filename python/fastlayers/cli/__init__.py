"""python -m fastlayers {info,check,bench,demo}."""

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastlayers", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="versions, compiled CUDA archs, CPU features, ops and their devices")
    sub.add_parser("check", help="cross-check every op against torch on every available device")
    from fastlayers.cli.bench import MODES, OPS, parse_modes, parse_ops

    bench = sub.add_parser("bench", help="benchmark the ops against torch")
    bench.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda if there is one")
    bench.add_argument("--quick", action="store_true", help="fewer configurations (about a minute)")
    bench.add_argument(
        "--op",
        type=parse_ops,
        action="extend",
        default=None,
        metavar="OP[,OP..]",
        help=f"the ops to run, of {', '.join(OPS)} (or the bench file stems); default: all",
    )
    bench.add_argument(
        "--mode",
        type=parse_modes,
        action="extend",
        default=None,
        metavar="MODE[,MODE..]",
        help=f"of {', '.join(MODES)} (full = forward + backward); default: all that each op has",
    )
    bench.add_argument("--no-compile", action="store_true", help="no torch.compile baselines (they run on CUDA only)")
    bench.add_argument("--json", default=None, metavar="PATH", help="write the rows and the environment as JSON")
    bench.add_argument("--plot", default=None, metavar="PATH", help="plot the ratios to PATH (PNG)")
    bench.add_argument("--no-progress", action="store_true", help="no progress bar")
    bench.add_argument("-v", "--verbose", action="store_true", help="print each row as it is timed")
    demo = sub.add_parser(
        "demo", help="the main job: check, train the seed models on the digits, quantize, explain, benchmark"
    )
    demo.add_argument("--device", choices=["cpu", "cuda"], default=None)
    demo.add_argument("--epochs", type=int, default=None, help="training epochs (default 12, 3 with --quick)")
    demo.add_argument("--quick", action="store_true", help="fewer epochs")
    demo.add_argument("--out", default="demo-output", help="output folder (default demo-output/)")
    args = parser.parse_args(argv)

    if args.command == "info":
        from fastlayers.cli.info import run

        return run()
    if args.command == "check":
        from fastlayers.cli.check import run

        return run()
    if args.command == "bench":
        from fastlayers.cli.bench import run

        return run(
            device=args.device,
            quick=args.quick,
            json_path=args.json,
            ops=args.op,
            modes=args.mode,
            plot_path=args.plot,
            compiled=not args.no_compile,
            progress=not args.no_progress,
            verbose=args.verbose,
        )
    if args.command == "demo":
        from fastlayers.cli.demo import run

        return run(device=args.device, epochs=args.epochs, quick=args.quick, out=args.out)
    return 2


if __name__ == "__main__":
    sys.exit(main())
