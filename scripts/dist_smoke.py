"""The smoke test `make dist-check` runs in a fresh venv holding only the wheel: fusedmlp
imports from that venv (not a source tree), ships its license, reports its build, and its
forward and backward match eager PyTorch. Usage: python dist_smoke.py VENV_DIR"""
import importlib.metadata
import pathlib
import sys

import torch
import torch.nn.functional as F

import fusedmlp
from fusedmlp import _C

venv = pathlib.Path(sys.argv[1]).resolve()
for module in (fusedmlp, _C):
    where = pathlib.Path(module.__file__).resolve()
    assert venv in where.parents, f"{module.__name__} was imported from {where}, not from {venv}"

dist = importlib.metadata.distribution("fusedmlp")
assert any(f.name == "LICENSE" for f in dist.files or []), "the wheel lacks LICENSE"
info = fusedmlp.info()
print(f"fusedmlp {dist.version} from {pathlib.Path(_C.__file__).name}, torch {torch.__version__}")
print("info():", info)
assert info["cpu_isa"] == info["best_cpu_isa"]

torch.manual_seed(0)
x = torch.randn(7, 19, dtype=torch.float64, requires_grad=True)
w = torch.randn(5, 19, dtype=torch.float64, requires_grad=True)
b = torch.randn(5, dtype=torch.float64, requires_grad=True)
y = fusedmlp.linear_relu(x, w, b)
y_ref = F.relu(F.linear(x, w, b))
torch.testing.assert_close(y, y_ref)
grad_y = torch.randn_like(y)
grads = torch.autograd.grad(y, (x, w, b), grad_y)
grads_ref = torch.autograd.grad(y_ref, (x, w, b), grad_y)
for name, g, g_ref in zip(("x", "weight", "bias"), grads, grads_ref):
    torch.testing.assert_close(g, g_ref, msg=lambda m, name=name: f"grad {name}: {m}")

mlp = fusedmlp.FusedMLP(19, [11], 3)
out = mlp(x.detach().float())
out.sum().backward()
assert out.shape == (7, 3) and all(p.grad is not None for p in mlp.parameters())
print("dist-check smoke test passed: forward, backward (x, weight, bias), FusedMLP, info()")
