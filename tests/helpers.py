"""Shared test helpers: the float64 reference and dtype tolerances."""
import torch
import torch.nn.functional as F


def reference(x, weight, bias, grad_y=None, relu=True):
    """relu(linear) (or plain linear) and its grads (x, weight, bias) in float64, eager."""
    xd = x.detach().double().requires_grad_()
    wd = weight.detach().double().requires_grad_()
    bd = bias.detach().double().requires_grad_() if bias is not None else None
    y = F.linear(xd, wd, bd)
    if relu:
        y = F.relu(y)
    if grad_y is None:
        return y, None
    inputs = (xd, wd) + ((bd,) if bd is not None else ())
    grads = torch.autograd.grad(y, inputs, grad_y.double(), allow_unused=True)
    return y, grads


def tolerances(dtype, k):
    """Bounds for sums of k products of O(1) values against a float64 reference: the
    rounding error of a length-k sum of partial sums up to sqrt(k) grows like eps * k."""
    eps = torch.finfo(dtype).eps
    return dict(rtol=64 * eps, atol=4 * eps * max(k, 4))


def assert_close_to(actual, expected, k):
    torch.testing.assert_close(actual, expected.to(actual.dtype), **tolerances(actual.dtype, k))
