#!/usr/bin/env bash
# GPU verification of the CUDA backend, sized to a short device lease (README, "Verifying
# on a lent GPU", says how to call it through the device tool). From the repository root:
#
#     bash benchmarks/gpu_check.sh              # on the GPU machine
#     bash benchmarks/gpu_check.sh --dry-run    # anywhere, no GPU: the plan and the plumbing
#     bash benchmarks/gpu_check.sh --only bench,memcheck   # a rerun of some steps
#
# Steps, most valuable first; each runs under its own budget (a timeout), and a step that
# fails or overruns does not stop the next. The budgets add up to BUDGET_LIMIT_S (8.5 min).
# Results: at most 8 files under $OUT (default ./gpu_out): summary.txt (one line per step),
# bench.md and bench.json (the benchmark table), logs.tar.gz (every step's full log),
# each rewritten after every step, so a run cut short still returns what it did.
# --dry-run runs each step's cheap stand-in instead (no build, no GPU: the environment
# facts, ninja, test collection with the same selections, the benchmark and sanitizer
# case lists) and writes the same files. GPU_CHECK_COMPILE=1 adds torch.compile to the
# benchmark. Exit status: 0 only if every step that ran passed.
set -uo pipefail
cd "$(dirname "$0")/.."

BUDGET_LIMIT_S=510
# name:budget_s, in the order they run.
STEPS=(env:15 build:150 smoke:30 test_cuda:100 bench:75 memcheck:50 racecheck:45 test_compile:40)

DRY_RUN=0
ONLY=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --only) ONLY="${2:-}"; shift ;;
    -h|--help) sed -n '2,/^set /{/^#/p}' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $1 (--dry-run, --only STEP,...)" >&2; exit 2 ;;
  esac
  shift
done

