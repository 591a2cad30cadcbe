"""fusedmlp.fuse: which Linear -> ReLU pairs it replaces, and that the fused model computes
the same outputs and gradients as the original."""
import copy
import logging

import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn

import fusedmlp
from fusedmlp import FusedLinear, FusedLinearReLU
from helpers import assert_same_function, fused_activations, fused_layer_names, linear_names


def nested_sequential(dtype=torch.float32):
    return nn.Sequential(
        nn.Linear(12, 16), nn.ReLU(),
        nn.Sequential(nn.Linear(16, 16), nn.ReLU(inplace=True),
                      nn.Sequential(nn.Linear(16, 8), nn.ReLU()), nn.Dropout(0.0)),
        nn.Linear(8, 3),
    ).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_nested_sequential_fused_in_place_of_its_slots(dtype):
    model = nested_sequential(dtype)
    before = copy.deepcopy(model.state_dict())
    fused = fusedmlp.fuse(model)

    assert type(fused) is nn.Sequential  # no new forward needed: the class is kept
    assert fused_layer_names(fused) == ["0", "2.0", "2.2.0"]
    assert linear_names(fused) == ["3"]
    assert [type(m) for m in (fused[1], fused[2][1], fused[2][2][1])] == [nn.Identity] * 3
    assert fused.fuse_report.fused == ["0", "2.0", "2.2.0"] and fused.fuse_report.traced
    assert list(fused.state_dict()) == list(before)  # parameter names do not move
    assert_same_function(model, fused, torch.randn(5, 12, dtype=dtype))

    # inplace=False: the input model is untouched and shares nothing with the result
    assert fused_layer_names(model) == [] and type(model[1]) is nn.ReLU
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])
    assert not {id(p) for p in model.parameters()} & {id(p) for p in fused.parameters()}


def test_inplace_rewrites_the_model_itself_and_keeps_its_parameters():
    model = nested_sequential()
    params = list(model.parameters())
    fused = fusedmlp.fuse(model, inplace=True)
    assert fused is model
    assert fused_layer_names(model) == ["0", "2.0", "2.2.0"]
    assert all(p is q for p, q in zip(fused.parameters(), params))  # optimizers keep working


class ClassicNet(nn.Module):
    """The classic MNIST MLP, with the ReLU written in the different ways fuse() handles."""

    def __init__(self, relu_style="torch.relu"):
        super().__init__()
        self.fc1 = nn.Linear(784, 128)
        self.fc2 = nn.Linear(128, 10)
        self.relu_style = relu_style
        if relu_style == "nn.ReLU":
            self.act = nn.ReLU()

    def forward(self, x):
        x = torch.flatten(x, 1)
        h = self.fc1(x)
        if self.relu_style == "torch.relu":
            x = torch.relu(h)
        elif self.relu_style == "F.relu":
            x = F.relu(h)
        elif self.relu_style == "F.relu(inplace=True)":
            x = F.relu(h, inplace=True)
        elif self.relu_style == "x.relu()":
            x = h.relu()
        elif self.relu_style == "x.relu_()":
            x = h.relu_()
        elif self.relu_style == "torch.relu_":
            x = torch.relu_(h)
        elif self.relu_style == "nn.ReLU":
            x = self.act(h)
        return self.fc2(x)


@pytest.mark.parametrize("mlp", [False, True], ids=["per_layer", "mlp_op"])
@pytest.mark.parametrize("relu_style", ["torch.relu", "F.relu", "x.relu()"])
def test_relu_call_in_forward_stays_and_the_model_keeps_its_class(relu_style, mlp):
    """fc1 becomes FusedLinearReLU in place; forward's own ReLU call then runs on values
    that are already >= 0, which changes neither outputs nor gradients. With mlp=True the
    call is part of the fc1 -> fc2 chain's op (tests/test_fuse_mlp.py)."""
    model = ClassicNet(relu_style)
    fused = fusedmlp.fuse(model, mlp=mlp, mlp_min_layers=2)
    assert type(fused) is ClassicNet and fused.relu_style == relu_style
    assert fused_layer_names(fused) == ["fc1"] and linear_names(fused) == ["fc2"]
    report = fused.fuse_report
    assert (report.fused, report.skipped, report.route) == (["fc1"], {}, "in place")
    assert report.activation_kept == ["fc1"]
    assert report.mlp_chains == ([["fc1", "fc2"]] if mlp else [])
    kept_line = "ReLU call still runs in forward (idempotent, one extra pass) after: fc1"
    assert (kept_line in str(report)) == (not mlp)
    assert list(fused.state_dict()) == list(model.state_dict())
    assert_same_function(model, fused, torch.randn(6, 1, 28, 28))
    assert type(model.fc1) is nn.Linear  # the original still runs nn.Linear


