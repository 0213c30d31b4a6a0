"""python -m fastlayers {info,check,bench,demo}."""

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastlayers", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="versions, compiled CUDA archs, CPU features, ops and their devices")
    sub.add_parser("check", help="cross-check every op against torch on every available device")
    bench = sub.add_parser("bench", help="benchmark the ops against torch")
    bench.add_argument("--device", choices=["cpu", "cuda"], default=None)
    bench.add_argument("--quick", action="store_true")
    bench.add_argument("--json", default=None, help="write the results as JSON to this path")
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

        return run(device=args.device, quick=args.quick, json_path=args.json)
    if args.command == "demo":
        from fastlayers.cli.demo import run

        return run(device=args.device, epochs=args.epochs, quick=args.quick, out=args.out)
    return 2


if __name__ == "__main__":
    sys.exit(main())
