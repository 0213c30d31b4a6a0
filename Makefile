# The README's commands. Each target sets up what it needs: a .venv with torch, then the
# build of fastlayers._C (incremental: ninja rebuilds only what changed).
#   make demo    the main job: info, check against torch, quick benchmark
#   make test    C++ kernel tests and the SIMT emulator's self-tests (ctest), the pytest
#                suite on the cpu and emu devices, the emulator coverage check, and the
#                static report on the sm_90 code (no spills; HMMA in half attention kernels)
#   make test-emu-asan   the emulated programs and the emu tests under AddressSanitizer
#   make bench   every op's benchmark against torch
#   make wheel   a wheel in dist/ for GPU servers (CUDA archs "8.0;9.0+PTX" unless
#                TORCH_CUDA_ARCH_LIST is set); make wheel-cpu: CPU kernels only
#   make ci-wheel   the CPU wheel against torch 2.13.0 (CPU), installed alone in a fresh venv
#                and smoke-tested there

PYTHON      ?= python3
VENV        ?= .venv
PY          := $(VENV)/bin/python
TORCH_SPEC  ?= torch==2.14.1
CUDA_HOME   ?= /usr/local/cuda
# CI and this machine need only sm_90; wheels default to "8.0;9.0+PTX" (setup.py), so the
# wheel targets drop it unless it came from the environment or the command line.
WHEEL_ARCHS := $(if $(filter undefined,$(origin TORCH_CUDA_ARCH_LIST)),env -u TORCH_CUDA_ARCH_LIST)
TORCH_CUDA_ARCH_LIST ?= 9.0
MAX_JOBS    ?= $(shell nproc)
export CUDA_HOME TORCH_CUDA_ARCH_LIST MAX_JOBS

# ccache where present: for g++ through its masquerade directory, for nvcc through torch's
# PYTORCH_NVCC hook.
# The builds compile with -g in a temporary folder per run, which ccache hashes by default
# (every build a miss): NOHASHDIR and BASEDIR make the folder irrelevant.
ifneq ($(wildcard /usr/lib/ccache/g++),)
export PATH := /usr/lib/ccache:$(PATH)
export PYTORCH_NVCC ?= ccache $(CUDA_HOME)/bin/nvcc
export CCACHE_NOHASHDIR := 1
export CCACHE_BASEDIR := $(CURDIR)
endif

.PHONY: venv build test test-cpp test-py test-static test-emu-asan demo bench wheel wheel-cpu ci-wheel lint format \
  clean

venv: $(VENV)/.stamp
$(VENV)/.stamp: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q "$(TORCH_SPEC)" numpy pytest pytest-timeout ninja ruff clang-format tqdm \
	  matplotlib scikit-learn captum build expecttest
	touch $@

# The editable install rebuilds the whole extension every time it runs, so it runs only when
# a C++/CUDA source, setup.py or the venv changed since the last build (Python files are
# used in place).
BUILD_STAMP := build/.build-stamp
BUILD_INPUTS := $(shell find csrc -type f) setup.py pyproject.toml python/fastlayers/_loader.py
build: $(BUILD_STAMP)
$(BUILD_STAMP): $(VENV)/.stamp $(BUILD_INPUTS)
	$(PY) -m pip install -q --no-build-isolation --no-deps -e .
	@mkdir -p build && touch $@

test-cpp:
	cmake -S . -B build/cmake -G Ninja -DCMAKE_BUILD_TYPE=Release > /dev/null
	cmake --build build/cmake
	ctest --test-dir build/cmake --output-on-failure

# The emulated tests build the test-only extension fastlayers_emu into build/ on first use
# and record the kernels they ran; emu_coverage.py then fails on any CUDA kernel in _C that
# never ran under the emulator.
test-py: build
	rm -f build/emu_coverage.json
	FASTLAYERS_STRICT=1 $(PY) -m pytest -q tests --durations=10
	$(PY) scripts/emu_coverage.py

# libstdc++ is preloaded too: python does not link it, and ASan's __cxa_throw interceptor
# must find it at start-up.
ASAN_PRELOAD = $(shell $(CXX) -print-file-name=libasan.so) $(shell $(CXX) -print-file-name=libstdc++.so)