def test_relu_module_called_once_in_forward_becomes_identity():
    model = ClassicNet("nn.ReLU")
    fused = fusedmlp.fuse(model)
    assert type(fused) is ClassicNet and fused_layer_names(fused) == ["fc1"]
    assert type(fused.act) is nn.Identity  # its path stays; no second ReLU pass
    assert fused.fuse_report.route == "in place" and fused.fuse_report.activation_kept == []
    assert_same_function(model, fused, torch.randn(6, 1, 28, 28))


@pytest.mark.parametrize("relu_style", ["F.relu(inplace=True)", "x.relu_()", "torch.relu_"])
def test_in_place_relu_call_is_removed_from_a_rewritten_graph(relu_style):
    """An in-place ReLU would modify the fused layer's output, which its backward keeps:
    this case alone takes the GraphModule route."""
    model = ClassicNet(relu_style)
    fused = fusedmlp.fuse(model)
    assert isinstance(fused, fx.GraphModule) and fused.fuse_report.route == "graph"
    assert fused_layer_names(fused) == ["fc1"] and linear_names(fused) == ["fc2"]
    assert fused.fuse_report.fused == ["fc1"] and fused.fuse_report.skipped == {}
    assert "relu" not in fused.code  # the ReLU call is gone from the graph
    assert fused.relu_style == relu_style  # plain attributes are carried over
    assert list(fused.state_dict()) == list(model.state_dict())
    assert_same_function(model, fused, torch.randn(6, 1, 28, 28))


class SharedReLUModule(nn.Module):
    """One ReLU module after two Linear layers: it cannot become nn.Identity, and if it is
    in-place it cannot run on a fused output either."""

    def __init__(self, inplace):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(8, 16), nn.Linear(16, 4)
        self.relu = nn.ReLU(inplace=inplace)

    def forward(self, x):
        return self.relu(self.fc2(self.relu(self.fc1(x))))


@pytest.mark.parametrize("inplace,route", [(False, "in place"), (True, "graph")])
def test_relu_module_called_twice(inplace, route):
    model = SharedReLUModule(inplace)
    fused = fusedmlp.fuse(model)
    assert fused.fuse_report.fused == ["fc1", "fc2"] and fused.fuse_report.route == route
    assert isinstance(fused, fx.GraphModule) == inplace
    assert type(fused.relu) is nn.ReLU  # registered where it was, whichever route
    assert fused.fuse_report.activation_kept == ([] if inplace else ["fc1", "fc2"])
    assert_same_function(model, fused, torch.randn(5, 8))


def test_fuse_report_is_logged(caplog):
    with caplog.at_level(logging.INFO, logger="fusedmlp"):
        fusedmlp.fuse(ClassicNet())
    assert "fused 1 Linear->activation pair(s): fc1 (relu)" in caplog.text


