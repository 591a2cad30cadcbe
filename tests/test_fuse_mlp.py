"""fuse(model) running chains Linear -> act -> Linear -> ... -> Linear as one
fusedmlp::mlp op (mlp=True, the default): one op each way, the unfused model's outputs and
gradients (first and second order), the same model (class, state_dict, module paths),
what must not become a chain, and what a user does with the model afterwards (deepcopy,
pickle, compile, export, hooks, replaced modules)."""
import copy

import pytest
import torch
import torch.nn.functional as F
import torchvision
from timm.layers import Mlp
from torch import nn
from torch.func import functional_call

import fusedmlp
from fusedmlp import FusedLinear, FusedLinearReLU
from fusedmlp._fuse_chains import ChainedForward
from fusedmlp.train import ClassicNet
from helpers import (FlattenThenHead, OpLog, assert_same_function, assert_same_state_dict,
                     assert_same_structure)

fuse = fusedmlp.fuse

FP64 = dict(rtol=1e-12, atol=1e-12)


def ops_run(model, *inputs, backward=False):
    with OpLog() as log:
        out = model(*inputs)
        if backward:
            out.sum().backward()
    return log.names


class SeedNet(nn.Module):
    """The seed's network as its blog wrote it (F.relu; fusedmlp.train.ClassicNet has
    torch.relu)."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        return self.fc2(x)


def small_seed_net():
    """SeedNet's code at gradcheck's size."""
    net = SeedNet()
    net.fc1, net.fc2 = nn.Linear(12, 7), nn.Linear(7, 3)
    return net


# (build, input shape, expected chain, expected module types along it)
MODELS = {
    "seed_net": (SeedNet, (4, 1, 28, 28), ["fc1", "fc2"]),
    "classic_net": (ClassicNet, (4, 1, 28, 28), ["fc1", "fc2"]),
    "sequential": (lambda: nn.Sequential(nn.Linear(10, 9), nn.ReLU(), nn.Linear(9, 8),
                                         nn.GELU(), nn.Linear(8, 3)), (5, 10), ["0", "2", "4"]),
    "torchvision_mlp": (lambda: torchvision.ops.MLP(10, [9, 8, 3]), (5, 10), ["0", "3", "6"]),
    "timm_mlp": (lambda: Mlp(10, 9, 4), (2, 5, 10), ["fc1", "fc2"]),
}
SMALL_MODELS = {  # for gradcheck: the same code at small sizes
    "seed_net": (small_seed_net, (3, 1, 3, 4)),
    "sequential": (lambda: nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3),
                                         nn.GELU(), nn.Linear(3, 2)), (3, 4)),
    "torchvision_mlp": (lambda: torchvision.ops.MLP(4, [5, 3, 2]), (3, 4)),
    "timm_mlp": (lambda: Mlp(4, 5, 2), (2, 2, 4)),
}


@pytest.mark.parametrize("plain_linear", [False, True], ids=["last_linear", "plain_linear"])
@pytest.mark.parametrize("name", list(MODELS))
def test_chain_runs_as_one_op_with_the_same_values_and_gradients(name, plain_linear):
    build, shape, chain = MODELS[name]
    torch.manual_seed(0)
    model = build()
    fused = fuse(model, plain_linear=plain_linear)
    report = fused.fuse_report
    assert report.mlp_chains == [chain] and report.route == "in place"
    assert f"one fusedmlp.mlp op each (while their modules stay as they are): " \
           f"{' -> '.join(chain)}" in str(report)
    assert type(fused.__dict__["forward"]) is ChainedForward
    assert type(fused).forward is type(model).forward
    x = torch.randn(shape)
    assert ops_run(fused, x) == ["mlp"]  # no per-layer op for the chain
    assert ops_run(fused, x, backward=True) == ["mlp", "mlp_backward"]
    assert_same_structure(model, fused)
    assert_same_state_dict(model, fused)
    assert_same_function(model, fused, x)  # float32 rounding
    model64, fused64 = model.double(), fused.double()
    assert ops_run(fused64, x.double()) == ["mlp"]
    assert_same_function(model64, fused64, x.double(), **FP64)


@pytest.mark.parametrize("name", list(SMALL_MODELS))
def test_gradcheck_and_gradgradcheck_of_the_fused_model(name):
    """First and second derivatives of the fused model's forward as a function of its
    input and all its parameters, in float64, through the one op."""
    build, shape = SMALL_MODELS[name]
    torch.manual_seed(3)
    fused = fuse(build().double())
    assert len(fused.fuse_report.mlp_chains) == 1
    names = [n for n, _ in fused.named_parameters()]
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    params = [p.detach().clone().requires_grad_() for p in fused.parameters()]

    def fn(x, *params):
        return functional_call(fused, dict(zip(names, params)), (x,))

    assert ops_run(fn, x, *params) == ["mlp"]
    assert torch.autograd.gradcheck(fn, (x, *params))
    assert torch.autograd.gradgradcheck(fn, (x, *params))


def test_double_backward_equals_the_unfused_model():
    """A gradient penalty (create_graph=True, then backward again) gives the unfused
    model's parameter gradients in float64."""
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(6, 5), nn.GELU(), nn.Linear(5, 4), nn.Tanh(),
                          nn.Linear(4, 2)).double()
    fused = fuse(model)
    assert fused.fuse_report.mlp_chains == [["0", "2", "4"]]
    x = torch.randn(7, 6, dtype=torch.float64)
    results = []
    for m in (model, fused):
        xi = x.clone().requires_grad_()
        (grad_x,) = torch.autograd.grad(m(xi).square().sum(), xi, create_graph=True)
        penalty = grad_x.square().sum()
        results.append(torch.autograd.grad(penalty, list(m.parameters())))
    for expected, actual in zip(*results):
        torch.testing.assert_close(actual, expected, **FP64)


