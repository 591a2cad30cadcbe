#!/usr/bin/env bash
# `make arm-check`: the CPU kernels on 64-bit Arm, checked from an x86 machine with
# Debian's cross compiler and qemu-user (no Arm hardware, no aarch64 torch):
#   1. tests/native/gemm_check.cpp (the GEMM driver with the generic and NEON micro-
#      kernels against a float64 reference, no torch) cross-compiled for aarch64 and run
#      under qemu-aarch64, then again built with AddressSanitizer + UBSan;
#   2. every CPU source setup.py compiles for aarch64, syntax-checked for aarch64
#      against the installed torch's headers (-fsyntax-only, setup.py's flags).
# The tools are installed with apt-get when missing and possible; when they cannot be,
# this says so and skips (exit 0): it never fails for want of them.
# `scripts/arm_check.sh --native` runs only step 1, natively (every x86 ISA the CPU has).
#
# PYTHON: an interpreter with torch (default .venv/bin/python), for setup.py's source
# list and torch's headers.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-.venv/bin/python}"
ARM_CXX="${ARM_CXX:-aarch64-linux-gnu-g++}"
export QEMU_LD_PREFIX="${QEMU_LD_PREFIX:-/usr/aarch64-linux-gnu}"  # the target's libc
OUT=build/arm_check

# setup.py's sources for an architecture (x86, arm64): the single source of that rule.
sources_for() {
  "$PY" -c "import sys; sys.path.insert(0, '.'); import setup; print(*setup._cpu_sources('$1'))" \
    2>/dev/null
}

# The harness links the CPU sources that need neither torch nor Python: all but those
# including torch or pybind11 headers (ATen/Parallel.h, which gemm.cpp uses, comes from
# tests/native/shim).
harness_sources() {
  for src in $(sources_for "$1"); do
    grep -qE '#include <(torch|c10|pybind11)/|#include <ATen/[^P]' "$src" || echo "$src"
  done
}

# build_and_run NAME CXX RUNNER FLAGS...: compile the harness and run it.
build_and_run() {
  local name=$1 cxx=$2 runner=$3 arch=$4
  shift 4
  mkdir -p "$OUT"
  echo "== arm-check: gemm_check ($name): build"
  # shellcheck disable=SC2046
  "$cxx" -std=c++20 -Wall -pthread -Icsrc -Itests/native/shim "$@" \
    tests/native/gemm_check.cpp $(harness_sources "$arch") -o "$OUT/gemm_check_$name"
  echo "== arm-check: gemm_check ($name): run${runner:+ under $runner}"
  $runner "$OUT/gemm_check_$name"
}

if [[ "${1:-}" == "--native" ]]; then
  case "$(uname -m)" in
    x86_64 | i?86) arch=x86 ;;
    aarch64 | arm64) arch=arm64 ;;
    *) arch=none ;;
  esac
  build_and_run native "${CXX:-g++}" "" "$arch" -O2
  exit 0
fi

skip() {
  echo "arm-check: SKIPPED: $*"
  exit 0
}
if ! command -v "$ARM_CXX" > /dev/null || ! command -v qemu-aarch64 > /dev/null; then
  echo "arm-check: $ARM_CXX or qemu-aarch64 missing; installing g++-aarch64-linux-gnu qemu-user"
  sudo=""
  [[ "$(id -u)" == 0 ]] || { sudo -n true 2> /dev/null && sudo="sudo -n"; } ||
    skip "not root and no password-less sudo to install them with apt-get"
  command -v apt-get > /dev/null || skip "no apt-get here to install them with"
  { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
      $sudo apt-get install -y -qq g++-aarch64-linux-gnu qemu-user > /dev/null; } ||
    skip "apt-get could not install g++-aarch64-linux-gnu qemu-user (see above)"
  command -v "$ARM_CXX" > /dev/null && command -v qemu-aarch64 > /dev/null ||
    skip "$ARM_CXX or qemu-aarch64 still missing after apt-get install"
fi
sources_for arm64 > /dev/null || { echo "arm-check: $PY cannot import torch"; exit 1; }

# 1. The kernels, run: optimised as the extension is built, then under the sanitizers
# (ASan catches reads past an edge that no value check sees; its leak checker does not
# work under qemu).
build_and_run aarch64 "$ARM_CXX" qemu-aarch64 arm64 -O3
ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=print_stacktrace=1 \
  build_and_run aarch64-asan "$ARM_CXX" qemu-aarch64 arm64 -O1 -g \
  -fsanitize=address,undefined -fno-sanitize-recover=undefined

# 2. Every CPU source of the aarch64 extension against torch's headers, with setup.py's
# flags (the C++ standard torch's cpp_extension uses, OpenMP, the torch ABI).
read -r -a torch_flags <<< "$("$PY" -c "
import sysconfig, torch
from torch.utils.cpp_extension import include_paths
flags = ['-I' + p for p in include_paths() + [sysconfig.get_paths()['include']]]
print(*flags, '-D_GLIBCXX_USE_CXX11_ABI=%d' % torch._C._GLIBCXX_USE_CXX11_ABI)" 2> /dev/null)"
echo "== arm-check: aarch64 syntax check of setup.py's arm64 sources against torch's headers"
for src in $(sources_for arm64); do
  "$ARM_CXX" -fsyntax-only -std=c++20 -O3 -Wall -fopenmp -fvisibility=hidden \
    -DTORCH_EXTENSION_NAME=_C -DTORCH_API_INCLUDE_EXTENSION_H -Icsrc "${torch_flags[@]}" "$src"
  echo "  ok  $src"
done
echo "arm-check: passed (NEON kernel under qemu, plain and sanitized; aarch64 syntax check)"
