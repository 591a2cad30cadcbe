"""FusedMLP and FusedLinear: equivalence with nn.Sequential / nn.Linear, conversions,
state_dict, save/load, torch.compile and optimizers."""
import copy

import pytest
import torch
from torch import nn

import fusedmlp
from fusedmlp import FusedLinear, FusedLinearReLU, FusedMLP
from helpers import same_init_as_nn_linear


def plain_mlp(sizes, bias=True, dtype=None):
    """nn.Sequential(Linear, ReLU, ..., Linear) over ``sizes`` = [in, *hidden, out]."""
    modules = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        modules += [nn.Linear(n_in, n_out, bias=bias, dtype=dtype), nn.ReLU()]
    return nn.Sequential(*modules[:-1])


def same_objects(a, b):
    a, b = list(a), list(b)
    return len(a) == len(b) and all(x is y for x, y in zip(a, b))


def pairs(a, b):
    a, b = list(a), list(b)
    assert len(a) == len(b)
    return zip(a, b)


def assert_same_training_step(model, reference, x):
    """Same outputs and parameter gradients (parameters matched in order)."""
    out, out_ref = model(x), reference(x)
    torch.testing.assert_close(out, out_ref)
    grads = torch.autograd.grad(out.square().sum(), list(model.parameters()))
    grads_ref = torch.autograd.grad(out_ref.square().sum(), list(reference.parameters()))
    for g, g_ref in pairs(grads, grads_ref):
        torch.testing.assert_close(g, g_ref)


@pytest.mark.parametrize("hidden", [[], [128], [64, 32, 16]])
@pytest.mark.parametrize("bias", [True, False])
def test_same_init_and_function_as_the_plain_sequential(hidden, bias):
    sizes = [50, *hidden, 10]
    torch.manual_seed(3)
    mlp = FusedMLP(50, hidden, 10, bias=bias)
    torch.manual_seed(3)
    plain = plain_mlp(sizes, bias=bias)
    assert [type(m) for m in mlp.layers] == [FusedLinearReLU] * len(hidden) + [FusedLinear]
    for p, q in pairs(mlp.parameters(), plain.parameters()):
        assert torch.equal(p, q)  # the same RNG draws, in the same order
    assert_same_training_step(mlp, plain, torch.randn(7, 50))


def test_attributes_and_repr():
    mlp = FusedMLP(784, (128, 64), 10)
    assert (mlp.in_features, mlp.hidden_features, mlp.out_features) == (784, [128, 64], 10)
    assert repr(mlp).startswith("FusedMLP(\n  in_features=784, hidden_features=[128, 64], out_features=10\n")
    assert "(3): Identity()\n  (4): FusedLinear(in_features=64, out_features=10, bias=True)" in repr(mlp)


def test_device_and_dtype():
    mlp = FusedMLP(6, [5], 4, dtype=torch.float64)
    assert all(p.dtype == torch.float64 for p in mlp.parameters())
    assert mlp(torch.randn(3, 6, dtype=torch.float64)).dtype == torch.float64
    assert all(p.is_meta for p in FusedMLP(6, [5], 4, device="meta").parameters())


def test_to_sequential_shares_parameters_and_computes_the_same():
    mlp = FusedMLP(20, [16, 8], 3).eval()
    seq = mlp.to_sequential()
    assert [type(m) for m in seq] == [nn.Linear, nn.ReLU, nn.Linear, nn.ReLU, nn.Linear]
    assert same_objects(seq.parameters(), mlp.parameters())
    assert not seq.training
    assert_same_training_step(seq, mlp, torch.randn(4, 20))


def test_from_sequential_shares_parameters_and_computes_the_same():
    seq = plain_mlp([20, 16, 8, 3])
    seq[2].bias = None  # layers may differ in having a bias
    mlp = FusedMLP.from_sequential(seq)
    assert (mlp.in_features, mlp.hidden_features, mlp.out_features) == (20, [16, 8], 3)
    assert same_objects(mlp.parameters(), seq.parameters())
    assert mlp.layers[1].bias is None
    assert_same_training_step(mlp, seq, torch.randn(4, 20))
    # and back: the same Parameter objects all the way round
    assert same_objects(mlp.to_sequential().parameters(), seq.parameters())