def test_opt_out_keeps_per_layer_fusing():
    model = SeedNet()
    fused = fuse(model, mlp=False)
    assert "forward" not in fused.__dict__ and fused.fuse_report.mlp_chains == []
    assert type(fused.fc1) is FusedLinearReLU and type(fused.fc2) is nn.Linear
    assert "fusedmlp.mlp" not in str(fused.fuse_report)
    assert "mlp" not in ops_run(fused, torch.randn(2, 1, 28, 28))


# What must not become a chain: each model still fuses per layer as before.

class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(8, 8), nn.Linear(8, 4)

    def forward(self, x):
        h = F.relu(self.fc1(x))
        return self.fc2(h + x) + h.sum()  # h read twice


class ReadsTheHiddenTwice(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(8, 6), nn.Linear(6, 4)

    def forward(self, x):
        h = F.relu(self.fc1(x))
        return self.fc2(h), h


class Casts(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(8, 6), nn.Linear(6, 4)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x)).float())


class CallsALinearTwice(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(8, 8), nn.Linear(8, 4)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(F.relu(self.fc1(x)))))


def hooked_sequential():
    model = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 4))
    model[2].register_forward_hook(lambda m, i, o: None)
    return model


@pytest.mark.parametrize("build,fused_layers", [
    (Residual, ["fc1"]),
    (ReadsTheHiddenTwice, ["fc1"]),
    (lambda: nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Dropout(0.5), nn.Linear(6, 4)),
     ["0"]),
    (Casts, ["fc1"]),
    (CallsALinearTwice, []),
    (hooked_sequential, ["0"]),
], ids=["residual", "hidden_read_twice", "dropout", "cast", "linear_called_twice", "hooks"])
def test_no_chain(build, fused_layers):
    torch.manual_seed(1)
    model = build()
    fused = fuse(model)
    report = fused.fuse_report
    assert report.mlp_chains == [] and "forward" not in fused.__dict__
    assert report.fused == fused_layers
    x = torch.randn(3, 8)
    assert "mlp" not in ops_run(fused, x)
    model.eval(), fused.eval()  # Dropout: the same function without its masks
    expected, actual = model(x), fused(x)
    for e, a in zip(expected if isinstance(expected, tuple) else (expected,),
                    actual if isinstance(actual, tuple) else (actual,)):
        torch.testing.assert_close(a, e)


def test_untraceable_model_gets_its_sequential_head_chained():
    """fx cannot trace the wrapper; its Sequential head is traced on its own."""

    model = FlattenThenHead()
    with pytest.warns(UserWarning, match="could not trace"):
        fused = fuse(model, plain_linear=True)
    assert fused.fuse_report.mlp_chains == [["head.0", "head.3"]]
    assert "forward" in fused.head.__dict__ and "forward" not in fused.__dict__
    x = torch.randn(3, 4, 4)
    assert ops_run(fused, x) == ["mlp"]
    assert_same_function(model, fused, x)


