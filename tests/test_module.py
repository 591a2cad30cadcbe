"""FusedLinearReLU as a drop-in for nn.Linear + ReLU."""
import copy

import pytest
import torch
from torch import nn

import fusedmlp
from fusedmlp import FusedLinearReLU
from helpers import same_init_as_nn_linear


@pytest.mark.parametrize("bias", [True, False])
def test_same_parameters_and_init_as_nn_linear(bias):
    same_init_as_nn_linear(FusedLinearReLU, 37, 11, bias, seed=42)


def test_state_dict_loads_both_ways():
    linear, fused = nn.Linear(20, 6), FusedLinearReLU(20, 6)
    fused.load_state_dict(linear.state_dict(), strict=True)
    x = torch.randn(5, 20)
    torch.testing.assert_close(fused(x), torch.relu(linear(x)))
    other = nn.Linear(20, 6)
    other.load_state_dict(fused.state_dict(), strict=True)
    torch.testing.assert_close(torch.relu(other(x)), fused(x))


def test_sequential_state_dict_swaps_with_fused_model():
    plain = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
    fused = nn.Sequential(FusedLinearReLU(784, 128), nn.Identity(), nn.Linear(128, 10))
    fused.load_state_dict(plain.state_dict())
    x = torch.randn(4, 784)
    torch.testing.assert_close(fused(x), plain(x))


def test_repr_matches_nn_linear_style():
    assert repr(FusedLinearReLU(784, 128)) == "FusedLinearReLU(in_features=784, out_features=128, bias=True)"
    assert repr(FusedLinearReLU(3, 2, bias=False)) == "FusedLinearReLU(in_features=3, out_features=2, bias=False)"


def test_device_and_dtype_arguments():
    m = FusedLinearReLU(5, 3, dtype=torch.float64, device="cpu")
    assert m.weight.dtype == torch.float64 and m.bias.device.type == "cpu"
    assert m(torch.randn(2, 5, dtype=torch.float64)).dtype == torch.float64
    m = FusedLinearReLU(5, 3, device="meta")
    assert m.weight.is_meta


@pytest.mark.parametrize("bias", [True, False])
def test_from_linear_shares_parameters(bias):
    linear = nn.Linear(9, 4, bias=bias, dtype=torch.float64)
    rng_before = torch.get_rng_state()
    fused = FusedLinearReLU.from_linear(linear)
    assert torch.equal(torch.get_rng_state(), rng_before)  # no re-initialisation
    assert fused.weight is linear.weight and fused.bias is linear.bias
    assert fused.in_features == 9 and fused.out_features == 4
    x = torch.randn(3, 9, dtype=torch.float64)
    torch.testing.assert_close(fused(x), torch.relu(linear(x)))
    with pytest.raises(TypeError, match="nn.Linear"):
        FusedLinearReLU.from_linear(nn.ReLU())


def test_deepcopy_and_save_load(tmp_path):
    m = FusedLinearReLU(6, 4)
    x = torch.randn(2, 6)
    torch.testing.assert_close(copy.deepcopy(m)(x), m(x))
    torch.save(m, tmp_path / "m.pt")
    loaded = torch.load(tmp_path / "m.pt", weights_only=False)
    torch.testing.assert_close(loaded(x), m(x))


class ClassicNet(nn.Module):
    """The classic MNIST MLP: 784 -> 128 -> ReLU -> 10."""

    def __init__(self, fused):
        super().__init__()
        self.fc1 = FusedLinearReLU(784, 128) if fused else nn.Linear(784, 128)
        self.fc2 = nn.Linear(128, 10)
        self.fused = fused

    def forward(self, x):
        x = torch.flatten(x, 1)
        x = self.fc1(x) if self.fused else torch.relu(self.fc1(x))
        return self.fc2(x)


def test_training_steps_match_nn_linear():
    torch.manual_seed(0)
    plain = ClassicNet(fused=False)
    fused = ClassicNet(fused=True)
    fused.load_state_dict(plain.state_dict())
    opts = [torch.optim.SGD(m.parameters(), lr=0.01) for m in (plain, fused)]
    loss_fn = nn.CrossEntropyLoss()
    for step in range(20):
        images, labels = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))
        losses = []
        for model, opt in zip((plain, fused), opts):
            opt.zero_grad()
            loss = loss_fn(model(images), labels)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert losses[1] == pytest.approx(losses[0], rel=1e-4), step
    for p, q in zip(plain.parameters(), fused.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)


def test_exported_names():
    assert fusedmlp.FusedLinearReLU is FusedLinearReLU
    for name in fusedmlp.__all__:
        assert hasattr(fusedmlp, name)