def test_from_sequential_draws_no_random_numbers():
    seq = plain_mlp([20, 16, 3])
    state = torch.get_rng_state()
    FusedMLP.from_sequential(seq)
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("seq,error,match", [
    (nn.Linear(3, 2), TypeError, "seq must be an nn.Sequential"),
    (nn.Sequential(nn.Linear(3, 2), nn.ReLU()), ValueError, "an odd number of modules"),
    (nn.Sequential(nn.Linear(3, 2), nn.Dropout(), nn.Linear(2, 1)), ValueError,
     r"seq\[1\] must be an activation module"),
    (nn.Sequential(nn.Linear(3, 2), nn.Tanh(), nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1)),
     ValueError, "every hidden activation must be the same"),
    (nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.ReLU()), ValueError, r"seq\[2\] must be an nn.Linear"),
    (nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(4, 1)), ValueError,
     r"seq\[0\] has out_features=2 but seq\[2\] has in_features=4"),
])
def test_from_sequential_rejects_other_models(seq, error, match):
    with pytest.raises(error, match=match):
        FusedMLP.from_sequential(seq)


@pytest.mark.parametrize("args,error,match", [
    ((784, 128, 10), TypeError, "hidden_features must be a list of ints"),
    ((0, [128], 10), ValueError, "in_features must be a positive int, got 0"),
    ((784, [128, -1], 10), ValueError, r"hidden_features\[1\] must be a positive int, got -1"),
    ((784, [128.0], 10), ValueError, r"hidden_features\[0\] must be a positive int"),
    ((784, [128], True), ValueError, "out_features must be a positive int, got True"),
])
def test_constructor_rejects_bad_sizes(args, error, match):
    with pytest.raises(error, match=match):
        FusedMLP(*args)


def test_state_dict_round_trip():
    mlp = FusedMLP(12, [10], 5)
    other = FusedMLP(12, [10], 5)
    other.load_state_dict(mlp.state_dict(), strict=True)
    x = torch.randn(3, 12)
    torch.testing.assert_close(other(x), mlp(x))
    # through the plain model's state_dict, whose keys are 0.*, 2.*
    plain = plain_mlp([12, 10, 5])
    plain.load_state_dict(mlp.to_sequential().state_dict(), strict=True)
    torch.testing.assert_close(plain(x), mlp(x))


def test_state_dict_is_the_plain_sequentials_both_ways():
    """FusedMLP has nn.Sequential(Linear, ReLU, ..., Linear)'s layout (nn.Identity where the
    ReLUs were), so checkpoints of either load strictly into the other."""
    mlp = FusedMLP(12, [10, 7], 5)
    plain = plain_mlp([12, 10, 7, 5])
    assert isinstance(mlp, nn.Sequential) and len(mlp) == len(plain) == 5
    assert list(mlp.state_dict()) == list(plain.state_dict()) == [
        f"{i}.{name}" for i in (0, 2, 4) for name in ("weight", "bias")]
    assert [type(m) for m in mlp] == [FusedLinearReLU, nn.Identity] * 2 + [FusedLinear]
    x = torch.randn(3, 12)
    mlp.load_state_dict(plain.state_dict(), strict=True)
    torch.testing.assert_close(mlp(x), plain(x))
    other = plain_mlp([12, 10, 7, 5])
    other.load_state_dict(FusedMLP(12, [10, 7], 5).state_dict(), strict=True)
    mlp.load_state_dict(other.state_dict(), strict=True)
    torch.testing.assert_close(mlp(x), other(x))


def test_loads_checkpoints_of_the_earlier_layers_layout():
    mlp = FusedMLP(12, [10], 5)
    earlier = {f"layers.{i}.{name}": mlp.state_dict()[f"{2 * i}.{name}"]
               for i in (0, 1) for name in ("weight", "bias")}
    fresh = FusedMLP(12, [10], 5)
    fresh.load_state_dict(earlier, strict=True)
    x = torch.randn(3, 12)
    torch.testing.assert_close(fresh(x), mlp(x))
    wrapper = nn.ModuleDict({"mlp": FusedMLP(12, [10], 5)})  # under a prefix too
    wrapper.load_state_dict({f"mlp.{key}": value for key, value in earlier.items()})
    torch.testing.assert_close(wrapper["mlp"](x), mlp(x))