# What a user does with the model afterwards.

def test_deepcopy_runs_on_the_copys_modules():
    torch.manual_seed(0)
    fused = fuse(SeedNet())
    other = copy.deepcopy(fused)
    assert other.forward.module is other and other.fc1 is not fused.fc1
    with torch.no_grad():
        other.fc2.weight.mul_(2)  # the copy's own parameters
    x = torch.randn(2, 1, 28, 28)
    assert ops_run(other, x) == ["mlp"]
    expected = other.fc2(F.relu(other.fc1(x.flatten(1))))
    torch.testing.assert_close(other(x), expected)
    assert not torch.allclose(fused(x), expected)


def test_pickle_round_trip(tmp_path):
    torch.manual_seed(0)
    fused = fuse(torchvision.ops.MLP(10, [9, 3]))
    torch.save(fused, tmp_path / "model.pt")
    loaded = torch.load(tmp_path / "model.pt", weights_only=False)
    assert type(loaded) is torchvision.ops.MLP and loaded.forward.module is loaded
    assert loaded.fuse_report.mlp_chains == [["0", "3"]]
    x = torch.randn(4, 10)
    assert ops_run(loaded, x) == ["mlp"]
    assert_same_function(fused, loaded, x)
    assert_same_state_dict(fused, loaded)


def test_train_and_eval_keep_the_op():
    fused = fuse(Mlp(6, 5, 3))
    x = torch.randn(2, 6)
    for mode in (False, True):
        fused.train(mode)
        assert ops_run(fused, x) == ["mlp"]


def call_graph_ops(backend_graphs):
    return [[str(n.target) for n in gm.graph.nodes if n.op == "call_function"]
            for gm in backend_graphs]


def test_compile_fullgraph_one_op_equal_to_eager():
    torch._dynamo.reset()
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm

    torch.manual_seed(0)
    model = SeedNet()
    fused = fuse(model, plain_linear=True)
    compiled = torch.compile(fused, fullgraph=True, backend=backend)
    x = torch.randn(6, 1, 28, 28)
    assert_same_function(model, compiled, x)
    ops = call_graph_ops(graphs)
    assert ops and all(sum("fusedmlp.mlp" in t for t in g) == 1 for g in ops)
    assert not any("linear" in t for g in ops for t in g)
    torch._dynamo.reset()
    assert_same_function(model, torch.compile(fused, fullgraph=True, backend="aot_eager"), x)


@pytest.mark.parametrize("strict", [False, True], ids=["non_strict", "strict"])
def test_export_sees_the_op(strict):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 9), nn.ReLU(), nn.Linear(9, 8), nn.GELU(),
                          nn.Linear(8, 3))
    fused = fuse(model)
    x = torch.randn(5, 10)
    program = torch.export.export(fused, (x,), strict=strict)
    targets = [str(n.target) for n in program.graph.nodes if n.op == "call_function"]
    assert targets.count("fusedmlp.mlp.default") == 1
    assert not any("linear" in t for t in targets)
    torch.testing.assert_close(program.module()(x), model(x))
    assert type(fused.__dict__["forward"]) is ChainedForward  # export leaves it in place


def test_hooks_added_after_fuse_fire():
    torch.manual_seed(0)
    model = SeedNet()
    fused = fuse(model)
    x = torch.randn(2, 1, 28, 28)
    seen = []
    handle = fused.fc1.register_forward_hook(lambda m, i, o: seen.append(o))
    assert "mlp" not in ops_run(fused, x)
    assert len(seen) == 1
    torch.testing.assert_close(seen[0], F.relu(model.fc1(x.flatten(1))))
    torch.testing.assert_close(fused(x), model(x))
    handle.remove()
    assert ops_run(fused, x) == ["mlp"]
    handle = nn.modules.module.register_module_forward_hook(lambda m, i, o: seen.append(m))
    try:
        assert "mlp" not in ops_run(fused, x)
        assert fused.fc2 in seen
    finally:
        handle.remove()
    assert ops_run(fused, x) == ["mlp"]