test-emu-asan: build
	cmake -S . -B build/cmake-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFL_EMU_SANITIZE=ON > /dev/null
	cmake --build build/cmake-asan
	ctest --test-dir build/cmake-asan --output-on-failure -R '^emu_'
	LD_PRELOAD="$(ASAN_PRELOAD)" ASAN_OPTIONS=detect_leaks=0:protect_shadow_gap=0 FASTLAYERS_EMU_SANITIZE=1 \
	  FASTLAYERS_STRICT=1 $(PY) -m pytest -q -s tests -k emu -p no:cacheprovider

# Registers, shared and local memory, HMMA counts of every kernel in _C (cuobjdump).
test-static: build
	$(PY) scripts/static_report.py

test: test-cpp test-py test-static

demo: build
	$(PY) -m fastlayers demo

bench: build
	$(PY) -m fastlayers bench

# Wheels: built outside any editable install (objects in build/wheel-<tag>), named
# fastlayers-<version>+torch<torch version><cuXYZ|cpu>, pinned at import to that torch.
# `build` is installed here too for venvs made before it joined the list above.
WHEEL_BUILD = $(PY) -m build --wheel --no-isolation --outdir dist .

wheel: venv
	$(PY) -c "import build" 2>/dev/null || $(PY) -m pip install -q build
	$(WHEEL_ARCHS) $(WHEEL_BUILD)

wheel-cpu: venv
	$(PY) -c "import build" 2>/dev/null || $(PY) -m pip install -q build
	FASTLAYERS_CUDA=0 $(WHEEL_BUILD)

# CI: the CPU wheel built against torch 2.13.0 (CPU) in its own venv, then installed with
# that torch alone into a fresh venv and smoke-tested from a temporary folder, so nothing
# of the source tree is importable.
CI_WHEEL_TORCH ?= torch==2.13.0
CI_WHEEL_VENV  := build/ci-wheel-venv
CI_SMOKE_VENV  := build/ci-wheel-smoke-venv
CI_WHEEL_DIST  := build/ci-wheel-dist

$(CI_WHEEL_VENV)/.stamp:
	rm -rf $(CI_WHEEL_VENV)
	$(PYTHON) -m venv $(CI_WHEEL_VENV)
	$(CI_WHEEL_VENV)/bin/python -m pip install -q "$(CI_WHEEL_TORCH)" numpy setuptools wheel ninja build
	touch $@

ci-wheel: $(CI_WHEEL_VENV)/.stamp
	rm -rf $(CI_WHEEL_DIST) $(CI_SMOKE_VENV)
	FASTLAYERS_CUDA=0 $(CI_WHEEL_VENV)/bin/python -m build --wheel --no-isolation --outdir $(CI_WHEEL_DIST) .
	$(PYTHON) -m venv $(CI_SMOKE_VENV)
	$(CI_SMOKE_VENV)/bin/python -m pip install -q "$(CI_WHEEL_TORCH)" $(CI_WHEEL_DIST)/*.whl
	tmp=$$(mktemp -d) && cd $$tmp && \
	  $(abspath $(CI_SMOKE_VENV))/bin/python -I $(abspath scripts/wheel_smoke.py) $(abspath $(CI_WHEEL_DIST))/*.whl && \
	  $(abspath $(CI_SMOKE_VENV))/bin/python -I -m fastlayers info && \
	  $(abspath $(CI_SMOKE_VENV))/bin/python -I -m fastlayers check; \
	  rc=$$?; rm -rf $$tmp; exit $$rc

CXX_SOURCES = $(shell find csrc -name '*.cpp' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh')

lint: venv
	$(VENV)/bin/ruff check python tests bench scripts setup.py
	$(VENV)/bin/ruff format --check python tests bench scripts setup.py
	$(VENV)/bin/clang-format --dry-run --Werror $(CXX_SOURCES)

format: venv
	$(VENV)/bin/ruff check --fix python tests bench scripts setup.py
	$(VENV)/bin/ruff format python tests bench scripts setup.py
	$(VENV)/bin/clang-format -i $(CXX_SOURCES)

clean:
	rm -rf build dist python/*.egg-info python/fastlayers/_C*.so python/fastlayers/_build_info.py
