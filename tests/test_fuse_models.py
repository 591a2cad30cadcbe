"""fusedmlp.fuse on models from torchvision and timm and on hand-written ones: the result is
the same model a user's code, checkpoints and tools work with (class, containers, methods,
attributes, state_dict, module paths), computing the same outputs and gradients."""
import copy

import pytest
import torch
import torch.nn.functional as F
import torchvision
from timm.layers import Mlp, get_act_layer
from timm.models import create_model
from timm.models.mlp_mixer import MlpMixer
from torch import fx, nn

import fusedmlp
from fusedmlp import FusedLinear, FusedLinearReLU
from fusedmlp.train import ClassicNet
from helpers import (FlattenThenHead, assert_same_function, assert_same_state_dict,
                     assert_same_structure, fused_activations, fused_layer_names)


# torchvision.ops.MLP subclasses nn.Sequential and keeps its forward.

@pytest.mark.parametrize("kwargs", [{}, {"dropout": 0.2}, {"inplace": True}],
                         ids=["plain", "dropout", "inplace"])
def test_torchvision_mlp_stays_an_mlp(kwargs):
    torch.manual_seed(0)
    model = torchvision.ops.MLP(16, [32, 24, 8], **kwargs)
    fused = fusedmlp.fuse(model)
    assert type(fused) is torchvision.ops.MLP and isinstance(fused, nn.Sequential)
    assert len(fused) == len(model)  # a fused-away ReLU slot is an nn.Identity
    assert [type(m) for m in fused] == [FusedLinearReLU, nn.Identity, nn.Dropout,
                                        FusedLinearReLU, nn.Identity, nn.Dropout,
                                        nn.Linear, nn.Dropout]
    report = fused.fuse_report
    assert (report.fused, report.skipped, report.route) == (["0", "3"], {}, "in place")
    assert_same_structure(model, fused)
    assert_same_state_dict(model, fused)
    assert_same_function(model, fused, torch.randn(5, 16))  # train mode: dropout included
    fused.append(nn.Linear(8, 2))  # still a Sequential to build on
    assert fused(torch.randn(3, 16)).shape == (3, 2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("activation_layer,expected", [
    (nn.ReLU, "relu"), (nn.GELU, "gelu"), (nn.SiLU, "silu"),
    (nn.LeakyReLU, "leaky_relu(negative_slope=0.01)"), (nn.Sigmoid, "sigmoid"),
    (nn.Tanh, "tanh"),
], ids=["ReLU", "GELU", "SiLU", "LeakyReLU", "Sigmoid", "Tanh"])
def test_torchvision_mlp_with_each_activation_layer(activation_layer, expected, dtype):
    torch.manual_seed(0)
    model = torchvision.ops.MLP(16, [32, 24, 8], activation_layer=activation_layer).to(dtype)
    fused = fusedmlp.fuse(model)
    assert type(fused) is torchvision.ops.MLP
    assert [type(m) for m in fused][:3] == [FusedLinearReLU if expected == "relu"
                                            else FusedLinear, nn.Identity, nn.Dropout]
    report = fused.fuse_report
    assert report.activations == {"0": expected, "3": expected} == fused_activations(fused)
    assert (report.route, report.skipped) == ("in place", {})
    assert_same_structure(model, fused)
    assert_same_state_dict(model, fused)
    tight = dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else {}
    assert_same_function(model, fused, torch.randn(5, 16, dtype=dtype), **tight)


def test_torchvision_mlp_inside_an_untraceable_model_is_fused_with_true_reasons():
    model = FlattenThenHead()
    with pytest.warns(UserWarning, match=r"could not trace FlattenThenHead.forward.*\(head.0\)"):
        fused = fusedmlp.fuse(model)
    assert type(fused) is FlattenThenHead and type(fused.head) is torchvision.ops.MLP
    report = fused.fuse_report
    assert (report.fused, report.route, report.traced) == (["head.0"], "untraced", False)
    assert report.skipped == {"head.3": "fx could not trace forward, and the next module of "
                                        "its MLP is Dropout, not an activation "
                                        "fusedmlp fuses"}
    assert_same_structure(model, fused)
    assert_same_state_dict(model, fused)
    assert_same_function(model, fused, torch.randn(3, 4, 4))


# timm

def test_timm_mlp_keeps_its_class_and_its_act_path():
    model = Mlp(16, 32, 8, act_layer=nn.ReLU)
    fused = fusedmlp.fuse(model)
    assert type(fused.fc1) is FusedLinearReLU and type(fused.act) is nn.Identity
    assert fused.fuse_report.fused == ["fc1"] and fused.fuse_report.activation_kept == []
    assert_same_structure(model, fused)
    assert_same_state_dict(model, fused)
    assert_same_function(model, fused, torch.randn(2, 5, 16))


def test_timm_mlp_with_its_default_gelu():
    model = Mlp(16, 32, 8)
    assert type(model.act) is nn.GELU  # timm's default act_layer
    fused = fusedmlp.fuse(model)
    assert type(fused.fc1) is FusedLinear and fused.fc1.activation == "gelu"
    assert type(fused.act) is nn.Identity
    report = fused.fuse_report
    assert (report.activations, report.route) == ({"fc1": "gelu"}, "in place")
    assert "fused 1 Linear->activation pair(s): fc1 (gelu)" in str(report)
    assert_same_structure(model, fused)
    assert_same_state_dict(model, fused)
    assert_same_function(model, fused, torch.randn(2, 5, 16))


@pytest.mark.parametrize("act_layer,expected", [
    ("gelu", "gelu"), ("gelu_tanh", "gelu_tanh"), ("sigmoid", "sigmoid"), ("tanh", "tanh"),
])
def test_timm_mlp_with_timms_own_activation_classes(act_layer, expected):
    """act_layer="gelu" builds timm.layers.activations.GELU, a module that only calls
    F.gelu: fuse() treats it as an activation module (nn.Identity in place), instead of
    letting fx inline the call, which would take the graph route."""
    model = Mlp(16, 32, 8, act_layer=get_act_layer(act_layer))
    assert type(model.act).__module__ == "timm.layers.activations"
    fused = fusedmlp.fuse(model)
    report = fused.fuse_report
    assert (report.activations, report.route) == ({"fc1": expected}, "in place")
    assert type(fused.act) is nn.Identity
    assert_same_structure(model, fused)
    assert_same_state_dict(model, fused)
    assert_same_function(model, fused, torch.randn(2, 5, 16))


def test_timm_mixer_with_relu_keeps_containers_methods_and_attributes():
    # mixer_s16_224's architecture and class at a test's size (2 of its 8 blocks, 64 of its
    # 512 channels), random init: there are no weights to download.
    torch.manual_seed(0)
    model = MlpMixer(num_classes=5, img_size=32, patch_size=16, num_blocks=2, embed_dim=64,
                     act_layer=nn.ReLU)
    fused = fusedmlp.fuse(model)  # its Mlps are 2-layer chains
    assert type(fused.blocks) is nn.Sequential and len(fused.blocks) == 2
    report = fused.fuse_report
    assert report.route == "in place" and report.skipped == {}
    assert report.fused == [f"blocks.{b}.{mlp}.fc1" for b in range(2)
                            for mlp in ("mlp_tokens", "mlp_channels")]
    assert fused_layer_names(fused.blocks[0]) == ["mlp_channels.fc1", "mlp_tokens.fc1"]
    # each Mlp runs as one fusedmlp.mlp op (an instance forward on the Mlp, not the model)
    assert report.mlp_chains == [[f"blocks.{b}.{mlp}.fc{i}" for i in (1, 2)] for b in range(2)
                                 for mlp in ("mlp_tokens", "mlp_channels")]
    assert "forward" in fused.blocks[0].mlp_tokens.__dict__ and "forward" not in fused.__dict__
    assert fused.num_features == 64 and fused.group_matcher() == model.group_matcher()
    assert_same_structure(model, fused)
    assert_same_state_dict(model, fused)
    x = torch.randn(2, 3, 32, 32)
    assert_same_function(model, fused, x)
    torch.testing.assert_close(fused.forward_features(x), model.forward_features(x))
    fused.reset_classifier(3)
    assert fused(x).shape == (2, 3)


def test_timm_vit_gets_its_mlp_gelu_fused_in_place():
    torch.manual_seed(0)
    model = create_model("vit_tiny_patch16_224", depth=2, img_size=32, num_classes=5)
    # its Mlps are 2-layer chains: left layer by layer with mlp_min_layers=3
    short = fusedmlp.fuse(model, mlp_min_layers=3).fuse_report
    assert short.mlp_chains == []
    assert short.mlp_short == [[f"blocks.{b}.mlp.fc1", f"blocks.{b}.mlp.fc2"] for b in range(2)]
    fused = fusedmlp.fuse(model)
    report = fused.fuse_report
    assert report.activations == {"blocks.0.mlp.fc1": "gelu", "blocks.1.mlp.fc1": "gelu"}
    assert report.route == "in place" and report.skipped == {}
    assert type(fused.blocks[1].mlp.act) is nn.Identity
    assert report.mlp_chains == [[f"blocks.{b}.mlp.fc1", f"blocks.{b}.mlp.fc2"] for b in range(2)]
    assert_same_structure(model, fused)
    assert_same_state_dict(model, fused)
    assert_same_function(model, fused, torch.randn(2, 3, 32, 32))


# State forward does not use: a loss module with a weight buffer (Lightning style), an
# auxiliary head, a registered buffer, a plain attribute, a method.

class WithUnusedState(nn.Module):
    def __init__(self, relu_in_place=False):
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 4)
        self.aux_head = nn.Linear(16, 2)
        self.criterion = nn.CrossEntropyLoss(weight=torch.tensor([1.0, 2.0, 3.0, 4.0]))
        self.register_buffer("class_counts", torch.arange(4.0))
        self.relu_in_place = relu_in_place
        self.num_classes = 4

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x), inplace=self.relu_in_place))

    def loss(self, x, target):
        return self.criterion(self(x), target)