class SharedLinear(nn.Module):
    """``fc`` runs twice, each time followed by a ReLU: fusing it would change both."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        h = torch.relu(self.fc(x))
        h = self.fc(h) + x
        return torch.relu(self.head(h))


class SharedInSequential(nn.Module):
    def __init__(self):
        super().__init__()
        shared = nn.Linear(8, 8)
        self.seq = nn.Sequential(shared, nn.ReLU(), shared, nn.ReLU(), nn.Linear(8, 8), nn.ReLU())

    def forward(self, x):
        return self.seq(x)


@pytest.mark.parametrize("model_class,fused_names,left", [
    (SharedLinear, ["head"], "fc"),
    (SharedInSequential, ["seq.4"], "seq.0"),
])
def test_linear_called_twice_is_left_alone(model_class, fused_names, left):
    model = model_class()
    fused = fusedmlp.fuse(model)
    assert fused_layer_names(fused) == fused_names
    assert type(fused.get_submodule(left)) is nn.Linear
    assert fused.fuse_report.skipped == {left: "it is called more than once"}
    assert_same_function(model, fused, torch.randn(5, 8))


class OutputUsedElsewhere(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 4)

    def forward(self, x):
        h = self.fc1(x)
        return self.fc2(torch.relu(h)) + h.mean(dim=-1, keepdim=True)


class ReluInPlaceThenPreActivationUsed(nn.Module):
    """After ``F.relu(h, inplace=True)`` the name ``h`` holds the ReLU output, and the
    graph shows the Linear's output feeding both the ReLU and fc2."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 4)

    def forward(self, x):
        h = self.fc1(x)
        F.relu(h, inplace=True)
        return self.fc2(h)


@pytest.mark.parametrize("model_class", [OutputUsedElsewhere, ReluInPlaceThenPreActivationUsed])
def test_linear_whose_output_is_used_elsewhere_is_left_alone(model_class):
    model = model_class()
    fused = fusedmlp.fuse(model)
    assert fused_layer_names(fused) == []
    assert linear_names(fused) == ["fc1", "fc2"]
    assert fused.fuse_report.skipped == {"fc1": "its output is also used other than by the ReLU"}
    assert_same_function(model, fused, torch.randn(5, 8))


class DataDependent(nn.Module):
    """fx cannot trace the ``if`` on a tensor value."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 16), nn.ReLU(),
                                  nn.Sequential(nn.Linear(16, 16), nn.ReLU()), nn.Linear(16, 8))
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        h = self.body(x)
        if x.sum() > 0:
            h = -h
        return torch.relu(self.head(h))


def test_untraceable_model_gets_its_sequential_pairs_fused_with_a_warning():
    model = DataDependent()
    with pytest.warns(UserWarning, match="could not trace DataDependent.forward") as record:
        fused = fusedmlp.fuse(model)
    message = str(record[0].message)
    assert "left unfused (reasons in result.fuse_report): body.3, head" in message
    assert "(body.0, body.2.0)" in message
    assert type(fused) is DataDependent
    assert fused_layer_names(fused) == ["body.0", "body.2.0"]
    assert not fused.fuse_report.traced
    assert list(fused.fuse_report.skipped) == ["body.3", "head"]
    x = torch.randn(32, 8).abs()  # x takes one branch of forward's `if`, -x the other
    assert_same_function(model, fused, x)
    assert_same_function(model, fused, -x)


class TrainingDependentDropout(nn.Module):
    """fx would freeze ``training=self.training`` at its trace-time value."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 4)

    def forward(self, x):
        return self.fc2(F.dropout(torch.relu(self.fc1(x)), 0.5, training=self.training))


def test_forward_that_depends_on_train_mode_keeps_its_own_forward():
    model = TrainingDependentDropout()
    with pytest.warns(UserWarning, match="differs between train and eval mode"):
        fused = fusedmlp.fuse(model)
    assert type(fused) is TrainingDependentDropout and fused_layer_names(fused) == []
    model.eval(), fused.eval()
    assert_same_function(model, fused, torch.randn(5, 8))


def test_unsupported_dtype_is_left_alone():
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2)).to(torch.bfloat16)
    fused = fusedmlp.fuse(model)
    assert fused_layer_names(fused) == []
    assert "bfloat16" in fused.fuse_report.skipped["0"]
    x = torch.randn(3, 8, dtype=torch.bfloat16)
    assert torch.equal(fused(x), model(x))


def test_hooks_are_not_bypassed():
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU())
    seen = []
    model[1].register_forward_hook(lambda module, args, out: seen.append(out))
    fused = fusedmlp.fuse(model)
    assert fused_layer_names(fused) == ["2"]
    assert "hooks" in fused.fuse_report.skipped["0"]
    fused(torch.randn(2, 8))
    assert len(seen) == 1


