"""`python -m fastlayers demo`, the main job: what is installed, whether every op agrees
with torch here, and how fast each op is against torch."""

from fastlayers.cli import bench, check, info


def _banner(title):
    print(f"\n=== {title} " + "=" * max(0, 72 - len(title)))


def run(device=None) -> int:
    _banner("fastlayers info")
    info.run()
    _banner("fastlayers check: every op against torch")
    failed = check.run()
    _banner("fastlayers bench --quick: side by side with torch")
    bench.run(device=device, quick=True)
    return failed