total=0
for entry in "${STEPS[@]}"; do total=$(( total + ${entry#*:} )); done
for name in ${ONLY//,/ }; do
  if [[ " ${STEPS[*]} " != *" $name:"* ]]; then
    echo "gpu_check.sh: --only: no step named $name (steps: ${STEPS[*]%%:*})" >&2
    exit 2
  fi
done
if [ "$total" -gt "$BUDGET_LIMIT_S" ]; then
  echo "gpu_check.sh: step budgets add up to ${total}s, over ${BUDGET_LIMIT_S}s" >&2
  exit 2
fi

OUT="${OUT:-./gpu_out}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
export OUT
LOG_ROOT="$(mktemp -d)"
LOGS="$LOG_ROOT/logs"
mkdir -p "$LOGS"
trap 'rm -rf "$LOG_ROOT"' EXIT
SUMMARY="$OUT/summary.txt"
export PY="${PYTHON:-python3}"
if [ "$DRY_RUN" = 1 ]; then  # whichever fusedmlp the caller has (CI: its installed build)
  export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD"
else  # the in-place build below
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
export DRY_RUN

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
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}"  # H100/H200; one arch: half the nvcc work
export MAX_JOBS="${MAX_JOBS:-$(nproc)}"
export FUSEDMLP_CUDA=1  # fail the build loudly rather than silently build CPU-only

commit() {  # the checked-out commit, + when the tree has changes ('?' outside git)
  local hash
  hash="$(git rev-parse --short HEAD 2> /dev/null)" || { echo '?'; return; }
  if git diff --quiet HEAD 2> /dev/null; then echo "$hash"; else echo "$hash+changes"; fi
}

# The steps. Each checks DRY_RUN itself, so that the dry run exercises the same names.
step_env() {
  echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC'), commit: $(commit)"
  nvidia-smi || echo "nvidia-smi: not found or no GPU"
  echo "CUDA_HOME=$CUDA_HOME TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST MAX_JOBS=$MAX_JOBS cores=$(nproc)"
  nvcc --version | tail -n 2 || echo "nvcc: MISSING"
  "$PY" - << 'EOF'
import importlib.util, sys
import torch
print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda,
      "gpu", torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
for name in ("pytest", "hypothesis", "expecttest", "ninja"):
    print(f"{name}: {'present' if importlib.util.find_spec(name) else 'MISSING'}")
EOF
  echo "compute-sanitizer: $(find_sanitizer || echo MISSING)"
}

step_build() {
  # torch's BuildExtension compiles in parallel only through ninja (else one file at a time).
  if command -v ninja > /dev/null; then
    echo "ninja $(ninja --version): parallel build, MAX_JOBS=$MAX_JOBS"
  else
    echo "ninja: MISSING, the build is serial"
  fi
  # In place, in ./build (kept between calls on a warm machine: a rerun is incremental).
  [ "$DRY_RUN" = 1 ] && { echo "dry run: would run $PY setup.py build_ext --inplace"; return 0; }
  "$PY" setup.py build_ext --inplace && "$PY" -m fusedmlp.info
}

# One forward and one backward per dtype and op, each case named before it runs: with
# launches synchronous, a trap or fault shows in the case that raised it.
step_smoke() {
  [ "$DRY_RUN" = 1 ] && { "$PY" benchmarks/sanitize_cuda.py --smoke --dry-run; return; }
  CUDA_LAUNCH_BLOCKING=1 "$PY" benchmarks/sanitize_cuda.py --smoke
}

# pytest FILTER: tests/test_cuda.py with that marker expression (collection only when dry).
# For real, a GPU that torch cannot see (or a build without the CUDA kernels) fails the
# step: every test would skip, and pytest would call that a pass.
cuda_tests() {
  local collect=()
  if [ "$DRY_RUN" = 1 ]; then
    collect=(--collect-only)
  else
    "$PY" -c 'import sys, torch, fusedmlp
gpu, built = torch.cuda.is_available(), fusedmlp.info()["cuda_built"]
if not (gpu and built):
    sys.exit(f"no CUDA tests can run: torch sees a GPU: {gpu}, CUDA kernels built: {built}")' \
      || return 3
  fi
  "$PY" -m pytest -q -rfEs -p no:cacheprovider --durations=5 "${collect[@]}" -m "$1" \
    tests/test_cuda.py
}
step_test_cuda() { cuda_tests "not compile"; }
step_test_compile() { cuda_tests "compile"; }

step_bench() {
  local args=(--cases lease --min-time 0.05 --json "$OUT/bench.json" --markdown "$OUT/bench.md")
  [ "${GPU_CHECK_COMPILE:-0}" = 1 ] && args+=(--compile)
  [ "$DRY_RUN" = 1 ] && args+=(--dry-run)
  "$PY" benchmarks/bench_gpu.py "${args[@]}"
}

find_sanitizer() {
  for c in "$(command -v compute-sanitizer 2> /dev/null)" \
           "$CUDA_HOME/bin/compute-sanitizer" "$CUDA_HOME/compute-sanitizer/compute-sanitizer"; do
    if [ -n "$c" ] && [ -x "$c" ]; then echo "$c"; return 0; fi
  done
  return 1
}

# sanitize TOOL [WORKLOAD ARGS]: only our kernels are instrumented (their mangled names
# hold the namespace "fusedmlp"), so torch's own kernels run at full speed.
sanitize() {
  local tool="$1" sanitizer
  shift
  local cmd=(--tool "$tool" --kernel-name kns=fusedmlp --report-api-errors no
             --error-exitcode 99 "$PY" benchmarks/sanitize_cuda.py "$@")
  sanitizer="$(find_sanitizer)" || sanitizer=""
  if [ "$DRY_RUN" = 1 ]; then
    "$PY" benchmarks/sanitize_cuda.py --dry-run "$@" | tail -n 1 || return
    echo "dry run: would run ${sanitizer:-compute-sanitizer (not found here)} ${cmd[*]}"
    return
  fi
  [ -n "$sanitizer" ] || { echo "compute-sanitizer not found"; return 2; }
  # No caching allocator: every tensor is its own allocation, so an access past a tensor's
  # end is an error memcheck can see (not a read of the cached block's slack).
  PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$sanitizer" "${cmd[@]}"
}
step_memcheck() { sanitize memcheck; }
step_racecheck() { sanitize racecheck --smoke; }  # racecheck is the slower tool

export -f commit step_env step_build step_smoke cuda_tests step_test_cuda step_test_compile \
  step_bench find_sanitizer sanitize step_memcheck step_racecheck

pack_logs() {
  tar -czf "$OUT/logs.tar.gz.tmp" -C "$LOG_ROOT" logs && mv "$OUT/logs.tar.gz.tmp" "$OUT/logs.tar.gz"
}

# run_step NAME BUDGET: runs step_NAME under `timeout` with its output in logs/NAME.log,
# and adds its status, time and last line to the summary.
run_step() {
  local name="$1" budget="$2" t0 rc status log="$LOGS/$1.log"
  t0=$(date +%s)
  echo "=== $name (budget ${budget}s)" | tee "$log"
  # 2 s of the budget are the grace between TERM and KILL.
  timeout --kill-after=2 $(( budget - 2 )) bash -o pipefail -c "step_$name" >> "$log" 2>&1
  rc=$?
  case $rc in
    0) status=PASS ;;
    124) status=TIMEOUT ;;
    137) status=KILLED ;;  # past the grace, or out of memory
    *) status="FAIL(rc=$rc)" ;;
  esac
  [ "$DRY_RUN" = 1 ] && [ "$status" = PASS ] && status=DRY-OK
  printf '%-13s %-12s %4ss of %3ss  %s\n' "$name" "$status" "$(( $(date +%s) - t0 ))" "$budget" \
    "$(grep -v '^\s*$' "$log" | tail -n 1 | cut -c1-110)" | tee -a "$SUMMARY"
  if [ "$status" != PASS ] && [ "$status" != DRY-OK ]; then
    FAILED+=("$name")
    tail -n 15 "$log" | sed 's/^/    /'
  fi
  pack_logs
}

rm -f "$OUT/bench.json" "$OUT/bench.md"
{
  echo "gpu_check.sh$([ "$DRY_RUN" = 1 ] && echo ' --dry-run') $(date -u '+%Y-%m-%d %H:%M:%S UTC')" \
    "commit $(commit)"
  echo "steps (budget s): ${STEPS[*]}; total ${total}s of ${BUDGET_LIMIT_S}s"
  echo "files: summary.txt bench.md bench.json logs.tar.gz (logs/<step>.log)"
} | tee "$SUMMARY"
START=$(date +%s)
FAILED=()
for entry in "${STEPS[@]}"; do
  name="${entry%%:*}"
  if [ -n "$ONLY" ] && [[ ",$ONLY," != *",$name,"* ]]; then continue; fi
  run_step "$name" "${entry#*:}"
done
# The benchmark writes its tables itself; a dry run or a skipped step leaves them empty.
[ -f "$OUT/bench.md" ] || echo "(no benchmark table: the bench step did not run)" > "$OUT/bench.md"
[ -f "$OUT/bench.json" ] || echo '{"meta": null, "rows": []}' > "$OUT/bench.json"
echo "total $(( $(date +%s) - START ))s; not passed: ${FAILED[*]:-none}" | tee -a "$SUMMARY"
echo
cat "$OUT/bench.md"
[ ${#FAILED[@]} -eq 0 ]  # the exit status: 0 only if every step that ran passed