@pytest.mark.parametrize("relu_style", ["torch.relu", "torch.relu_"])
def test_fusing_twice_changes_nothing_more(relu_style):
    once = fusedmlp.fuse(ClassicNet(relu_style))
    twice = fusedmlp.fuse(once)
    assert fused_layer_names(twice) == ["fc1"] and twice.fuse_report.fused == []
    x = torch.randn(3, 784)
    torch.testing.assert_close(twice(x), once(x))


def test_rejects_non_module():
    with pytest.raises(TypeError, match="model must be an nn.Module"):
        fusedmlp.fuse(lambda x: x)


def test_fused_graph_module_saves_and_loads(tmp_path):
    fused = fusedmlp.fuse(ClassicNet("torch.relu_"))
    assert isinstance(fused, fx.GraphModule)
    torch.save(fused, tmp_path / "fused.pt")
    loaded = torch.load(tmp_path / "fused.pt", weights_only=False)
    x = torch.randn(3, 784)
    torch.testing.assert_close(loaded(x), fused(x))
    assert fused_layer_names(loaded) == ["fc1"]


class ReluSlotCalledOnItsOwn(nn.Module):
    """``seq[1]`` also runs on its own: replacing that slot by nn.Identity would be wrong,
    so it stays a ReLU (and runs once more on seq[0]'s fused output)."""

    def __init__(self):
        super().__init__()
        self.seq = nn.Sequential(nn.Linear(8, 8), nn.ReLU())

    def forward(self, x):
        return self.seq(x) + self.seq[1](-x)


def test_relu_slot_called_on_its_own_still_runs():
    model = ReluSlotCalledOnItsOwn()
    fused = fusedmlp.fuse(model)
    assert type(fused) is ReluSlotCalledOnItsOwn and fused_layer_names(fused) == ["seq.0"]
    assert type(fused.get_submodule("seq.1")) is nn.ReLU
    assert fused.fuse_report.activation_kept == ["seq.0"]
    assert_same_function(model, fused, torch.randn(5, 8))


class UntraceableWithSharedLinear(nn.Module):
    def __init__(self):
        super().__init__()
        shared = nn.Linear(8, 8)
        self.seq = nn.Sequential(shared, nn.ReLU(), shared, nn.ReLU(), nn.Linear(8, 8), nn.ReLU())

    def forward(self, x):
        return self.seq(x) if x.sum() > 0 else -x


def test_untraceable_model_leaves_a_shared_linear_alone():
    model = UntraceableWithSharedLinear()
    with pytest.warns(UserWarning, match="left unfused .*: seq.0$"):
        fused = fusedmlp.fuse(model)
    assert fused_layer_names(fused) == ["seq.4"]
    assert fused.fuse_report.skipped == {"seq.0": "it is registered more than once in the model"}
    assert_same_function(model, fused, torch.randn(5, 8).abs())


class FrozenBranch(nn.Module):
    """fx would drop the ``torch.no_grad()`` block, and gradients would reach ``frozen``."""

    def __init__(self):
        super().__init__()
        self.frozen = nn.Linear(8, 4)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        with torch.no_grad():
            target = self.frozen(x)
        return torch.relu(self.fc(x)) - target


def test_forward_with_no_grad_block_keeps_its_own_forward():
    model = FrozenBranch()
    with pytest.warns(UserWarning, match=r"switches off autograd .*left unfused .*: frozen, fc$"):
        fused = fusedmlp.fuse(model)
    assert type(fused) is FrozenBranch
    fused(torch.randn(3, 8)).sum().backward()
    assert fused.frozen.weight.grad is None and fused.fc.weight.grad is not None


def test_fuse_under_no_grad_still_traces():
    with torch.no_grad():
        fused = fusedmlp.fuse(ClassicNet())
    assert fused.fuse_report.traced and fused_layer_names(fused) == ["fc1"]


def fused_linear_names(model):
    return sorted(name for name, m in model.named_modules() if type(m) is FusedLinear)


def test_plain_linear_moves_the_output_layer_onto_fused_linear():
    model = ClassicNet("torch.relu")
    fused = fusedmlp.fuse(model, plain_linear=True)
    assert fused_layer_names(fused) == ["fc1"] and fused_linear_names(fused) == ["fc2"]
    assert linear_names(fused) == []
    assert fused.fuse_report.linear == ["fc2"] and fused.fuse_report.skipped == {}
    assert "FusedLinear: fc2" in str(fused.fuse_report)
    assert fused.fc2.weight is not model.fc2.weight  # deep-copied (inplace=False) ...
    assert list(fused.state_dict()) == list(model.state_dict())  # ... under the same names
    assert_same_function(model, fused, torch.randn(6, 1, 28, 28))


