#!/usr/bin/env bash
# `make oldest-torch-check`: build the extension against the oldest torch that
# pyproject.toml accepts (its `torch>=X.Y` bound, as torch==X.Y.0) and run the whole test
# suite there. That release is also the one on the lent GPU machines (torch 2.11+cu130), so
# a break in its headers or Python API is found here rather than in a lent machine's 15
# minutes; the CUDA sources compile too where a toolkit is found (setup.py's default).
#
# It works apart from the main build: its own venv (build/oldest-torch/venv, kept, so a
# rerun only re-checks the packages) and its own copy of the tree (build/oldest-torch/src,
# refreshed on every run; its build directory is kept, so a rerun compiles only what
# changed). Nothing under .venv or fusedmlp/ is touched.
#
# PYTHON: the interpreter the venv is made from (default python3).
# TEST_DEPS: the packages besides torch and the library models (the Makefile's list).
# OLDEST_TORCH_SPEC / OLDEST_TEST_MODEL_SPECS: override the torch pin and the library
# models' releases that go with it (torchvision's release is tied to torch's).
# Where no package index offers that torch (or a test package for it), the check says so
# and is skipped with exit status 0, as arm-check does without its apt packages; any other
# failure to install fails it.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BASE_PY="${PYTHON:-python3}"
OLDEST="$(sed -n 's/^dependencies = \["torch>=\([0-9][0-9.]*\),.*/\1/p' "$ROOT/pyproject.toml")"
[[ -n "$OLDEST" ]] || { echo "oldest-torch-check: no torch>=X.Y in pyproject.toml's dependencies"; exit 1; }
TORCH_SPEC="${OLDEST_TORCH_SPEC:-torch==$OLDEST.0}"
MODEL_SPECS="${OLDEST_TEST_MODEL_SPECS:-torchvision==0.26.0 timm==1.0.31}"
WORK="$ROOT/build/oldest-torch"
VENV="$WORK/venv"
VPY="$VENV/bin/python"
step() { printf '\n== oldest-torch-check: %s\n' "$*"; }

step "venv $VENV with $TORCH_SPEC, $MODEL_SPECS"
deps="$TORCH_SPEC ${TEST_DEPS:?run through make oldest-torch-check, which sets TEST_DEPS} $MODEL_SPECS"
if [[ ! -x "$VPY" || "$(cat "$VENV/.deps" 2>/dev/null)" != "$deps" ]]; then
  rm -rf "$VENV"
  mkdir -p "$WORK"
  # The venv takes about 5.1 GB (torch's CUDA build and its libraries) and the build 0.2 GB.
  free_gb=$(( $(df -Pk "$WORK" | awk 'NR == 2 {print $4}') / 1048576 ))
  if (( free_gb < 8 )); then
    echo "oldest-torch-check: skipped: $free_gb GB free under $WORK; the venv and build take about 5.5 GB, and this check asks for 8"
    exit 0
  fi
  "$BASE_PY" -m venv "$VENV"
  # shellcheck disable=SC2086  # one word per package
  if ! "$VPY" -m pip install --quiet $deps > "$WORK/pip.log" 2>&1; then
    grep -v '^WARNING: Location' "$WORK/pip.log" | tail -5
    rm -rf "$VENV"
    # Only a package that no index offers is a reason to skip; any other failure (a full
    # disk, a broken wheel) fails the check.
    grep -q 'No matching distribution found' "$WORK/pip.log" || exit 1
    echo "oldest-torch-check: skipped: pip finds no $TORCH_SPEC (or no test package for it) here"
    exit 0
  fi
  echo "$deps" > "$VENV/.deps"
fi
"$VPY" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda)'

step "copy of the tree (tracked and untracked, not ignored) in $WORK/src"
rm -rf "$WORK/src"
mkdir -p "$WORK/src"
bash "$ROOT/scripts/copy_tree.sh" "$WORK/src"

step "build (MAX_JOBS=${MAX_JOBS:-unset}; build directory $WORK/temp kept between runs)"
start=$SECONDS
(cd "$WORK/src" && "$VPY" setup.py build_ext --inplace --build-temp "$WORK/temp" > "$WORK/build.log" 2>&1) ||
  { tail -40 "$WORK/build.log"; exit 1; }
echo "built in $((SECONDS - start)) s"
(cd "$WORK/src" && "$VPY" -m fusedmlp.info)

step "the test suite against $TORCH_SPEC"
cd "$WORK/src"
# On the path for the tests' child processes too (benchmarks/bench.py imports fusedmlp).
export PYTHONPATH="$WORK/src${PYTHONPATH:+:$PYTHONPATH}"
"$VPY" -m pytest -q -p no:cacheprovider tests
