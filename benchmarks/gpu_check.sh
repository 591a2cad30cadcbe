#!/usr/bin/env bash
# GPU verification of the CUDA backend, for a bare H100/H200 machine with python3 (torch
# with CUDA), nvcc and no network. From the repository root:
#
#     bash benchmarks/gpu_check.sh            # logs and tables under $OUT (default ./gpu_out)
#
# Steps: environment facts, build (pip install -e, no downloads), CUDA tests, CPU tests,
# compute-sanitizer memcheck and racecheck over benchmarks/sanitize_cuda.py, GPU benchmark.
# Every step runs under its own timeout and the script goes on after a failure; each
# step's status and time land in $OUT/summary.txt. The timeouts add up to under 8 minutes.
set -uo pipefail
cd "$(dirname "$0")/.."

OUT="${OUT:-./gpu_out}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
SUMMARY="$OUT/summary.txt"
export PY="${PYTHON:-python3}"
START=$(date +%s)
: > "$SUMMARY"
COMMIT="$(git rev-parse --short HEAD 2> /dev/null || echo '?')"
echo "gpu_check.sh $(date -u '+%Y-%m-%d %H:%M:%S UTC') commit $COMMIT" >> "$SUMMARY"

# step NAME TIMEOUT_S CMD...: runs CMD (a program or one of the functions below, which
# `timeout` reaches through an exported-function bash) with its output in $OUT/NAME.log,
# and records the status.
step() {
  local name="$1" limit="$2"
  shift 2
  local t0 rc status
  t0=$(date +%s)
  echo "=== $name (timeout ${limit}s): $*" | tee "$OUT/$name.log"
  timeout --kill-after=2 "$limit" bash -c '"$@"' step "$@" >> "$OUT/$name.log" 2>&1
  rc=$?
  case $rc in
    0) status=PASS ;;
    124|137) status="TIMEOUT(${limit}s)" ;;
    *) status="FAIL(rc=$rc)" ;;
  esac
  printf '%-12s %-16s %4ss  %s\n' "$name" "$status" "$(( $(date +%s) - t0 ))" "$OUT/$name.log" \
    | tee -a "$SUMMARY"
  tail -n 3 "$OUT/$name.log" | sed 's/^/    /'
  return $rc
}

# A CUDA toolkit: CUDA_HOME if set, else /usr/local/cuda, else from the nvcc on PATH.
if [ -z "${CUDA_HOME:-}" ]; then
  if [ -x /usr/local/cuda/bin/nvcc ]; then
    CUDA_HOME=/usr/local/cuda
  elif command -v nvcc > /dev/null; then
    CUDA_HOME="$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")"
  fi
fi
export CUDA_HOME="${CUDA_HOME:-}"
export PATH="${CUDA_HOME:+$CUDA_HOME/bin:}$PATH"
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}"
export MAX_JOBS="${MAX_JOBS:-16}"
export FUSEDMLP_CUDA=1  # fail the build loudly rather than silently build CPU-only

env_facts() {
  nvidia-smi || true
  echo "CUDA_HOME=$CUDA_HOME TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST MAX_JOBS=$MAX_JOBS"
  nvcc --version || true
  "$PY" - << 'EOF'
import sys, torch
print("python", sys.version.split()[0])
print("torch", torch.__version__, "cuda", torch.version.cuda,
      "gpu available", torch.cuda.is_available())
print("device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
EOF
  "$PY" -c "import pytest; print('pytest', pytest.__version__)" || echo "pytest: MISSING"
  "$PY" -c "import expecttest" 2> /dev/null && echo "expecttest: present" \
    || echo "expecttest: MISSING"
  command -v ninja > /dev/null && echo "ninja: $(ninja --version)" \
    || echo "ninja: MISSING (serial build)"
  echo "compute-sanitizer: $(find_sanitizer || echo MISSING)"
}

# No network there: no build isolation, no dependencies, no index. If pip cannot do an
# editable install, fall back to an in-place build so that the later steps still run.
build() {
  "$PY" -m pip install --no-index --no-build-isolation --no-deps -v -e . && return 0
  echo "pip install -e failed; falling back to setup.py build_ext --inplace"
  "$PY" setup.py build_ext --inplace && return 3
}

find_sanitizer() {
  for c in "$(command -v compute-sanitizer 2> /dev/null)" \
           "$CUDA_HOME/bin/compute-sanitizer" "$CUDA_HOME/compute-sanitizer/compute-sanitizer"; do
    if [ -n "$c" ] && [ -x "$c" ]; then echo "$c"; return 0; fi
  done
  return 1
}

sanitize() {  # sanitize TOOL
  local tool="$1" sanitizer
  sanitizer="$(find_sanitizer)" || { echo "compute-sanitizer not found"; return 2; }
  # No caching allocator: every tensor is its own allocation, so an access past a tensor's
  # end is an error memcheck can see (not a read of the cached block's slack).
  PYTORCH_NO_CUDA_MEMORY_CACHING=1 \
    "$sanitizer" --tool "$tool" --error-exitcode 99 "$PY" benchmarks/sanitize_cuda.py
}

export -f env_facts build find_sanitizer sanitize
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # the in-place fallback build
export PYTHONUNBUFFERED=1

# Timeouts: 10 + 140 + 10 + 90 + 40 + 45 + 45 + 75 = 455 s, + 2 s kill grace each at
# worst: under 8 minutes.
step env 10 env_facts
step build 140 build
step info 10 "$PY" -m fusedmlp.info
step test_cuda 90 "$PY" -m pytest -q -rs -p no:cacheprovider --durations=10 tests/test_cuda.py
# The core CPU suite only: the GPU machine may lack hypothesis / scikit-learn (no network),
# and CI runs the whole CPU suite anyway.
step test_cpu 40 "$PY" -m pytest -q -x -p no:cacheprovider tests/test_linear_relu.py \
  tests/test_errors.py tests/test_module.py tests/test_torch_integration.py
step memcheck 45 sanitize memcheck
step racecheck 45 sanitize racecheck
# Shapes run smallest first: if the timeout hits, only the 8192^3 rows are missing.
step bench 75 "$PY" benchmarks/bench_gpu.py --min-time 0.05 --json "$OUT/bench.json"
grep '^|' "$OUT/bench.log" > "$OUT/bench_table.md" 2> /dev/null || true

echo "total $(( $(date +%s) - START ))s" | tee -a "$SUMMARY"
echo "summary: $SUMMARY"