def test_plain_linear_keeps_a_shared_layer_shared():
    model = SharedInSequential()
    fused = fusedmlp.fuse(model, plain_linear=True)
    # seq.0 and seq.2 are one nn.Linear called twice: not fused with a ReLU, but one
    # FusedLinear at both slots, over the one pair of Parameters.
    assert fused_layer_names(fused) == ["seq.4"]
    assert fused.seq[0] is fused.seq[2] and type(fused.seq[0]) is FusedLinear
    assert fused.fuse_report.linear == ["seq.0", "seq.2"] and fused.fuse_report.skipped == {}
    assert_same_function(model, fused, torch.randn(5, 8))


def test_plain_linear_leaves_what_the_kernels_cannot_run():
    model = nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 2))
    seen = []
    model[0].register_forward_hook(lambda module, args, out: seen.append(out))
    fused = fusedmlp.fuse(model, plain_linear=True)
    assert linear_names(fused) == ["0"] and fused_linear_names(fused) == ["2"]
    assert "hooks" in fused.fuse_report.skipped["0"]
    fused(torch.randn(3, 8))
    assert len(seen) == 1
    half = fusedmlp.fuse(nn.Sequential(nn.Linear(4, 2)).to(torch.bfloat16), plain_linear=True)
    assert linear_names(half) == ["0"] and "bfloat16" in half.fuse_report.skipped["0"]


def test_plain_linear_on_an_untraceable_model():
    model = DataDependent()
    with pytest.warns(UserWarning, match="could not trace"):
        fused = fusedmlp.fuse(model, plain_linear=True)
    assert fused_layer_names(fused) == ["body.0", "body.2.0"]
    assert fused_linear_names(fused) == ["body.3", "head"] and fused.fuse_report.skipped == {}
    x = torch.randn(32, 8).abs()
    assert_same_function(model, fused, x)
    assert_same_function(model, fused, -x)


# Activations other than ReLU (issue 12 part 5): modules, functions and Tensor methods, with
# their arguments (GELU's approximate, LeakyReLU's negative_slope) read from the call.

ACTIVATION_MODULES = [  # (module, what fuse() reports it fused)
    (nn.ReLU(), "relu"), (nn.GELU(), "gelu"), (nn.GELU(approximate="tanh"), "gelu_tanh"),
    (nn.SiLU(), "silu"), (nn.SiLU(inplace=True), "silu"),
    (nn.LeakyReLU(), "leaky_relu(negative_slope=0.01)"),
    (nn.LeakyReLU(0.2, inplace=True), "leaky_relu(negative_slope=0.2)"),
    (nn.Sigmoid(), "sigmoid"), (nn.Tanh(), "tanh"),
]
FP64_TIGHT = dict(rtol=1e-12, atol=1e-12)


def tolerance_for(dtype):
    return FP64_TIGHT if dtype == torch.float64 else {}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("activation,expected", ACTIVATION_MODULES,
                         ids=[name for _, name in ACTIVATION_MODULES])
def test_sequential_activation_slots_become_identity(activation, expected, dtype):
    model = nn.Sequential(nn.Linear(12, 16), copy.deepcopy(activation), nn.Linear(16, 8),
                          copy.deepcopy(activation), nn.Linear(8, 3)).to(dtype)
    fused = fusedmlp.fuse(model)
    assert type(fused) is nn.Sequential and fused.fuse_report.route == "in place"
    assert fused_activations(fused) == {"0": expected, "2": expected}
    assert fused.fuse_report.activations == {"0": expected, "2": expected}
    assert type(fused[1]) is nn.Identity and type(fused[3]) is nn.Identity
    assert f"Linear->activation pair(s): 0 ({expected}), 2 ({expected})" in str(fused.fuse_report)
    assert list(fused.state_dict()) == list(model.state_dict())
    assert_same_function(model, fused, torch.randn(5, 12, dtype=dtype), **tolerance_for(dtype))


