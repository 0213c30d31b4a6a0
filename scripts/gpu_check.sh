#!/usr/bin/env bash
# One command for a GPU machine: build fastlayers with its CUDA kernels, run the CUDA tests,
# the compute-sanitizer tests and the quick benchmark.
#
#   scripts/gpu_check.sh OUTDIR [--only OP]
#
# Stages: env, build, check, tests, sanitizer, refs, bench. Each runs under its own timeout with its
# output in OUTDIR/<stage>.log, and its result ({status, rc, seconds, log, tail}) is merged into
# OUTDIR/report.json as soon as it ends, so a run cut off from outside still reports the stages
# it finished. Every stage runs even after a failure; later ones then fail fast. The whole run
# is also bounded by GPU_CHECK_BUDGET_S (default 290): a stage gets at most the time left and
# is skipped when none is. --only OP narrows the tests to `-k "cuda and OP"` (and the sanitizer
# tests likewise) and benchmarks bench/bench_OP.py. Exit status 0 when every stage passed, else 1.
set -u

usage() {
  echo "usage: $0 OUTDIR [--only OP]" >&2
  exit 2
}
[ $# -ge 1 ] || usage
OUT=$1
shift
ONLY=""
while [ $# -gt 0 ]; do
  case $1 in
    --only)
      [ $# -ge 2 ] || usage
      ONLY=$2
      shift 2
      ;;
    *) usage ;;
  esac
done
# OUTDIR is relative to the caller's directory, so resolve it before moving to the repo root.
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd) || exit 2
cd "$(dirname "$0")/.." || exit 2
rm -f "$OUT/report.json"

TESTS_K=cuda
SANITIZER_K="cuda and sanitizer"
if [ -n "$ONLY" ]; then
  TESTS_K="$TESTS_K and $ONLY"
  SANITIZER_K="$SANITIZER_K and $ONLY"
fi
BENCH_OP=${ONLY:-maxpool}
export OUT TESTS_K SANITIZER_K BENCH_OP

now_ms() { date +%s%3N; }
START_MS=$(now_ms)
BUDGET_MS=$((${GPU_CHECK_BUDGET_S:-290} * 1000))
FAILED=0

# record STAGE STATUS RC SECONDS: merge the stage's result into OUTDIR/report.json. The file is
# replaced atomically so a reader never sees it half written.
record() {
  python3 - "$OUT/report.json" "$@" <<'PY'
import json
import os
import sys

path, stage, status, rc, seconds = sys.argv[1:]
try:
    with open(path) as f:
        report = json.load(f)
except (OSError, ValueError):
    report = {}
log = stage + ".log"
tail = ""
try:
    with open(os.path.join(os.path.dirname(path), log), "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 3000))
        tail = f.read().decode("utf-8", "replace")
except OSError:
    pass
report[stage] = {"status": status, "rc": int(rc), "seconds": float(seconds), "log": log, "tail": tail}
with open(path + ".tmp", "w") as f:
    json.dump(report, f, indent=2)
os.replace(path + ".tmp", path)
PY
}

# run_stage NAME TIMEOUT_S FUNCTION: run FUNCTION in a fresh bash under timeout, log and record it.
run_stage() {
  local name=$1 limit=$2 body=$3
  local left=$(((BUDGET_MS - ($(now_ms) - START_MS)) / 1000))
  if [ "$left" -lt 5 ]; then
    echo "== $name: skipped, the run's ${GPU_CHECK_BUDGET_S:-290} s are spent"
    record "$name" skipped -1 0
    FAILED=1
    return
  fi
  [ "$left" -lt "$limit" ] && limit=$left
  echo "== $name (timeout ${limit}s)"
  local t0 rc ms secs status
  t0=$(now_ms)
  # timeout signals its whole process group, so compilers and test processes die with the stage.
  timeout -k 5 "$limit" bash -euo pipefail -c "$(declare -f "$body"); $body" >"$OUT/$name.log" 2>&1
  rc=$?
  ms=$(($(now_ms) - t0))
  secs=$(printf '%d.%03d' $((ms / 1000)) $((ms % 1000)))
  case $rc in
    0) status=pass ;;
    124 | 137) status=timeout ;;
    *) status=fail ;;
  esac
  record "$name" "$status" "$rc" "$secs"
  echo "== $name: $status (rc=$rc) in ${secs}s"
  if [ "$rc" -ne 0 ]; then
    FAILED=1
    tail -n 25 "$OUT/$name.log" | sed 's/^/   | /'
  fi
}

