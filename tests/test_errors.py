"""Bad input gets a clear error naming the argument and what was expected."""
import pytest
import torch

import fusedmlp

f32, f64 = torch.float32, torch.float64


def t(*shape, dtype=f32, device="cpu"):
    return torch.ones(*shape, dtype=dtype, device=device)


BAD_CALLS = {
    "weight_dtype_mismatch": ((t(2, 3), t(4, 3, dtype=f64), None),
                              r"expected weight to have the dtype of x \(Float\), got Double"),
    "bias_dtype_mismatch": ((t(2, 3), t(4, 3), t(4, dtype=f64)),
                            r"expected bias to have the dtype of x \(Float\), got Double"),
    "integer_x": ((t(2, 3, dtype=torch.int64), t(4, 3, dtype=torch.int64), None),
                  r"expected x to be a floating-point tensor .*got Long"),
    "bool_x": ((t(2, 3, dtype=torch.bool), t(4, 3, dtype=torch.bool), None),
               r"floating-point tensor .*got Bool"),
    "complex_x": ((t(2, 3, dtype=torch.complex64), t(4, 3, dtype=torch.complex64), None),
                  r"floating-point tensor .*got ComplexFloat"),
    "half_on_cpu": ((t(2, 3, dtype=torch.float16), t(4, 3, dtype=torch.float16), None),
                    r"CPU kernels support float32 and float64, got x of dtype Half"),
    "wrong_in_features": ((t(2, 5), t(4, 3), None),
                          r"expected x of shape \(\.\.\., 3\) to match weight of shape \[4, 3\]"
                          r" \(in_features = 3\), got x of shape \[2, 5\]"),
    "weight_1d": ((t(2, 3), t(3), None),
                  r"expected weight of shape \(out_features, in_features\), got a 1-D tensor"),
    "weight_3d": ((t(2, 3), t(1, 4, 3), None), r"weight of shape .* got a 3-D tensor"),
    "weight_0d": ((t(2, 3), torch.tensor(1.0), None), r"weight of shape .* got a 0-D tensor"),
    "x_0d": ((torch.tensor(1.0), t(4, 1), None), r"expected x of shape \(\.\.\., in_features\)"),
    "bias_wrong_length": ((t(2, 3), t(4, 3), t(5)),
                          r"expected bias of shape \(4,\) = \(out_features,\) or None, got shape \[5\]"),
    "bias_2d": ((t(2, 3), t(4, 3), t(1, 4)), r"expected bias of shape \(4,\)"),
    "weight_other_device": ((t(2, 3), t(4, 3, device="meta"), None),
                            r"expected weight on the same device as x \(cpu\), got meta"),
    "bias_other_device": ((t(2, 3), t(4, 3), t(4, device="meta")),
                          r"expected bias on the same device as x \(cpu\), got meta"),
}


@pytest.mark.parametrize("case", list(BAD_CALLS))
@pytest.mark.parametrize("entry", ["linear_relu", "LinearReLUFunction", "no_grad", "linear"])
def test_bad_input_raises_clear_error(case, entry):
    (x, w, b), pattern = BAD_CALLS[case]
    with pytest.raises(RuntimeError, match=pattern) as info:
        if entry == "linear":
            fusedmlp.linear(x, w, b)
        elif entry == "linear_relu":
            fusedmlp.linear_relu(x, w, b)
        elif entry == "LinearReLUFunction":
            fusedmlp.LinearReLUFunction.apply(x, w, b)
        else:
            with torch.no_grad():
                fusedmlp.linear_relu(x, w, b)
    assert ("fusedmlp.linear" if entry == "linear" else "fusedmlp.linear_relu") in str(info.value)


def test_module_wrong_input_size():
    layer = fusedmlp.FusedLinearReLU(784, 128)
    with pytest.raises(RuntimeError, match=r"in_features = 784\), got x of shape \[64, 28, 28\]"):
        layer(torch.randn(64, 28, 28))


def test_backward_op_checks_its_arguments():
    x, w = t(2, 3), t(4, 3)
    y = fusedmlp.linear_relu(x, w)
    op = torch.ops.fusedmlp.linear_relu_backward
    with pytest.raises(RuntimeError, match=r"expected grad_y of shape x.shape\[:-1\] \+ \(out_features,\)"):
        op(t(2, 5), x, w, y, [True, True, False])
    with pytest.raises(RuntimeError, match=r"expected y of shape"):
        op(torch.ones_like(y), x, w, t(3, 4), [True, True, False])
    with pytest.raises(RuntimeError, match=r"expected grad_y to have the dtype of x"):
        op(torch.ones_like(y, dtype=f64), x, w, y, [True, True, False])


def test_requires_grad_on_integer_tensor_is_refused_by_torch():
    # torch itself refuses this before our op is reached; nothing to crash on.
    with pytest.raises(RuntimeError, match="floating point"):
        t(2, 3, dtype=torch.int64).requires_grad_()
