"""Small batches (1-17 rows) on every ISA: the tiles with fewer rows than the micro-kernel's
MR run a kernel of exactly that many rows, and the backward GEMMs of a small batch take the
row-panel path (grad_w at K = rows, grad_x at <= MR rows: B read in place). Values and
gradients against the float64 reference, every activation, strided inputs, NaN/Inf, which
path runs, the same bits as the packed path and on any thread count, and each row's output
bitwise the same as in a large batch."""
import pytest
import torch

import fusedmlp
from fusedmlp.ops import ACTIVATIONS
from fusedmlp.ops import _saves_pre_activation
from helpers import (assert_close_to, assert_same_special_values, check_against_reference,
                     check_nan_inf_parity, make, reference)
from test_activations import check_values_and_grads, fused, scaled_inputs

ROWS = [1, 2, 3, 4, 5, 7, 8, 9, 16, 17]
# The two layers, an odd one, and K past the dot-product kernel's K block.
LAYERS = [(784, 128), (128, 10), (37, 19), (1500, 6)]


@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize("layer", LAYERS, ids=lambda s: f"{s[0]}to{s[1]}")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_small_batch_matches_reference(isa, rows, layer, dtype):
    check_against_reference(fusedmlp.linear_relu, *make(rows, *layer, dtype))


@pytest.mark.parametrize("rows", [1, 3, 16])
def test_small_batch_plain_linear_matches_reference(isa, rows):
    check_against_reference(fusedmlp.linear, *make(rows, 784, 128, torch.float32), relu=False)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_each_row_gets_the_same_bits_in_any_batch(isa, dtype):
    """Output row i and grad_x row i depend only on row i: computed alone or in a small
    batch they are bitwise equal to the same rows of a larger batch on the same path,
    whichever tile size computed them (forward: the dot-product tiles, up to the ISA's
    dot_max_rows rows; grad_x: packed panels at any batch, here 600 rows)."""
    x, w, b = make(600, 300, 70, dtype)
    g = torch.randn(600, 70, dtype=dtype)
    dot_rows = fusedmlp.info()["cpu_blocking"][str(dtype).split(".")[1]]["dot_max_rows"]
    assert dot_rows >= 64

    def run(start, length):
        rows = slice(start, start + length)
        y = fusedmlp.linear_relu(x[rows], w, b)
        (gx,) = torch.autograd.grad(y, x, g[rows])
        return y, gx[rows]
    y_dot, _ = run(0, dot_rows)
    _, gx_600 = run(0, 600)
    for start, length in [(0, 1), (5, 1), (7, 2), (10, 3), (30, 5), (40, 16), (47, 17)]:
        y, gx = run(start, length)
        assert torch.equal(y, y_dot[start:start + length])
        assert torch.equal(gx, gx_600[start:start + length])


# The row-panel GEMM path (gemm.cpp, MicroKernel::rows): grad_w with K = rows up to
# row_panel_max_k, and grad_x with rows up to the micro-kernel's MR, read B (x, W) in place
# one row panel at a time. Rows on both sides of 16 and of every ISA's MR (4, 6, 8);
# in_features whose rows are an odd (784: 49 lines) or even (1024) number of 64-byte
# lines apart, or not whole lines (1, 3, 17, 129), and never a multiple of every width.
PANEL_ROWS = [1, 2, 3, 5, 8, 16, 17]
PANEL_IN_FEATURES = [1, 3, 17, 129, 784, 1024]
DTYPES = [torch.float32, torch.float64]


def path_counts():
    return fusedmlp._C.cpu_gemm_path_counts()


def same_values_other_layout(t):
    """t's values in column-major memory (what a transposed tensor looks like)."""
    return t.detach().t().contiguous().t().requires_grad_(t.requires_grad)


