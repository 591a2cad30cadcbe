"""CPU cache detection and the blocking derived from it: what fusedmlp.info() reports, the
override (set_cpu_caches / FUSEDMLP_CPU_CACHES), and correct results under forced small
caches (many K, row and column blocks) and forced large ones (one block)."""
import os
import pathlib
import subprocess
import sys

import pytest
import torch

import fusedmlp
from conftest import AVAILABLE_ISAS
from helpers import check_against_reference, make

# Forced cache sizes: "small" splits every test shape into several K / row / column blocks
# (fp32 packed KC 16 and dot-product KC 48 on AVX-512); "large" keeps each in one block.
FORCED = {"small": "l1d=2K,l2=16K,l3=64K", "large": "l1d=1M,l2=16M,l3=256M"}


@pytest.fixture(params=list(FORCED))
def forced_caches(request):
    fusedmlp.set_cpu_caches(FORCED[request.param])
    yield request.param
    fusedmlp.set_cpu_caches("")


def test_info_reports_cpu_caches_and_blocking():
    info = fusedmlp.info()
    cpu, caches, blocking = info["cpu"], info["cpu_caches"], info["cpu_blocking"]
    assert isinstance(cpu["vendor"], str) and cpu["family"] >= 0 and cpu["model"] >= 0
    assert caches["source"] in ("cpuid 0x8000001D", "cpuid 4", "sysfs", "FUSEDMLP_CPU_CACHES",
                                "default (nothing detected)")
    assert 4 << 10 <= caches["l1d"] <= caches["l2"]
    for dtype in ("float32", "float64"):
        for path in ("packed", "dot"):
            b = blocking[dtype][path]
            assert b["mr"] >= 1 and b["nr"] >= 1 and b["kc"] >= 16
            assert b["mc"] >= 1 and b["nc"] >= b["nr"] and b["nc"] % b["nr"] == 0
        assert blocking[dtype]["dot_max_rows"] > 0
    assert blocking["min_work_per_thread"] > 0
    assert blocking["row_panel_max_k"] >= 1
    out = subprocess.run([sys.executable, "-m", "fusedmlp.info"], capture_output=True,
                         text=True, check=True).stdout
    assert "cpu_caches" in out and "cpu_blocking" in out


def sysfs_size(index):
    path = pathlib.Path(f"/sys/devices/system/cpu/cpu0/cache/index{index}")
    if not (path / "size").exists():
        return None, None
    text = (path / "size").read_text().strip()
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1], 1)
    level = int((path / "level").read_text())
    kind = (path / "type").read_text().strip()
    return (level, kind), int(text.rstrip("KMG")) * scale


@pytest.mark.skipif(not pathlib.Path("/sys/devices/system/cpu/cpu0/cache").exists(),
                    reason="no sysfs cache description (not Linux, or hidden)")
def test_detected_caches_agree_with_sysfs():
    """CPUID and the kernel's sysfs describe the same caches (sysfs is the fallback)."""
    caches = fusedmlp.info()["cpu_caches"]
    sysfs = dict(sysfs_size(i) for i in range(8))
    if (1, "Data") in sysfs:
        assert caches["l1d"] == sysfs[(1, "Data")]
    if (2, "Unified") in sysfs:
        assert caches["l2"] == sysfs[(2, "Unified")]


def test_blocking_reproduces_the_hand_tuned_constants():
    """At the caches of the machine the constants were tuned on (32 KiB L1d, 1 MiB L2),
    with the AVX2 kernels, the derived blocks are the tuned ones."""
    if "avx2" not in AVAILABLE_ISAS:
        pytest.skip("needs a CPU with AVX2")
    before = fusedmlp.info()["cpu_isa"]
    try:
        fusedmlp.set_cpu_isa("avx2")
        fusedmlp.set_cpu_caches("l1d=32K,l2=1M")
        fp32 = fusedmlp.info()["cpu_blocking"]["float32"]
        assert fp32["packed"] == {"mr": 6, "nr": 16, "mc": 192, "kc": 256, "nc": 512}
        assert fp32["dot"] == {"mr": 3, "nr": 4, "mc": 64, "kc": 1024, "nc": 512}
        # fp64: the same bytes of L1 per tile (its NR is half as many elements).
        fp64 = fusedmlp.info()["cpu_blocking"]["float64"]
        assert fp64["packed"]["nr"] == 8 and fp64["packed"]["kc"] == 200
        assert fp64["dot"]["kc"] == 512
    finally:
        fusedmlp.set_cpu_caches("")
        fusedmlp.set_cpu_isa(before)