def test_modules_replaced_or_appended_after_fuse_are_honoured():
    torch.manual_seed(0)
    fused = fuse(SeedNet())
    x = torch.randn(2, 1, 28, 28)
    fused.fc1 = nn.Linear(784, 128)  # a new layer: the class forward runs it
    assert "mlp" not in ops_run(fused, x)
    torch.testing.assert_close(fused(x), fused.fc2(F.relu(fused.fc1(x.flatten(1)))))

    seq = fuse(nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3)))
    seq.append(nn.Linear(3, 2))
    assert seq(torch.randn(2, 4)).shape == (2, 2)
    seq[1] = nn.Tanh()
    x = torch.randn(2, 4)
    torch.testing.assert_close(seq(x), nn.Sequential.forward(seq, x))


def test_dropout_given_p_after_fuse_is_honoured():
    torch.manual_seed(0)
    fused = fuse(Mlp(6, 5, 3))
    x = torch.randn(2, 6)
    fused.drop1.p = 0.5
    assert "mlp" not in ops_run(fused, x)
    fused.eval()
    torch.testing.assert_close(fused(x), fused.fc2(fused.fc1(x)))


class GeluCall(nn.Module):
    """F.gelu written in forward: fuse() takes the graph route (a GraphModule)."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(8, 6), nn.Linear(6, 4)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


def test_graph_route_runs_the_chain_and_keeps_it_through_deepcopy(tmp_path):
    """On the graph route the chain runs as one op too, also on a deep copy; a pickled
    one runs its layers one by one after loading (GraphModule's unpickling rebuilds it
    from its code and drops an instance forward): the same function."""
    torch.manual_seed(0)
    model = GeluCall()
    fused = fuse(model)
    assert fused.fuse_report.route == "graph"
    assert fused.fuse_report.mlp_chains == [["fc1", "fc2"]]
    x = torch.randn(3, 8)
    assert ops_run(fused, x) == ["mlp"]
    assert_same_function(model, fused, x)
    other = copy.deepcopy(fused)
    assert other.forward.module is other and ops_run(other, x) == ["mlp"]
    torch.save(fused, tmp_path / "model.pt")
    loaded = torch.load(tmp_path / "model.pt", weights_only=False)
    assert "mlp" not in ops_run(loaded, x)
    assert_same_function(model, loaded, x)


def test_parametrized_layer_after_fuse_runs_per_layer():
    """torch.nn.utils.parametrize gives the layer a new class (its weight computed)."""
    torch.manual_seed(0)
    fused = fuse(SeedNet())

    class Doubled(nn.Module):
        def forward(self, weight):
            return 2 * weight

    torch.nn.utils.parametrize.register_parametrization(fused.fc2, "weight", Doubled())
    x = torch.randn(2, 1, 28, 28)
    assert "mlp" not in ops_run(fused, x)
    expected = F.linear(F.relu(fused.fc1(x.flatten(1))), 2 * fused.fc2.parametrizations.weight
                        .original, fused.fc2.bias)
    torch.testing.assert_close(fused(x), expected)


class Block(nn.Module):
    """A transformer-style residual block around timm's Mlp."""

    def __init__(self):
        super().__init__()
        self.norm = nn.LayerNorm(8)
        self.mlp = Mlp(8, 16, 8)

    def forward(self, x):
        return x + self.mlp(self.norm(x))


