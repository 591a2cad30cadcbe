"""benchmarks/gpu_check.sh --dry-run, as CI and any machine without a GPU can run it: every
step runs its stand-in (test collection with the GPU run's selections, the benchmark and
sanitizer case lists), the budgets fit the lease, and $OUT holds the few files the device
tool brings back."""
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tarfile

import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
STEPS = ["env", "build", "smoke", "test_cuda", "bench", "memcheck", "racecheck", "test_compile"]
LEASE_LIMIT_S = 510  # 8.5 minutes of a 15-minute lease: room for the machine's start
MAX_FILES = 8        # the device tool brings back at most 8 files from $OUT

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def run_script(out, *args):
    env = dict(os.environ, OUT=str(out), PYTHON=sys.executable)
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def dry_run(out, *args):
    return run_script(out, "--dry-run", *args)


def test_dry_run_plans_every_step_within_the_lease(tmp_path):
    proc = dry_run(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = (tmp_path / "summary.txt").read_text()
    budgets = dict(re.findall(r"^(\w+)\s+DRY-OK\s+\d+s of\s+(\d+)s", summary, re.M))
    assert list(budgets) == STEPS, summary  # in the order of value, each one ran
    assert sum(map(int, budgets.values())) <= LEASE_LIMIT_S
    assert f"total {sum(map(int, budgets.values()))}s of {LEASE_LIMIT_S}s" in summary

    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert sorted(p.name for p in files) == ["bench.json", "bench.md", "logs.tar.gz",
                                             "summary.txt"]
    assert len(files) <= MAX_FILES
    with tarfile.open(tmp_path / "logs.tar.gz") as logs:
        assert sorted(logs.getnames()) == sorted(["logs"] + [f"logs/{s}.log" for s in STEPS])
        test_log = logs.extractfile("logs/test_cuda.log").read().decode()
        compile_log = logs.extractfile("logs/test_compile.log").read().decode()
        bench_log = logs.extractfile("logs/bench.log").read().decode()
    # The GPU run's two test selections split tests/test_cuda.py between them.
    collected = [int(re.search(r"(\d+)/\d+ tests collected", log).group(1))
                 for log in (test_log, compile_log)]
    total = int(re.search(r"\d+/(\d+) tests collected", test_log).group(1))
    assert min(collected) > 0 and sum(collected) == total
    assert json.loads((tmp_path / "bench.json").read_text())["rows"] == []
    assert "| dtype | shape | mode |" in (tmp_path / "bench.md").read_text()
    # The lease's benchmark: 4 cases x (fwd, fwd+bwd), no torch.compile unless asked.
    timed = re.findall(r"^would time (.*): (.*)$", bench_log, re.M)
    assert len(timed) == 8 and {impls for _, impls in timed} == {"fusedmlp, eager, addmm_act"}
    for case in ("float32 65536x128->128 fwd", "float32 4096x4096->4096 fwd+bwd",
                 "bfloat16 8192x8192->8192 fwd+bwd"):
        assert case in [row for row, _ in timed]


def test_only_reruns_the_named_steps(tmp_path):
    proc = dry_run(tmp_path, "--only", "build,memcheck")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ran = re.findall(r"^(\w+)\s+DRY-OK", (tmp_path / "summary.txt").read_text(), re.M)
    assert ran == ["build", "memcheck"]
    assert len([p for p in tmp_path.rglob("*") if p.is_file()]) <= MAX_FILES


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU these steps would really run")
def test_a_failing_step_does_not_stop_the_next(tmp_path):
    """Without a GPU the real smoke, CUDA test and bench steps fail (the test step rather
    than pass with every test skipped): all are recorded, the run goes on to the end,
    exits 1, and still leaves the same files."""
    proc = run_script(tmp_path, "--only", "smoke,test_cuda,bench")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    summary = (tmp_path / "summary.txt").read_text()
    assert re.findall(r"^(\w+)\s+FAIL\(rc=(\d)\)", summary, re.M) == [
        ("smoke", "1"), ("test_cuda", "3"), ("bench", "1")]
    assert "no CUDA tests can run: torch sees a GPU: False" in summary
    assert summary.rstrip().endswith("not passed: smoke test_cuda bench")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.json", "bench.md",
                                                          "logs.tar.gz", "summary.txt"]
