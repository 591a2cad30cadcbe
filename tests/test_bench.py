"""benchmarks/bench.py end to end at tiny settings: every table RESULTS.md quotes is
produced, with the ratios and ceilings computed from its own measurements."""
import json
import pathlib
import subprocess
import sys

import fusedmlp

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_cpu_benchmark_writes_every_table(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench.py"), "--shapes", "8x16x4,3x5x7",
         "--min-run-time", "0.01", "--no-compile", "--threads", "1", "--json", str(out)],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(out.read_text())
    assert [r["size"] for r in results["gemm"]] == [1024, 2048]
    peak = results["fma_peak_gflops"]
    assert peak > 0
    for row in results["gemm"]:
        assert row["fused_peak_share"] == row["fused_gflops"] / peak
    assert [r["shape"] for r in results["layers"]] == ["8x16->4", "3x5->7"]
    for row in results["layers"]:
        for key in ("fwd_vs_eager", "fwdbwd_vs_eager", "fwd_ceiling", "fwdbwd_ceiling"):
            assert row[key] > 0, key
        assert row["fwd_vs_eager"] == row["fwd_eager_us"] / row["fwd_fused_us"]
        # ceilings: eager over (the overhead floor measured in this run + FLOPs at the peak)
        for kind in ("fwd", "fwdbwd"):
            assert row[f"{kind}_floor_us"] > 0
            assert row[f"{kind}_ceiling"] == row[f"{kind}_eager_us"] / (
                row[f"{kind}_floor_us"] + row[f"{kind}_flop"] / peak / 1e3)
    (step,) = results["train"]
    assert step["batch"] == 64 and step["vs_eager"] == step["eager_us"] / step["fused_us"]
    gemm_us = step["gemm_flop"] / peak / 1e3
    assert step["floor_us"] > 0 and step["floor_batch1_us"] > 0
    assert step["ceiling"] == step["eager_us"] / (gemm_us + step["floor_us"])
    assert step["ceiling_batch1"] == step["eager_batch1_us"] / (gemm_us / 64
                                                                + step["floor_batch1_us"])
    assert step["vs_eager_batch1"] == step["eager_batch1_us"] / step["fused_batch1_us"]
    # batch 1: the fused model's share of the step, its fixed cost (16-16-10 over its own
    # floor), and the ratio faster kernels alone could reach
    assert step["model_batch1_us"] == step["fused_batch1_us"] - step["floor_batch1_us"]
    assert step["model_fixed_batch1_us"] == (step["fused_batch1_tiny_us"]
                                             - step["floor_batch1_tiny_us"])
    assert step["free_gemm_ceiling_batch1"] == step["eager_batch1_us"] / (
        step["floor_batch1_us"] + step["model_fixed_batch1_us"])
    assert "free-GEMM ceiling, batch 1" in proc.stdout
    # Every table is headed by the CPU model, its caches and the ISA (RESULTS.md quotes it).
    info = fusedmlp.info()
    assert results["cpu"] == info["cpu"] and results["cpu_isa"] == info["cpu_isa"]
    assert results["cpu_caches"]["l1d"] == info["cpu_caches"]["l1d"]
    header = proc.stdout.splitlines()[0]
    assert f"family {info['cpu']['family']} model {info['cpu']['model']}" in header
    assert "L1d" in header and "L2" in header and "L3" in header and "ISA" in header
    assert "| 8x16->4 |" in proc.stdout and "ceiling" in proc.stdout and "% peak" in proc.stdout
    # the whole-MLP op table: FusedMLP as one op vs its layers vs eager, batch 1 and 64
    assert [r["batch"] for r in results["mlp"]] == [1, 64]
    for row in results["mlp"]:
        assert row["op_vs_layers"] == row["layers_us"] / row["op_us"]
        assert row["op_vs_eager"] == row["eager_us"] / row["op_us"]
    assert "whole-MLP op" in proc.stdout


def test_activation_option_benchmarks_each_activation(tmp_path):
    """--activation: one layer row per activation and shape, eager act(F.linear) the baseline."""
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench.py"), "--shapes", "8x16x4",
         "--activation", "gelu,silu,relu_squared", "--skip", "gemm,train", "--min-run-time",
         "0.01", "--no-compile", "--threads", "1", "--json", str(out)],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(out.read_text())["layers"]
    assert [r["activation"] for r in rows] == ["gelu", "silu", "relu_squared"]
    for row in rows:
        assert row["fwdbwd_vs_eager"] == row["fwdbwd_eager_us"] / row["fwdbwd_fused_us"]
    assert "| gelu | 8x16->4 |" in proc.stdout
    bad = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench.py"),
                          "--activation", "swish"], capture_output=True, text=True, timeout=600)
    assert bad.returncode != 0 and "unknown 'swish'" in bad.stderr