# forward's activation call -> (what fuse() reports it fused, how it is spelled in the code
# fx generates). Every non-ReLU call (and every in-place one) must leave forward: the graph
# route.
FUNCTIONAL_FORMS = {
    "F.gelu(h)": (lambda h: F.gelu(h), "gelu", "gelu"),
    "F.gelu(h, approximate='none')": (lambda h: F.gelu(h, approximate="none"), "gelu", "gelu"),
    "F.gelu(h, approximate='tanh')":
        (lambda h: F.gelu(h, approximate="tanh"), "gelu_tanh", "gelu"),
    "F.silu(h)": (lambda h: F.silu(h), "silu", "silu"),
    "F.silu(h, True)": (lambda h: F.silu(h, True), "silu", "silu"),
    "F.silu(h, inplace=True)": (lambda h: F.silu(h, inplace=True), "silu", "silu"),
    "F.leaky_relu(h)":
        (lambda h: F.leaky_relu(h), "leaky_relu(negative_slope=0.01)", "leaky_relu"),
    "F.leaky_relu(h, 0.2)":
        (lambda h: F.leaky_relu(h, 0.2), "leaky_relu(negative_slope=0.2)", "leaky_relu"),
    "F.leaky_relu(h, negative_slope=-0.5)": (lambda h: F.leaky_relu(h, negative_slope=-0.5),
                                             "leaky_relu(negative_slope=-0.5)", "leaky_relu"),
    "F.leaky_relu(h, 0.3, True)":
        (lambda h: F.leaky_relu(h, 0.3, True), "leaky_relu(negative_slope=0.3)", "leaky_relu"),
    "F.leaky_relu_(h, 0.1)":
        (lambda h: F.leaky_relu_(h, 0.1), "leaky_relu(negative_slope=0.1)", "leaky_relu"),
    "torch.sigmoid(h)": (lambda h: torch.sigmoid(h), "sigmoid", "sigmoid"),
    "F.sigmoid(h)": (lambda h: F.sigmoid(h), "sigmoid", "sigmoid"),
    "h.sigmoid()": (lambda h: h.sigmoid(), "sigmoid", "sigmoid"),
    "h.sigmoid_()": (lambda h: h.sigmoid_(), "sigmoid", "sigmoid"),
    "torch.sigmoid_(h)": (lambda h: torch.sigmoid_(h), "sigmoid", "sigmoid"),
    "torch.special.expit(h)": (lambda h: torch.special.expit(h), "sigmoid", "expit"),
    "torch.tanh(h)": (lambda h: torch.tanh(h), "tanh", "tanh"),
    "F.tanh(h)": (lambda h: F.tanh(h), "tanh", "tanh"),
    "h.tanh()": (lambda h: h.tanh(), "tanh", "tanh"),
    "h.tanh_()": (lambda h: h.tanh_(), "tanh", "tanh"),
    "torch.tanh_(h)": (lambda h: torch.tanh_(h), "tanh", "tanh"),
    "h.relu_()": (lambda h: h.relu_(), "relu", "relu"),
}


