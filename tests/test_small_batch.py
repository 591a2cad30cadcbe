"""Small batches (1-17 rows) on every ISA: the tiles with fewer rows than the micro-kernel's
MR run a kernel of exactly that many rows. Values and gradients against the float64
reference, and each row's output bitwise the same as in a large batch."""
import pytest
import torch

import fusedmlp
from helpers import check_against_reference, make

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