@pytest.mark.parametrize("relu_in_place,route", [(False, "in place"), (True, "graph")])
def test_state_forward_does_not_use_is_kept(relu_in_place, route):
    model = WithUnusedState(relu_in_place)
    fused = fusedmlp.fuse(model)
    assert "criterion.weight" in fused.state_dict() and "class_counts" in fused.state_dict()
    assert_same_state_dict(model, fused)
    assert fused.fuse_report.route == route and fused.fuse_report.fused == ["fc1"]
    assert isinstance(fused, fx.GraphModule) == relu_in_place
    assert [name for name, _ in fused.named_modules()] == [n for n, _ in model.named_modules()]
    assert fused.num_classes == 4 and type(fused.aux_head) is nn.Linear
    x = torch.randn(5, 8)
    assert_same_function(model, fused, x)
    if not relu_in_place:  # the in-place route keeps the class's methods
        target = torch.tensor([0, 1, 2, 3, 0])
        torch.testing.assert_close(fused.loss(x, target), model.loss(x, target))


def test_graph_route_keeps_everything_through_deepcopy_and_save(tmp_path):
    fused = fusedmlp.fuse(WithUnusedState(relu_in_place=True))
    torch.save(fused, tmp_path / "fused.pt")
    for other in (copy.deepcopy(fused), torch.load(tmp_path / "fused.pt", weights_only=False)):
        assert list(other.state_dict()) == list(fused.state_dict())
        assert other.num_classes == 4 and other.fuse_report.route == "graph"
        x = torch.randn(3, 8)
        torch.testing.assert_close(other(x), fused(x))


