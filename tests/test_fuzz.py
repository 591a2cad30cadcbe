"""Property-based fuzzing with hypothesis: random shapes (0, 1, primes, up to a few
hundred), strides (transposed, sliced, expanded bias), bias or not, dtypes and ISAs;
forward and every gradient against the float64 reference.

CI runs FUZZ_EXAMPLES (default 300) examples; `make fuzz` runs many more."""
import os

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fusedmlp
from conftest import AVAILABLE_ISAS
from helpers import assert_close_to, reference

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))
SIZES = st.one_of(st.sampled_from([0, 1, 2, 3, 7, 13, 17, 31, 127, 129, 257]),
                  st.integers(0, 300))


@st.composite
def layer_inputs(draw):
    rows, k, n = draw(SIZES), draw(SIZES), draw(SIZES)
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2 ** 31 - 1)))

    def randn(*shape):
        return torch.randn(*shape, dtype=dtype, generator=gen)

    x_layout = draw(st.sampled_from(["contiguous", "transposed", "sliced", "nd", "row_padded"]))
    if x_layout == "transposed":
        x = randn(k, rows).t()
    elif x_layout == "sliced":
        x = randn(rows, 2 * k)[:, ::2]
    elif x_layout == "row_padded":
        x = randn(rows, k + 3)[:, :k]
    elif x_layout == "nd":
        x = randn(2, rows, k).transpose(0, 1)
    else:
        x = randn(rows, k)
    w = randn(k, n).t() if draw(st.booleans()) else randn(n, k)
    bias_kind = draw(st.sampled_from(["none", "contiguous", "expanded", "sliced"]))
    b = {"none": None, "contiguous": randn(n) if n else randn(0),
         "expanded": randn(1).expand(n), "sliced": randn(2 * n)[::2]}[bias_kind]
    return x, w, b, draw(st.sampled_from(AVAILABLE_ISAS))


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(layer_inputs(), st.booleans())
def test_fuzz_against_float64_reference(inputs, relu):
    x, w, b, isa = inputs
    fusedmlp.set_cpu_isa(isa)
    try:
        x.requires_grad_(), w.requires_grad_()
        if b is not None:
            b.requires_grad_()
        fn = fusedmlp.linear_relu if relu else fusedmlp.linear
        y = fn(x, w, b)
        grad_y = torch.randn_like(y)
        y_ref, grads_ref = reference(x, w, b, grad_y, relu=relu, relu_output=y)
        assert y.shape == y_ref.shape
        assert_close_to(y, y_ref, w.shape[1])
        inputs_ = [t for t in (x, w, b) if t is not None]
        grads = torch.autograd.grad(y, inputs_, grad_y, allow_unused=True)
        rows = y.numel() // max(w.shape[0], 1)
        for g, g_ref, t, red in zip(grads, grads_ref, inputs_, (w.shape[0], rows, rows)):
            g = torch.zeros_like(t) if g is None else g
            g_ref = torch.zeros_like(t, dtype=torch.float64) if g_ref is None else g_ref
            assert g.shape == t.shape
            assert_close_to(g, g_ref, red)
    finally:
        fusedmlp.set_cpu_isa(AVAILABLE_ISAS[-1])
