#!/usr/bin/env bash
# `make dist-check`: what a user of a package index gets. From a clean copy of the tree:
# build the sdist, check it holds every file the build needs, build a wheel from that
# sdist (not from the tree), install the wheel into a fresh virtual environment, and run
# scripts/dist_smoke.py there (forward, backward, fusedmlp.info()).
#
# PYTHON: an interpreter with a supported torch (default .venv/bin/python). The fresh
# venv reuses that torch through a .pth file instead of downloading it again (a venv's
# --system-site-packages would only reach the base interpreter's packages, not another
# venv's); fusedmlp itself comes only from the wheel, which the smoke test checks.
# FUSEDMLP_CUDA: as for setup.py; 0 (CPU only) unless set.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-.venv/bin/python}"
[[ "$PY" == /* ]] || PY="$ROOT/$PY"  # absolute, but not resolved: a venv's python is a link
export FUSEDMLP_CUDA="${FUSEDMLP_CUDA:-0}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/fusedmlp-dist.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
step() { printf '\n== dist-check: %s\n' "$*"; }

step "clean copy of the tree (tracked and untracked, not ignored) in $WORK/src"
mkdir "$WORK/src"
bash "$ROOT/scripts/copy_tree.sh" "$WORK/src"

step "sdist"
(cd "$WORK/src" && "$PY" setup.py -q sdist --dist-dir "$WORK/sdist" > "$WORK/sdist.log" 2>&1) ||
  { cat "$WORK/sdist.log"; exit 1; }
SDIST="$(ls "$WORK"/sdist/*.tar.gz)"
# Every file under csrc/ (headers included) and the license must be in it.
missing="$(cd "$WORK/src" && comm -23 <(find csrc LICENSE -type f | sort) \
  <(tar -tzf "$SDIST" | sed -n 's|^[^/]*/||p' | sort))"
if [[ -n "$missing" ]]; then
  echo "dist-check: the sdist lacks files the build needs:"; echo "$missing"; exit 1
fi
echo "$(basename "$SDIST"): $(tar -tzf "$SDIST" | grep -c '^[^/]*/csrc/.*\.\(h\|cuh\)$') headers, every csrc/ file and LICENSE"

step "wheel from the sdist (FUSEDMLP_CUDA=$FUSEDMLP_CUDA, MAX_JOBS=${MAX_JOBS:-unset})"
start=$SECONDS
"$PY" -m pip wheel --quiet --no-build-isolation --no-deps --no-index -w "$WORK/wheel" "$SDIST"
WHEEL="$(ls "$WORK"/wheel/fusedmlp-*.whl)"
echo "$(basename "$WHEEL") built in $((SECONDS - start)) s"

step "fresh venv with the wheel installed"
"$PY" -m venv "$WORK/venv"
VPY="$WORK/venv/bin/python"
torch_site="$("$PY" -c 'import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))')"
venv_site="$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo "$torch_site" > "$venv_site/_dist_check_torch.pth"
# --ignore-installed: a development install of fusedmlp next to torch must not count as
# this one; --no-index: nothing is downloaded (torch's requirement is checked below).
"$VPY" -m pip install --quiet --no-index --no-deps --ignore-installed "$WHEEL"
# The venv's own old setuptools (Python < 3.12 seeds one) would hide the one torch needs.
"$VPY" -m pip uninstall --quiet --yes setuptools 2>/dev/null || true
"$VPY" -m pip check  # fusedmlp's torch requirement holds (and torch's own)

step "smoke test in the fresh venv"
cd "$WORK"  # not the source tree: its fusedmlp/ must not shadow the installed one
"$VPY" "$ROOT/scripts/dist_smoke.py" "$WORK/venv"