def test_blocking_follows_the_cache_sizes():
    try:
        sizes = []
        for spec in ("l1d=16K,l2=256K", "l1d=32K,l2=1M", "l1d=64K,l2=4M"):
            fusedmlp.set_cpu_caches(spec)
            info = fusedmlp.info()
            assert info["cpu_caches"]["source"] == "override"
            sizes.append(info["cpu_blocking"]["float32"])
        for smaller, larger in zip(sizes, sizes[1:]):
            for path in ("packed", "dot"):
                assert smaller[path]["kc"] < larger[path]["kc"]
                # The L2 block (KC x NC or MC x KC) grows with L2.
                area = "nc" if path == "packed" else "mc"
                assert (smaller[path]["kc"] * smaller[path][area]
                        < larger[path]["kc"] * larger[path][area])
        fusedmlp.set_cpu_caches("")
        assert fusedmlp.info()["cpu_caches"]["source"] != "override"
    finally:
        fusedmlp.set_cpu_caches("")


@pytest.mark.parametrize("spec", ["l1d", "l1d=", "l1d=0", "l4=1M", "l2=12Q", "l1d=512"])
def test_set_cpu_caches_rejects_bad_specs(spec):
    before = fusedmlp.info()["cpu_caches"]
    with pytest.raises(ValueError, match="expected a comma list of l1d=SIZE"):
        fusedmlp.set_cpu_caches(spec)
    assert fusedmlp.info()["cpu_caches"] == before


def run_with_caches_env(value, code):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "FUSEDMLP_CPU_CACHES": value})


def test_caches_from_environment():
    code = "import fusedmlp; c = fusedmlp.info()['cpu_caches']; print(c['l1d'], c['l2'], c['source'])"
    out = run_with_caches_env("l1d=16K,l2=512K", code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["16384", "524288", "FUSEDMLP_CPU_CACHES"]
    bad = run_with_caches_env("l2=lots", code)
    assert bad.returncode != 0
    assert "FUSEDMLP_CPU_CACHES: cache sizes 'l2=lots': bad item 'l2=lots'" in bad.stderr


# Shapes that cross every block boundary under the forced sizes: the dot-product forward
# (<= 512 rows) with K split, the packed forward (> 512 rows), the backward's packed
# GEMMs with many K blocks in grad_w (rows) and grad_x (out_features), and small batches.
BLOCKING_SHAPES = [(1, 784, 128), (4, 300, 10), (16, 129, 70), (37, 200, 61),
                   (600, 45, 33), (130, 260, 700)]


@pytest.mark.parametrize("shape", BLOCKING_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_forced_cache_sizes_match_reference(isa, forced_caches, shape, dtype):
    check_against_reference(fusedmlp.linear_relu, *make(*shape, dtype))
    check_against_reference(fusedmlp.linear, *make(*shape, dtype, bias=False), relu=False)


def test_packed_results_do_not_depend_on_the_blocking(isa):
    """Every output of the packed GEMMs sums its K terms in the same order whatever the
    block sizes: a > 512-row forward, grad_x and grad_w give the same bits (grad_b adds
    per-K-block partial sums: equal within rounding)."""
    x, w, b = make(600, 300, 70, torch.float32)
    g = torch.randn(600, 70)
    results = []
    try:
        for spec in ("", *FORCED.values()):
            fusedmlp.set_cpu_caches(spec)
            y = fusedmlp.linear_relu(x, w, b)
            results.append((y, *torch.autograd.grad(y, (x, w, b), g)))
    finally:
        fusedmlp.set_cpu_caches("")
    for other in results[1:]:
        for a, c in zip(results[0][:3], other[:3]):
            assert torch.equal(a, c)
        torch.testing.assert_close(results[0][3], other[3])
