import pytest
import torch

import fusedmlp

ISAS = ["generic", "avx2", "avx512", "neon"]


def _runs_here(isa):
    """Whether this build and CPU run `isa` (x86 has avx2/avx512, 64-bit Arm has neon)."""
    before = fusedmlp.info()["cpu_isa"]
    try:
        fusedmlp.set_cpu_isa(isa)
        return True
    except ValueError:
        return False
    finally:
        fusedmlp.set_cpu_isa(before)


# Every micro-kernel this CPU can run: the SIMD paths are checked on the same machine
# as the portable one (an ISA the CPU lacks cannot run here and is not listed).
AVAILABLE_ISAS = [isa for isa in ISAS if _runs_here(isa)]

requires_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU; none is visible on this machine")


@pytest.fixture(params=AVAILABLE_ISAS)
def isa(request):
    """Runs the test once per CPU micro-kernel ISA, restoring the default after."""
    before = fusedmlp.info()["cpu_isa"]
    fusedmlp.set_cpu_isa(request.param)
    yield request.param
    fusedmlp.set_cpu_isa(before)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