# Hand-written containers and residuals

class ResidualStack(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(16, 16) for _ in range(3))
        self.norms = nn.ModuleDict({"out": nn.LayerNorm(16)})
        self.out = nn.Linear(16, 4)

    def forward(self, x):
        for layer in self.layers:
            x = x + torch.relu(layer(x))
        return self.out(self.norms["out"](x))


def test_module_list_residual_model_keeps_its_containers():
    model = ResidualStack()
    fused = fusedmlp.fuse(model)
    assert type(fused.layers) is nn.ModuleList and type(fused.norms) is nn.ModuleDict
    assert fused.fuse_report.fused == ["layers.0", "layers.1", "layers.2"]
    assert fused.fuse_report.activation_kept == ["layers.0", "layers.1", "layers.2"]
    assert_same_structure(model, fused)
    assert_same_state_dict(model, fused)
    assert_same_function(model, fused, torch.randn(4, 16))


# The seed's Net (fusedmlp.train.ClassicNet): torch.relu(self.fc1(x)) in forward.

def test_seed_net_keeps_its_class_and_compiles_with_fullgraph():
    torch._dynamo.reset()
    model = ClassicNet()
    fused = fusedmlp.fuse(model, plain_linear=True)
    assert type(fused) is ClassicNet and fused.fuse_report.route == "in place"
    assert fused.fuse_report.fused == ["fc1"] and fused.fuse_report.linear == ["fc2"]
    assert_same_state_dict(model, fused)
    x = torch.randn(6, 1, 28, 28)
    assert_same_function(model, fused, x)
    compiled = torch.compile(fused, fullgraph=True, backend="aot_eager")
    assert_same_function(model, compiled, x)