@pytest.mark.parametrize("rows", PANEL_ROWS)
@pytest.mark.parametrize("in_features", PANEL_IN_FEATURES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_row_panel_backward_matches_reference(isa, rows, in_features, dtype):
    check_against_reference(fusedmlp.linear_relu,
                            *make(rows, in_features, 37, dtype, bias=rows % 2 == 1))


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("shape", [(1, 784, 37), (3, 129, 20), (5, 17, 3), (16, 1024, 9)],
                         ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_row_panel_every_activation(isa, activation, shape, dtype):
    check_values_and_grads(fused("function", activation), activation,
                           *scaled_inputs(*shape, dtype))


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_row_panel_forward_epilogue(isa, activation):
    """Forwards on the row-panel path apply the activation (and store the pre-activation)
    on the finished panel: W transposed (B = Wᵀ row-major) at a few rows, and K = 1 past
    every ISA's dot-product batch (600 rows)."""
    for rows, k, n, transposed in [(1, 129, 20, True), (5, 40, 33, True), (600, 1, 13, False)]:
        x, w, b = scaled_inputs(rows, k, n, torch.float64)
        if transposed:
            w = same_values_other_layout(w)
        check_values_and_grads(fused("function", activation), activation, x, w, b)


@pytest.mark.parametrize("rows", [1, 3, 8])
@pytest.mark.parametrize("layout", ["x_transposed", "grad_y_transposed", "grad_y_expanded",
                                    "x_rows_48_apart", "x_expanded"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_row_panel_strided_inputs(isa, rows, layout, dtype):
    """Strided x and grad_y at small batches: row-major x (any row stride, 0 included)
    stays on the row-panel path, column-major x falls back to packed panels; grad_y in
    any layout is packed as A."""
    k, n = 45, 13
    x, w, b = make(rows, k, n, dtype, requires_grad=False)
    if layout == "x_transposed":
        x = same_values_other_layout(x)
    elif layout == "x_rows_48_apart":
        x = torch.randn(rows, 48, dtype=dtype)[:, :k]
    elif layout == "x_expanded":
        x = torch.randn(1, k, dtype=dtype).expand(rows, k)
    grad_y = torch.randn(rows, n, dtype=dtype)
    if layout == "grad_y_transposed":
        grad_y = same_values_other_layout(grad_y)
    elif layout == "grad_y_expanded":
        grad_y = torch.randn(1, 1, dtype=dtype).expand(rows, n)
    x, w, b = (t.requires_grad_() for t in (x, w, b))
    y = fusedmlp.linear_relu(x, w, b)
    _, grads_ref = reference(x, w, b, grad_y, relu_output=y)
    grads = torch.autograd.grad(y, (x, w, b), grad_y)
    for g, g_ref, red in zip(grads, grads_ref, [n, rows, rows]):
        assert_close_to(g, g_ref, red)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_row_panel_nan_inf(isa, dtype):
    """NaN/Inf in x, W, b and grad_y at 8 rows (grad_w K = 8; grad_x one panel on AVX-512
    and NEON) propagate as torch's (every activation: test_activations.py's
    test_nan_inf_behave_as_torch, same shape, float64: torch's float32 SIMD gelu differs)."""
    check_nan_inf_parity(dtype)
    check_nan_inf_parity(dtype, fn=lambda x, w, b: fusedmlp.linear(x, w, b), act=lambda z: z)


def test_small_batch_backward_takes_the_row_panel_path(isa):
    """Which path each backward GEMM takes: grad_w (K = rows) on row panels up to
    row_panel_max_k rows, grad_x up to MR rows, whatever W's row stride; packed panels
    beyond, and for a column-major x (B not row-major)."""
    blocking = fusedmlp.info()["cpu_blocking"]
    mr, max_k = blocking["float32"]["packed"]["mr"], blocking["row_panel_max_k"]
    assert max_k >= 8
    backward = torch.ops.fusedmlp.linear_relu_backward

    def path_of(mask, x, w, y, g):
        before = path_counts()
        backward(g, x, w, y, mask)
        after = path_counts()
        changed = [p for p in after if after[p] != before[p]]
        assert len(changed) == 1 and after[changed[0]] == before[changed[0]] + 1
        return changed[0]
    for in_features in (784, 1024):
        for rows in sorted({1, mr, mr + 1, max_k, max_k + 1}):
            x, w, b = make(rows, in_features, 128, torch.float32, requires_grad=False)
            y = fusedmlp.linear_relu(x, w, b)
            g = torch.randn_like(y)
            grad_w, grad_x = [False, True, True], [True, False, False]
            assert path_of(grad_w, x, w, y, g) == ("row_panels" if rows <= max_k else "packed")
            assert path_of(grad_x, x, w, y, g) == ("row_panels" if rows <= mr else "packed")
            if rows > 1:  # (one row is both row- and column-major)
                assert path_of(grad_w, same_values_other_layout(x), w, y, g) == "packed"


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_row_panels_give_the_packed_bits(isa, dtype):
    """Each element gets the same FMA sequence on the row-panel path as on packed panels:
    grad_w and grad_b from a row-major x (row panels) and from the same values column-major
    (packed), grad_x from a row-major W (row panels, <= MR rows) and a column-major one
    (packed), are bitwise equal (one row of x is both layouts: grad_x only)."""
    mr = fusedmlp.info()["cpu_blocking"][str(dtype).split(".")[1]]["packed"]["mr"]
    # 1 and 2 rows: grad_x streams B (MicroKernel::rows' row_stream, 1024 columns of C at
    # a time: 1500 takes two passes) and grad_w sweeps rows of C (K <= 2).
    for rows, k in [(1, 784), (2, 784), (3, 784), (mr, 784), (16, 784), (1, 1500), (2, 1500)]:
        x, w, b = make(rows, k, 70, dtype)
        y = fusedmlp.linear_relu(x, w, b)
        g = torch.randn_like(y)
        backward = torch.ops.fusedmlp.linear_relu_backward
        if rows > 1:
            _, gw, gb = backward(g, x.detach(), w.detach(), y.detach(), [False, True, True])
            _, gw_packed, gb_packed = backward(g, same_values_other_layout(x).detach(),
                                               w.detach(), y.detach(), [False, True, True])
            assert torch.equal(gw, gw_packed) and torch.equal(gb, gb_packed)
        if rows <= mr:
            gx, _, _ = backward(g, x.detach(), w.detach(), y.detach(), [True, False, False])
            gx_packed, _, _ = backward(g, x.detach(), same_values_other_layout(w).detach(),
                                       y.detach(), [True, False, False])
            assert torch.equal(gx, gx_packed)


def test_row_panels_same_bits_on_any_thread_count(isa):
    """A row-panel GEMM big enough for worker threads (grad_w at 16 x 2048 -> 512: 16 M
    multiply-adds) splits rows or columns of C, never K, and so does the backward sweep
    (grad_x and grad_w of 1 and 2 rows of 4096 -> 2048): bitwise the same result on 1 and
    2 threads."""
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            torch.manual_seed(0)
            out = []
            for rows, k, n in [(16, 2048, 512), (1, 4096, 2048), (2, 4096, 2048)]:
                x, w, b = make(rows, k, n, torch.float32)
                y = fusedmlp.linear_relu(x, w, b)
                out += torch.autograd.grad(y, (x, w, b), torch.randn_like(y))
            results.append(out)
    finally:
        torch.set_num_threads(before)
    for a, c in zip(*results):
        assert torch.equal(a, c)


# The backward sweep (gemm.cpp's backward_sweep, MicroKernel::sweep): with 1 or 2 rows and
# both grad_x and grad_w wanted, one pass over W computes both (and grad_b).

def backward_paths(op_args, mask):
    """The path counters that one backward call moved, and by how much."""
    before = path_counts()
    torch.ops.fusedmlp.linear_act_backward(*op_args, mask)
    after = path_counts()
    return {p: after[p] - before[p] for p in after if after[p] != before[p]}


def act_backward_args(rows, k, n, dtype, activation, slope=0.01):
    """linear_act_backward's arguments before output_mask, saved as ops.py saves it."""
    x, w, b = scaled_inputs(rows, k, n, dtype)
    x, w, b = x.detach(), w.detach(), b.detach()
    y, z = torch.ops.fusedmlp.linear_act_pre(x, w, b, activation, slope)
    saved = z if _saves_pre_activation(activation, slope) else y
    return [torch.randn_like(y), x, w, None if activation == "identity" else saved,
            activation, slope]


def test_backward_sweep_takes_one_and_two_rows(isa):
    """1 and 2 rows with grad_x and grad_w wanted take the sweep and no GEMM; 3 rows, a
    mask without grad_x or grad_w, a column-major W or x (B not row-major) take the
    GEMMs."""
    sweep = {"backward_sweeps": 1}
    for rows in (1, 2):
        args = act_backward_args(rows, 784, 128, torch.float32, "relu")
        assert backward_paths(args, [True, True, True]) == sweep
        assert backward_paths(args, [True, True, False]) == sweep
        assert "backward_sweeps" not in backward_paths(args, [True, False, True])
        assert "backward_sweeps" not in backward_paths(args, [False, True, True])
        w_cols = args[:2] + [same_values_other_layout(args[2])] + args[3:]
        assert "backward_sweeps" not in backward_paths(w_cols, [True, True, True])
    args = act_backward_args(2, 784, 128, torch.float32, "relu")
    x_cols = args[:1] + [same_values_other_layout(args[1])] + args[2:]
    assert "backward_sweeps" not in backward_paths(x_cols, [True, True, True])
    args = act_backward_args(3, 784, 128, torch.float32, "relu")
    assert "backward_sweeps" not in backward_paths(args, [True, True, True])


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_backward_sweep_gives_the_gemms_bits(isa, activation, dtype):
    """Each element gets the two GEMMs' FMA sequence: grad_x, grad_w and grad_b from the
    sweep are bitwise those of grad_x alone and grad_w with grad_b alone (each on its GEMM),
    for every activation (exp/erf/tanh derivatives computed first, the others as the sweep
    reads grad_y), a negative leaky slope (derivative from z), widths that end mid-vector,
    and 1031 / 2100 columns (more than one 1024-column stretch of grad_x in L1). One
    column of W is the exception for grad_x (close, not bitwise: see below)."""
    for rows, k, n in [(1, 1, 37), (2, 3, 5), (1, 17, 129), (2, 129, 10), (1, 1031, 19),
                       (2, 2100, 7)]:
        for slope in ((0.01, -0.2) if activation == "leaky_relu" else (0.01,)):
            args = act_backward_args(rows, k, n, dtype, activation, slope)
            assert backward_paths(args, [True, True, True]) == {"backward_sweeps": 1}
            gx, gw, gb = torch.ops.fusedmlp.linear_act_backward(*args, [True, True, True])
            gx_alone, _, _ = torch.ops.fusedmlp.linear_act_backward(*args, [True, False, False])
            _, gw_alone, gb_alone = torch.ops.fusedmlp.linear_act_backward(
                *args, [False, True, True])
            if k == 1:  # W of one column is also Wᵀ row-major: grad_x alone may take the
                # dot-product kernel (lane-wise partial sums), so only close
                assert_close_to(gx, gx_alone.double(), n)
            else:
                assert torch.equal(gx, gx_alone)
            assert torch.equal(gw, gw_alone)
            assert torch.equal(gb, gb_alone)


@pytest.mark.parametrize("rows", [1, 2])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_backward_sweep_nan_inf(isa, rows, dtype):
    """NaN/Inf in x, W, b and grad_y through the sweep: the special values of
    relu(F.linear(...))'s gradients (torch's threshold_backward lets NaN through)."""
    x, w, b = make(rows, 12, 10, dtype, requires_grad=False)
    x[0, 3] = float("nan")
    x[rows - 1, 0] = float("inf")
    w[4, 5] = float("-inf")
    b[7] = float("nan")
    x, w, b = (t.requires_grad_() for t in (x, w, b))
    y = fusedmlp.linear_relu(x, w, b)
    y_ref = torch.relu(torch.nn.functional.linear(x, w, b))
    grad_y = torch.randn_like(y)
    grad_y[0, 0] = float("nan")
    before = path_counts()["backward_sweeps"]
    grads = torch.autograd.grad(y, (x, w, b), grad_y)
    assert path_counts()["backward_sweeps"] == before + 1
    for g, g_ref in zip(grads, torch.autograd.grad(y_ref, (x, w, b), grad_y)):
        assert_same_special_values(g, g_ref)
