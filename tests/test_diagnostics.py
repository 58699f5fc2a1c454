"""Tests of d2lbn.diagnostics: snapshots leave training untouched and match autograd; saturation; update ratios."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from d2lbn.diagnostics import activation_layers, saturated_fraction, snapshot, update_ratios, weight_layers
from d2lbn.models import lenet, mlp

NORMS = [None, "scratch", "torch"]


def batch(n: int = 16, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=gen), torch.randint(0, 10, (n,), generator=gen)


def state(net: nn.Module) -> dict:
    return {k: v.clone() for k, v in net.state_dict().items()}


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("training", [True, False])
def test_snapshot_leaves_the_network_as_it_was(norm, training):
    torch.manual_seed(0)
    net = mlp(784, [20, 20, 20], 10, norm=norm)
    X, y = batch()
    nn.CrossEntropyLoss()(net(X), y).backward()  # some stored gradients and running statistics
    net.train(training)
    before = state(net)
    grads = [p.grad.clone() for p in net.parameters()]
    snapshot(net, *batch(seed=1))
    after = state(net)
    assert before.keys() == after.keys()
    for key in before:
        assert torch.equal(before[key], after[key]), key
    for p, g in zip(net.parameters(), grads):
        assert torch.equal(p.grad, g)
    assert all(m.training == training for m in net.modules())


@pytest.mark.parametrize("dropout", [0.0, 0.5])
def test_snapshot_does_not_change_a_training_run(dropout):
    """Not through the buffers, and not through the dropout masks drawn from the generator."""

    def run(probe: bool) -> dict:
        torch.manual_seed(0)
        net = mlp(784, [20, 20], 10, norm="torch", dropout=dropout)
        opt = torch.optim.SGD(net.parameters(), lr=0.5)
        for step in range(5):
            X, y = batch(seed=step)
            loss = nn.CrossEntropyLoss()(net(X), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if probe:
                snapshot(net, *batch(seed=100))
        return state(net)

    plain, probed = run(False), run(True)
    assert all(torch.equal(plain[k], probed[k]) for k in plain)


@pytest.mark.parametrize("norm", NORMS)
def test_snapshot_matches_autograd(norm):
    torch.manual_seed(0)
    net = mlp(784, [30, 20], 10, norm=norm)
    X, y = batch()
    snap = snapshot(net, X, y)

    reference = copy.deepcopy(net)
    acts = []
    sigmoids = activation_layers(reference)
    handles = [m.register_forward_hook(lambda m, i, o: acts.append((i[0], o))) for m in sigmoids]
    loss = nn.CrossEntropyLoss()(reference(X), y)
    for handle in handles:
        handle.remove()
    for _, out in acts:
        out.retain_grad()
    loss.backward()

    assert snap.loss == pytest.approx(loss.item())
    assert len(snap.pre_activations) == len(snap.activations) == len(snap.activation_grads) == 2
    for (pre, out), s_pre, s_act, s_grad in zip(acts, snap.pre_activations, snap.activations, snap.activation_grads):
        assert torch.allclose(s_pre, pre)
        assert torch.allclose(s_act, out)
        assert torch.allclose(s_act, torch.sigmoid(s_pre))
        assert torch.allclose(s_grad, out.grad)
        assert not s_grad.requires_grad
    layers = weight_layers(reference)
    assert len(snap.weight_grads) == len(layers) == 3
    for g, layer in zip(snap.weight_grads, layers):
        assert torch.allclose(g, layer.weight.grad)


def test_snapshot_of_a_lenet_and_a_custom_loss():
    torch.manual_seed(0)
    net = lenet("torch")
    X, y = batch(8)
    snap = snapshot(net, X, y, loss_fn=lambda out, t: nn.functional.cross_entropy(out, t, reduction="sum"))
    assert [tuple(a.shape) for a in snap.activations] == [(8, 6, 24, 24), (8, 16, 8, 8), (8, 120), (8, 84)]
    assert [tuple(g.shape) for g in snap.weight_grads] == [(6, 1, 5, 5), (16, 6, 5, 5), (120, 256), (84, 120), (10, 84)]
    # the loss given is the one used: a sum over 8 examples is 8 times the default mean
    mean = snapshot(net, X, y)
    assert snap.loss == pytest.approx(8 * mean.loss, rel=1e-5)
    for g_sum, g_mean in zip(snap.weight_grads, mean.weight_grads):
        torch.testing.assert_close(g_sum, 8 * g_mean, rtol=1e-4, atol=1e-6)


def test_snapshot_with_relu_and_an_unused_layer():
    torch.manual_seed(0)
    net = mlp(784, [20], 10, activation="relu")
    snap = snapshot(net, *batch())
    assert (snap.activations[0] >= 0).all()
    # a weight the loss does not depend on gets a zero gradient
    class WithUnused(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.used = nn.Sequential(nn.Flatten(), nn.Linear(784, 10), nn.Sigmoid())
            self.unused = nn.Linear(3, 3)

        def forward(self, x):
            return self.used(x)

    net = WithUnused()
    snap = snapshot(net, X=batch()[0], y=torch.rand(16, 10), loss_fn=nn.functional.mse_loss)
    assert torch.equal(snap.weight_grads[1], torch.zeros(3, 3))


def test_snapshot_of_an_in_place_activation_keeps_its_input():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 20), nn.ReLU(inplace=True), nn.Linear(20, 10))
    X, y = batch()
    snap = snapshot(net, X, y)
    expected = net[1](net[0](X)).detach()
    assert (expected < 0).any()
    assert torch.equal(snap.pre_activations[0], expected)
    assert torch.equal(snap.activations[0], expected.clamp(min=0))


def test_snapshot_errors():
    X, y = batch()
    with pytest.raises(ValueError, match=r"no activation module \(Sigmoid, Tanh, ReLU\); pass activation_types="):
        snapshot(nn.Sequential(nn.Flatten(), nn.Linear(784, 10)), X, y)
    shared = nn.Sigmoid()
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 20), shared, nn.Linear(20, 10), shared)
    with pytest.raises(ValueError, match="called once per forward pass; calls per layer: \\[2\\]. Give every layer its own activation module"):
        snapshot(net, X, y)
    assert not shared._forward_hooks  # hooks removed after an error


@given(st.lists(st.floats(0.0, 1.0, allow_nan=False), min_size=1, max_size=50))
@settings(max_examples=50, deadline=None)
def test_saturated_fraction_counts_the_tails(values):
    a = torch.tensor(values, dtype=torch.float64)
    expected = sum(v <= 0.02 or v >= 0.98 for v in values) / len(values)
    assert saturated_fraction(a) == pytest.approx(expected)


def test_saturated_fraction_thresholds_and_errors():
    a = torch.tensor([[0.05, 0.5], [0.95, 0.999]])
    assert saturated_fraction(a) == 0.25
    assert saturated_fraction(a, low=0.1, high=0.9) == 0.75
    for dtype in (torch.float32, torch.float64):  # the thresholds themselves count as saturated
        edges = torch.tensor([0.02, 0.98, 0.0201, 0.9799], dtype=dtype)
        assert saturated_fraction(edges) == 0.5, dtype
    with pytest.raises(ValueError, match="low < high"):
        saturated_fraction(a, low=0.9, high=0.1)
    with pytest.raises(ValueError, match="empty"):
        saturated_fraction(torch.tensor([]))


def test_update_ratios():
    net = mlp(3, [2], 1, flatten=False)
    with torch.no_grad():
        net[0].weight.fill_(2.0)  # norm 2 * sqrt(6)
        net[2].weight.fill_(1.0)  # norm sqrt(2)
    with pytest.raises(ValueError, match=r"weight 0 \(Linear\) has no gradient; call loss\.backward\(\) first"):
        update_ratios(net, lr=0.1)
    net[0].weight.grad = torch.full((2, 3), 0.5)
    net[2].weight.grad = torch.zeros(1, 2)
    ratios = update_ratios(net, lr=0.1)
    assert ratios[0] == pytest.approx(math.log10(0.1 * 0.5 / 2.0))
    assert ratios[1] == -math.inf
    with torch.no_grad():
        net[2].weight.zero_()
    net[2].weight.grad = torch.ones(1, 2)
    assert update_ratios(net, lr=0.1)[1] == math.inf
    with pytest.raises(ValueError, match="positive"):
        update_ratios(net, lr=0.0)
