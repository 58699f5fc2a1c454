"""Tests of d2lbn.models: LeNet and MLP layouts, normalization variants, initialization, counts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from d2lbn.models import ParameterCount, count_parameters, lenet, mlp, norm_layer
from d2lbn.norm import BatchNorm

NORMS = [None, "scratch", "torch", lambda c, d: nn.GroupNorm(1, c) if d == 4 else nn.LayerNorm(c)]
NORM_IDS = ["none", "scratch", "torch", "callable"]

# Parameters of the LeNet without normalization: conv1, conv2, fc1, fc2, fc3.
LENET_PARAMS = (6 * 25 + 6) + (16 * 6 * 25 + 16) + (256 * 120 + 120) + (120 * 84 + 84) + (84 * 10 + 10)
BN_FEATURES = 6 + 16 + 120 + 84


def names(net: nn.Module) -> list[str]:
    return [type(layer).__name__ for layer in net]


def is_norm(layer: nn.Module) -> bool:
    return isinstance(layer, (BatchNorm, nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm))


def weight_shapes(net: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    """Shapes of the convolution and linear parameters, in order."""
    return [
        (name, tuple(p.shape))
        for layer in net
        if isinstance(layer, (nn.Conv2d, nn.Linear))
        for name, p in layer.named_parameters()
    ]


# --------------------------------------------------------------------------------------- LeNet


@pytest.mark.parametrize("norm", NORMS, ids=NORM_IDS)
def test_lenet_maps_28x28_images_to_10_logits(norm):
    net = lenet(norm)
    out = net(torch.rand(5, 1, 28, 28))
    assert out.shape == (5, 10)
    assert torch.isfinite(out).all()


def test_lenet_layout_puts_batch_norm_after_each_layer_and_before_its_sigmoid():
    assert names(lenet("torch")) == [
        "Conv2d", "BatchNorm2d", "Sigmoid", "AvgPool2d",
        "Conv2d", "BatchNorm2d", "Sigmoid", "AvgPool2d", "Flatten",
        "Linear", "BatchNorm1d", "Sigmoid",
        "Linear", "BatchNorm1d", "Sigmoid",
        "Linear",
    ]  # fmt: skip
    net = lenet("scratch")
    bns = [(i, layer) for i, layer in enumerate(net) if isinstance(layer, BatchNorm)]
    assert [i for i, _ in bns] == [1, 5, 10, 13]
    assert [(bn.num_features, bn.num_dims) for _, bn in bns] == [(6, 4), (16, 4), (120, 2), (84, 2)]
    for i, _ in bns:
        assert isinstance(net[i - 1], (nn.Conv2d, nn.Linear)) and isinstance(net[i + 1], nn.Sigmoid)
    # chapters read the first layer's gamma and beta by index
    assert net[1].gamma.shape == net[1].beta.shape == (6,)


def test_lenet_without_norm_is_the_same_network_minus_the_norm_layers():
    with_bn = [n for n in names(lenet("torch")) if not n.startswith("BatchNorm")]
    assert names(lenet(None)) == with_bn


def test_lenet_parameter_counts():
    assert count_parameters(lenet()) == ParameterCount(LENET_PARAMS, 0)
    for norm in ("scratch", "torch"):
        # gamma and beta are trainable; running mean and variance are not; num_batches_tracked is left out
        assert count_parameters(lenet(norm)) == ParameterCount(LENET_PARAMS + 2 * BN_FEATURES, 2 * BN_FEATURES)


@pytest.mark.parametrize("norm", NORMS[1:], ids=NORM_IDS[1:])
def test_lenet_norm_variants_share_the_layer_parameter_shapes(norm):
    assert weight_shapes(lenet(norm)) == weight_shapes(lenet(None))
    norms = [layer for layer in lenet(norm) if is_norm(layer)]
    assert [sum(p.numel() for p in layer.parameters()) for layer in norms] == [2 * c for c in (6, 16, 120, 84)]


def test_lenet_norms_consume_no_randomness_so_a_seed_gives_the_same_weights():
    nets = []
    for norm in (None, "scratch", "torch"):
        torch.manual_seed(3)
        nets.append(lenet(norm))
    reference = [p for layer in nets[0] if isinstance(layer, (nn.Conv2d, nn.Linear)) for p in layer.parameters()]
    for net in nets[1:]:
        params = [p for layer in net if isinstance(layer, (nn.Conv2d, nn.Linear)) for p in layer.parameters()]
        assert all(torch.equal(a, b) for a, b in zip(params, reference, strict=True))


def test_scratch_and_torch_lenet_seeded_identically_agree_in_training_and_evaluation():
    torch.manual_seed(0)
    scratch = lenet("scratch")
    torch.manual_seed(0)
    builtin = lenet("torch")
    x = torch.rand(16, 1, 28, 28)
    torch.testing.assert_close(scratch(x), builtin(x), rtol=1e-5, atol=1e-5)
    scratch.eval(), builtin.eval()  # now with the running statistics the training pass updated
    torch.testing.assert_close(scratch(x), builtin(x), rtol=1e-5, atol=1e-5)
    # the scratch state dict loads into the built-in network and back
    builtin.load_state_dict(scratch.state_dict())
    scratch.load_state_dict(builtin.state_dict())


def test_lenet_weights_are_xavier_uniform():
    torch.manual_seed(0)
    net = lenet("torch")
    for layer in net:
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            fan_out, fan_in = layer.weight.shape[0], layer.weight[0].numel()
            receptive = layer.weight[0, 0].numel()
            bound = (6 / (fan_in + fan_out * receptive)) ** 0.5
            w = layer.weight.detach()
            assert w.abs().max() <= bound
            # a uniform draw on [-a, a] has standard deviation a / sqrt(3)
            assert w.std().item() == pytest.approx(bound / 3**0.5, rel=0.25)


def test_lenet_dropout_follows_the_hidden_fully_connected_sigmoids():
    net = lenet("torch", dropout=0.3)
    drops = [i for i, layer in enumerate(net) if isinstance(layer, nn.Dropout)]
    assert len(drops) == 2
    for i in drops:
        assert isinstance(net[i - 1], nn.Sigmoid) and isinstance(net[i + 1], nn.Linear)
        assert net[i].p == 0.3
    assert not any(isinstance(layer, nn.Dropout) for layer in lenet("torch"))
    # dropout is active in training and off in evaluation
    x = torch.rand(8, 1, 28, 28)
    net.train()
    torch.manual_seed(0)
    assert not torch.equal(net(x), net(x)), "two training passes drop different units"
    net.eval()
    assert torch.equal(net(x), net(x))


def test_lenet_callable_norm_receives_num_features_and_num_dims():
    calls = []

    def recording(num_features: int, num_dims: int) -> nn.Module:
        calls.append((num_features, num_dims))
        return nn.Identity()

    lenet(recording)
    assert calls == [(6, 4), (16, 4), (120, 2), (84, 2)]


# ----------------------------------------------------------------------------------------- MLP


def test_mlp_paper_mnist_network():
    net = mlp(784, [100, 100, 100], 10, norm="scratch", init_std=0.1)
    assert names(net) == ["Flatten"] + ["Linear", "BatchNorm", "Sigmoid"] * 3 + ["Linear"]
    assert net(torch.rand(60, 1, 28, 28)).shape == (60, 10)
    assert count_parameters(net).trainable == 784 * 100 + 100 + 2 * (100 * 100 + 100) + 100 * 10 + 10 + 3 * 200


def test_mlp_keras_example_counts_match_the_keras_summary():
    net = mlp(20, [64, 32], 1, activation="relu", norm="torch", flatten=False)
    assert names(net) == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "ReLU", "Linear"]
    # Keras: Total params 3,841; Trainable 3,649; Non-trainable 192
    count = count_parameters(net)
    assert count == ParameterCount(3649, 192)
    assert count.total == 3841
    assert net(torch.randn(4, 20)).shape == (4, 1)


@pytest.mark.parametrize(
    "activation, cls", [("sigmoid", nn.Sigmoid), ("relu", nn.ReLU), ("tanh", nn.Tanh), (nn.GELU, nn.GELU)]
)
def test_mlp_activations(activation, cls):
    net = mlp(3, [4, 5], 2, activation=activation)
    assert [type(layer) for layer in net if not isinstance(layer, (nn.Linear, nn.Flatten))] == [cls, cls]
    acts = [layer for layer in net if isinstance(layer, cls)]
    assert acts[0] is not acts[1]


def test_mlp_placement_after_puts_the_norm_after_the_activation():
    before = mlp(3, [4], 2, activation="relu", norm="torch", flatten=False)
    after = mlp(3, [4], 2, activation="relu", norm="torch", placement="after", flatten=False)
    assert names(before) == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert names(after) == ["Linear", "ReLU", "BatchNorm1d", "Linear"]


def test_mlp_without_norm_or_hidden_layers():
    assert names(mlp(3, [4, 4], 2, flatten=False)) == ["Linear", "Sigmoid", "Linear", "Sigmoid", "Linear"]
    assert names(mlp(784, [], 10)) == ["Flatten", "Linear"]  # softmax regression


def test_mlp_norm_variants_share_the_layer_parameter_shapes():
    shapes = [weight_shapes(mlp(10, [8, 6], 3, norm=norm)) for norm in NORMS]
    assert all(s == shapes[0] for s in shapes)


def test_mlp_init_std_draws_gaussian_weights_and_zero_biases():
    torch.manual_seed(0)
    net = mlp(500, [400], 300, init_std=0.05)
    for layer in (net[1], net[3]):
        assert torch.count_nonzero(layer.bias) == 0
        assert layer.weight.std().item() == pytest.approx(0.05, rel=0.02)
        assert layer.weight.mean().item() == pytest.approx(0.0, abs=0.002)
    default = mlp(500, [400], 300)
    assert torch.count_nonzero(default[1].bias) > 0  # PyTorch's default init leaves nonzero biases


def test_mlp_dropout_ends_each_hidden_layer():
    net = mlp(3, [4, 5], 2, norm="torch", dropout=0.5, flatten=False)
    assert names(net) == ["Linear", "BatchNorm1d", "Sigmoid", "Dropout"] * 2 + ["Linear"]


def test_count_parameters_counts_frozen_parameters_and_shared_ones_once():
    net = mlp(3, [4], 2, norm="torch", flatten=False)
    net[0].weight.requires_grad_(False)
    assert count_parameters(net) == ParameterCount(4 + 8 + 10, 12 + 8)
    shared = nn.Linear(3, 3)
    assert count_parameters(nn.Sequential(shared, shared)).trainable == 12


# -------------------------------------------------------------------------------------- errors


def test_unknown_norm_string_lists_the_valid_choices():
    for build in (lambda: lenet("batch"), lambda: mlp(3, [4], 2, norm="batch"), lambda: norm_layer("layer", 3, 2)):
        with pytest.raises(ValueError, match=r"unknown norm 'batch'|unknown norm 'layer'") as info:
            build()
        assert '"scratch"' in str(info.value) and '"torch"' in str(info.value) and "callable" in str(info.value)


def test_norm_of_the_wrong_type_or_a_callable_returning_a_non_module():
    with pytest.raises(TypeError, match="norm must be"):
        lenet(3)
    with pytest.raises(TypeError, match="must return an nn.Module"):
        lenet(lambda c, d: c)


def test_mlp_argument_errors():
    with pytest.raises(ValueError, match="unknown activation 'gelu'.*'sigmoid', 'relu', 'tanh'"):
        mlp(3, [4], 2, activation="gelu")
    with pytest.raises(ValueError, match="unknown placement 'middle'.*'before' or 'after'"):
        mlp(3, [4], 2, placement="middle")
    with pytest.raises(TypeError, match=r"hidden=\[100\]"):
        mlp(784, 100, 10)
    with pytest.raises(ValueError, match="positive integers"):
        mlp(784, [100, 0], 10)
    with pytest.raises(ValueError, match="init_std .*must be positive, got 0.0; use None for PyTorch's default"):
        mlp(3, [4], 2, init_std=0.0)
    for p in (-0.1, 1.0):
        with pytest.raises(ValueError, match=rf"dropout is the probability .* in \[0, 1\); got {p}"):
            mlp(3, [4], 2, dropout=p)
        with pytest.raises(ValueError, match=rf"dropout is the probability .* in \[0, 1\); got {p}"):
            lenet(dropout=p)