stage_env() {
  nvidia-smi -L
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c 'import sys, torch; print("python", sys.version.split()[0]); print("torch", torch.__version__, "cuda", torch.version.cuda); print("device", torch.cuda.get_device_name(0))'
  echo "nproc $(nproc)"
}

stage_build() {
  export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
  # The machine is offline: no build isolation, no dependencies, no index, no pip version
  # check. Its python3 may be a distribution's, marked externally managed (PEP 668).
  TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=$(nproc) FASTLAYERS_CUDA=1 \
    PIP_BREAK_SYSTEM_PACKAGES=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    python3 -m pip install --no-build-isolation --no-deps --no-index -e .
}

stage_check() {
  python3 -m fastlayers check
}

stage_tests() {
  FASTLAYERS_STRICT=1 python3 -m pytest -q -x tests -k "$TESTS_K" -p no:cacheprovider
}

stage_sanitizer() {
  local sanitizer rc=0 tool
  sanitizer=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
  for tool in memcheck racecheck; do
    echo "-- $tool"
    # Without torch's caching allocator every tensor is its own allocation, so memcheck sees an
    # access past a tensor's end. API errors are not reported because torch and the driver probe
    # for optional entry points and expect errors back; errors in kernels set the exit code.
    PYTORCH_NO_CUDA_MEMORY_CACHING=1 FASTLAYERS_STRICT=1 \
      "$sanitizer" --tool "$tool" --error-exitcode 1 --report-api-errors no \
      python3 -m pytest -q -x tests -k "$SANITIZER_K" -p no:cacheprovider || rc=1
  done
  return $rc
}

# The SIMT emulator's reference programs (csrc/emu/tests/ref_*.cu), built by nvcc and run on
# the GPU: their known answers hold on hardware too, so the emulator's semantics (and the mma
# fragment layouts ref_mma_gemm relies on) agree with the GPU's.
stage_refs() {
  local nvcc=${CUDA_HOME:-/usr/local/cuda}/bin/nvcc dir rc=0 src
  dir=$(mktemp -d)
  for src in csrc/emu/tests/ref_*.cu; do
    "$nvcc" -std=c++20 -O2 -arch=sm_90 -Icsrc -Icsrc/include "$src" -o "$dir/$(basename "$src" .cu)" &
  done
  wait
  for src in csrc/emu/tests/ref_*.cu; do
    "$dir/$(basename "$src" .cu)" || rc=1
  done
  return $rc
}

stage_bench() {
  python3 "bench/bench_$BENCH_OP.py" --device cuda --quick --json "$OUT/bench_$BENCH_OP.json"
}

run_stage env 30 stage_env
run_stage build 240 stage_build
run_stage check 60 stage_check
run_stage tests 150 stage_tests
run_stage sanitizer 120 stage_sanitizer
run_stage refs 60 stage_refs
if [ -f "bench/bench_$BENCH_OP.py" ]; then
  run_stage bench 90 stage_bench
else
  echo "== bench: skipped, no bench/bench_$BENCH_OP.py"
  record bench skipped 0 0
fi

total_ms=$(($(now_ms) - START_MS))
printf '== total %d.%03ds: %s\n' $((total_ms / 1000)) $((total_ms % 1000)) \
  "$([ "$FAILED" -eq 0 ] && echo 'all stages passed' || echo 'some stages failed')"
exit "$FAILED"