class FunctionalActivation(nn.Module):
    """fc1 -> the activation written as ``form`` in forward -> fc2, plus state forward does
    not use (a buffer, a plain attribute) that the graph route must carry over."""

    def __init__(self, form):
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 4)
        self.form = form
        self.register_buffer("unused", torch.ones(2))

    def forward(self, x):
        return self.fc2(FUNCTIONAL_FORMS[self.form][0](self.fc1(x)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("form", list(FUNCTIONAL_FORMS))
def test_activation_call_in_forward_is_fused_and_removed_from_the_graph(form, dtype):
    _, expected, spelled = FUNCTIONAL_FORMS[form]
    model = FunctionalActivation(form).to(dtype)
    fused = fusedmlp.fuse(model)
    report = fused.fuse_report
    assert (report.fused, report.activations) == (["fc1"], {"fc1": expected})
    assert (report.route, report.skipped, report.activation_kept) == ("graph", {}, [])
    assert isinstance(fused, fx.GraphModule) and spelled not in fused.code
    assert fused_activations(fused) == {"fc1": expected} and linear_names(fused) == ["fc2"]
    assert fused.form == form and list(fused.state_dict()) == list(model.state_dict())
    assert_same_function(model, fused, torch.randn(6, 8, dtype=dtype), **tolerance_for(dtype))


class SharedActivationModule(nn.Module):
    """One nn.GELU after two Linear layers: it cannot become nn.Identity, and GELU is not
    idempotent, so both of its calls leave the graph."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(8, 16), nn.Linear(16, 4)
        self.act = nn.GELU(approximate="tanh")

    def forward(self, x):
        return self.act(self.fc2(self.act(self.fc1(x)))) + self.act(x).sum()


def test_shared_gelu_module_is_removed_from_the_graph_where_fused():
    model = SharedActivationModule()
    fused = fusedmlp.fuse(model)
    report = fused.fuse_report
    assert report.activations == {"fc1": "gelu_tanh", "fc2": "gelu_tanh"}
    assert report.route == "graph" and type(fused.act) is nn.GELU
    assert fused.code.count("self.act(") == 1  # the call on x, which no Linear feeds
    assert_same_function(model, fused, torch.randn(5, 8))


class ReluCallAndGeluCall(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(8, 16), nn.Linear(16, 16), nn.Linear(16, 4)

    def forward(self, x):
        return self.fc3(F.gelu(self.fc2(torch.relu(self.fc1(x)))))


def test_a_gelu_call_takes_the_graph_route_and_the_relu_call_leaves_too():
    model = ReluCallAndGeluCall()
    fused = fusedmlp.fuse(model)
    assert fused.fuse_report.activations == {"fc1": "relu", "fc2": "gelu"}
    assert fused.fuse_report.route == "graph" and fused.fuse_report.activation_kept == []
    assert "relu" not in fused.code and "gelu" not in fused.code
    assert_same_function(model, fused, torch.randn(5, 8))


class NotHonourable(nn.Module):
    """Activation calls fuse() cannot fold into fc1, each for its own reason."""

    def __init__(self, case):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(8, 16), nn.Linear(16, 4)
        self.slope = nn.Parameter(torch.tensor(0.3))
        self.register_buffer("out_buffer", torch.empty(5, 16))
        self.case = case

    def forward(self, x):
        h = self.fc1(x)
        if self.case == "slope computed in forward":
            h = F.leaky_relu(h, self.slope.item())
        elif self.case == "dtype cast":
            h = torch.sigmoid(h.float())
        elif self.case == "unknown approximate":
            h = F.gelu(h, approximate="exact")
        elif self.case == "out=":
            h = torch.sigmoid(h, out=self.out_buffer)
        return self.fc2(h)


@pytest.mark.parametrize("case,reason", [
    ("slope computed in forward",
     "its LeakyReLU takes a negative_slope computed in forward, not a constant"),
    ("dtype cast", "its output is cast (.float()) before its Sigmoid, a cast a fused layer "
                   "would skip"),
    ("unknown approximate", "its GELU takes approximate='exact', for which fusedmlp has no "
                            "kernel (it has 'none' and 'tanh')"),
    ("out=", "its Sigmoid passes out=, which the fused layer cannot honour"),
])
def test_activation_arguments_fuse_cannot_honour_leave_the_linear(case, reason):
    model = NotHonourable(case)
    fused = fusedmlp.fuse(model)
    assert type(fused) is NotHonourable and fused_layer_names(fused) == []
    assert fused.fuse_report.skipped == {"fc1": reason}
    assert f"left fc1: {reason}" in str(fused.fuse_report)
    x = torch.randn(5, 8)
    if case == "unknown approximate":  # torch itself rejects it when forward runs
        with pytest.raises(RuntimeError, match="approximate"):
            fused(x)
    elif case == "out=":  # out= does not support autograd: compare outputs only
        with torch.no_grad():
            torch.testing.assert_close(fused(x), model(x))
    else:
        assert_same_function(model, fused, x)


def test_untraceable_model_fuses_any_activation_slot():
    model = DataDependent()
    model.body[1] = nn.SiLU()
    model.body[2][1] = nn.LeakyReLU(0.25)
    with pytest.warns(UserWarning, match=r"fused only nn.Linear -> activation module slots .*"
                                         r"\(body.0, body.2.0\)"):
        fused = fusedmlp.fuse(model)
    assert fused.fuse_report.activations == {"body.0": "silu",
                                             "body.2.0": "leaky_relu(negative_slope=0.25)"}
    assert type(fused.body[1]) is nn.Identity and type(fused.body[2][1]) is nn.Identity
    x = torch.randn(32, 8).abs()
    assert_same_function(model, fused, x)
    assert_same_function(model, fused, -x)


class Swish(nn.Module):
    """A user's activation class: one call of a supported activation, nothing else."""

    def forward(self, x):
        return F.silu(x)


class ModeDependentActivation(nn.Module):
    """Its call depends on train/eval mode: not one activation."""

    def forward(self, x):
        return F.gelu(x) if self.training else torch.tanh(x)


class WrapperModel(nn.Module):
    def __init__(self, act, shared=False):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(8, 16), nn.Linear(16, 4)
        self.act, self.shared = act, shared

    def forward(self, x):
        h = self.act(self.fc1(x))
        return self.fc2(h) + (self.act(x).sum() if self.shared else 0)


def test_a_module_wrapping_one_activation_call_becomes_identity_in_place():
    model = WrapperModel(Swish())
    fused = fusedmlp.fuse(model)
    assert type(fused) is WrapperModel and type(fused.act) is nn.Identity
    assert fused.fuse_report.activations == {"fc1": "silu"}
    assert fused.fuse_report.route == "in place"
    assert_same_function(model, fused, torch.randn(5, 8))


def test_a_wrapper_module_called_twice_stays_and_leaves_the_graph_where_fused():
    model = WrapperModel(Swish(), shared=True)
    fused = fusedmlp.fuse(model)
    assert fused.fuse_report.route == "graph" and type(fused.act) is Swish
    assert fused.code.count("self.act(") == 1
    assert_same_function(model, fused, torch.randn(5, 8))


def test_a_wrapper_whose_call_depends_on_train_mode_is_not_an_activation():
    model = WrapperModel(ModeDependentActivation())
    with pytest.warns(UserWarning, match="differs between train and eval mode"):
        fused = fusedmlp.fuse(model)
    assert fused_layer_names(fused) == [] and type(fused.act) is ModeDependentActivation
    for mode in (True, False):
        model.train(mode), fused.train(mode)
        assert_same_function(model, fused, torch.randn(5, 8))


def test_gelu_module_with_an_unknown_approximate_is_left_with_its_reason():
    model = nn.Sequential(nn.Linear(8, 8), nn.GELU(approximate="exact"), nn.Linear(8, 2))
    fused = fusedmlp.fuse(model)
    assert fused_layer_names(fused) == [] and type(fused[1]) is nn.GELU
    assert fused.fuse_report.skipped == {
        "0": "its GELU takes approximate='exact', for which fusedmlp has no kernel (it has "
             "'none' and 'tanh')"}


@pytest.mark.parametrize("activation,expected", ACTIVATION_MODULES,
                         ids=[name for _, name in ACTIVATION_MODULES])
def test_second_derivatives_of_a_fused_model_equal_the_original(activation, expected):
    """Physics-informed losses differentiate d(output)/d(input) again: the fused model's
    double backward (through the fused layer's own ops) gives the original's, in fp64."""
    model = nn.Sequential(nn.Linear(3, 17), copy.deepcopy(activation), nn.Linear(17, 1)).double()
    fused = fusedmlp.fuse(model)
    assert fused.fuse_report.activations == {"0": expected}

    def input_grad_and_its_grads(m):
        x = torch.randn(9, 3, dtype=torch.float64,
                        generator=torch.Generator().manual_seed(1)).requires_grad_()
        grad_x, = torch.autograd.grad(m(x).sum(), x, create_graph=True)
        inputs = [x, *m.parameters()]
        grads = torch.autograd.grad(grad_x.square().sum(), inputs, allow_unused=True)
        return [grad_x] + [torch.zeros_like(t) if g is None else g for g, t in zip(grads, inputs)]

    for actual, wanted in zip(input_grad_and_its_grads(fused), input_grad_and_its_grads(model)):
        torch.testing.assert_close(actual, wanted, **FP64_TIGHT)