def test_chains_inside_blocks_compile_and_export():
    """The chain's owner is each block's Mlp (its forward is an instance attribute there):
    compile(fullgraph) and export see one op per block."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = nn.Sequential(Block(), Block())
    fused = fuse(model)
    assert fused.fuse_report.mlp_chains == [["0.mlp.fc1", "0.mlp.fc2"],
                                            ["1.mlp.fc1", "1.mlp.fc2"]]
    assert "forward" in fused[0].mlp.__dict__ and "forward" not in fused.__dict__
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm

    x = torch.randn(3, 4, 8)
    assert ops_run(fused, x) == ["mlp", "mlp"]
    assert_same_function(model, torch.compile(fused, fullgraph=True, backend=backend), x)
    assert [sum("fusedmlp.mlp" in t for t in g) for g in call_graph_ops(graphs)] == [2]
    for strict in (False, True):
        program = torch.export.export(fused, (x,), strict=strict)
        targets = [str(n.target) for n in program.graph.nodes if n.op == "call_function"]
        assert targets.count("fusedmlp.mlp.default") == 2
        torch.testing.assert_close(program.module()(x), model(x))


class FlattenThenNested(nn.Module):
    """fx cannot trace it; its head nests a Sequential whose chain the outer one covers."""

    def __init__(self):
        super().__init__()
        self.head = nn.Sequential(nn.Linear(6, 5), nn.ReLU(),
                                  nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3)))

    def forward(self, x):
        return self.head(x.flatten(1) if x.dim() > 2 else x)


def test_untraceable_model_with_nested_sequentials_reports_each_chain_once():
    torch.manual_seed(0)
    model = FlattenThenNested()
    with pytest.warns(UserWarning, match="could not trace"):
        fused = fuse(model)
    assert fused.fuse_report.mlp_chains == [["head.0", "head.2.0", "head.2.2"]]
    assert "forward" not in fused.head[2].__dict__
    x = torch.randn(3, 2, 3)
    assert ops_run(fused, x) == ["mlp"]
    assert_same_function(model, fused, x)
    fused.head[1] = nn.Tanh()  # the outer chain is broken: the inner layers run one by one
    torch.testing.assert_close(fused(x), fused.head[2](torch.tanh(fused.head[0](x.flatten(1)))))


@pytest.mark.parametrize("build,chains,shape", [
    (SeedNet, [["fc1", "fc2"]], (2, 1, 28, 28)),
    (lambda: nn.Sequential(Block(), Block()), [["0.mlp.fc1", "0.mlp.fc2"],
                                               ["1.mlp.fc1", "1.mlp.fc2"]], (2, 3, 8)),
], ids=["seed_net", "blocks"])
def test_fusing_a_fused_model_again_finds_the_same_chains(build, chains, shape):
    torch.manual_seed(0)
    model = build()
    once = fuse(model)
    fused = fuse(once)
    assert fused.fuse_report.mlp_chains == chains == once.fuse_report.mlp_chains
    x = torch.randn(shape)
    assert ops_run(fused, x) == ["mlp"] * len(chains)
    torch.testing.assert_close(fused(input=x) if isinstance(model, nn.Sequential)
                               else fused(x=x), model(x))  # by keyword too


def test_default_takes_every_chain_and_mlp_min_layers_leaves_shorter_ones():
    """fuse()'s default mlp_min_layers=2 runs the seed's 2-layer Net as one op; a larger
    mlp_min_layers leaves shorter chains layer by layer, and reports them."""
    seed = fusedmlp.fuse(ClassicNet())
    assert seed.fuse_report.mlp_chains == [["fc1", "fc2"]]
    assert seed.fuse_report.mlp_short == []
    x = torch.randn(3, 1, 28, 28)
    assert ops_run(seed, x) == ["mlp"]
    left = fusedmlp.fuse(ClassicNet(), mlp_min_layers=3)
    report = left.fuse_report
    assert report.mlp_chains == [] and report.mlp_short == [["fc1", "fc2"]]
    assert "shorter than mlp_min_layers" in str(report) and "fc1 -> fc2" in str(report)
    assert "forward" not in left.__dict__
    assert "mlp" not in ops_run(left, x)
    torch.manual_seed(0)
    three = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 4), nn.ReLU(),
                          nn.Linear(4, 3))
    fused = fusedmlp.fuse(three, mlp_min_layers=3)
    assert fused.fuse_report.mlp_chains == [["0", "2", "4"]]
    assert fused.fuse_report.mlp_short == []
    assert ops_run(fused, torch.randn(2, 6)) == ["mlp"]
    assert_same_function(three, fused, torch.randn(2, 6))
    assert fusedmlp.fuse(three, mlp_min_layers=4).fuse_report.mlp_short == [["0", "2", "4"]]


@pytest.mark.parametrize("bad", [1, 0, 2.0, True, "3"])
def test_mlp_min_layers_must_be_an_int_of_at_least_two(bad):
    with pytest.raises(ValueError, match="mlp_min_layers must be an int >= 2"):
        fusedmlp.fuse(ClassicNet(), mlp_min_layers=bad)