def test_slice_is_a_plain_sequential_over_the_same_layers():
    mlp = FusedMLP(12, [10], 5)
    first = mlp[:2]
    assert type(first) is nn.Sequential and first[0] is mlp[0]
    x = torch.randn(3, 12)
    torch.testing.assert_close(mlp[2](first(x)), mlp(x))


def test_save_and_load(tmp_path):
    mlp = FusedMLP(12, [10, 7], 5)
    x = torch.randn(3, 12)
    torch.save(mlp, tmp_path / "mlp.pt")
    loaded = torch.load(tmp_path / "mlp.pt", weights_only=False)
    assert type(loaded) is FusedMLP and loaded.hidden_features == [10, 7]
    torch.testing.assert_close(loaded(x), mlp(x))
    torch.save(mlp.state_dict(), tmp_path / "state.pt")
    fresh = FusedMLP(12, [10, 7], 5)
    fresh.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    torch.testing.assert_close(fresh(x), mlp(x))
    torch.testing.assert_close(copy.deepcopy(mlp)(x), mlp(x))


def test_compile_fullgraph_matches_eager():
    torch._dynamo.reset()
    mlp = FusedMLP(32, [24, 16], 4)
    compiled = torch.compile(mlp, fullgraph=True, backend="aot_eager")
    for batch in (8, 3):
        x = torch.randn(batch, 32)
        assert_same_training_step(compiled, mlp, x)


def _step(optimizer, model, x, target):
    def closure():  # LBFGS calls it several times; the others once
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), target)
        loss.backward()
        return loss
    return optimizer.step(closure)


@pytest.mark.parametrize("make_optimizer", [
    lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4),
    lambda p: torch.optim.Adam(p, lr=1e-3),
    lambda p: torch.optim.AdamW(p, lr=1e-3, amsgrad=True),
    lambda p: torch.optim.RMSprop(p, lr=1e-3),
    lambda p: torch.optim.Adagrad(p, lr=1e-2),
    lambda p: torch.optim.LBFGS(p, lr=0.5, max_iter=4),
], ids=["SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "LBFGS"])
def test_optimizers_follow_the_plain_model(make_optimizer, request):
    # LBFGS runs 4 inner iterations per step: the rounding differences between our
    # kernels and MKL's compound over 20 updates, so it gets a 10x wider tolerance.
    atol = 1e-5 if "LBFGS" in request.node.name else 1e-6
    mlp = FusedMLP(20, [16], 4)
    plain = copy.deepcopy(mlp.to_sequential())  # the same start, its own parameters
    optimizers = [make_optimizer(mlp.parameters()), make_optimizer(plain.parameters())]
    for _ in range(5):
        x, target = torch.randn(8, 20), torch.randint(0, 4, (8,))
        loss, loss_plain = (_step(optimizer, model, x, target)
                            for optimizer, model in zip(optimizers, (mlp, plain)))
        assert loss.item() == pytest.approx(loss_plain.item(), rel=1e-5)
    for p, q in pairs(mlp.parameters(), plain.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=atol)


@pytest.mark.parametrize("bias", [True, False])
def test_fused_linear_is_a_drop_in_for_nn_linear(bias):
    fused, linear = same_init_as_nn_linear(FusedLinear, 9, 4, bias, seed=5)
    assert repr(fused) == f"FusedLinear(in_features=9, out_features=4, bias={bias})"
    shared = FusedLinear.from_linear(linear)
    assert shared.weight is linear.weight and shared.bias is linear.bias
    back = shared.to_linear()
    assert type(back) is nn.Linear and back.weight is linear.weight and back.bias is linear.bias
    x = torch.randn(2, 3, 9)
    torch.testing.assert_close(fused(x), linear(x))  # no ReLU: negative outputs stay
    assert (fused(x) < 0).any()


def test_exported_names():
    assert fusedmlp.FusedMLP is FusedMLP and fusedmlp.FusedLinear is FusedLinear
    assert callable(fusedmlp.fuse) and fusedmlp.FuseReport is not None
