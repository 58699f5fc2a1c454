"""d2lbn.variants against PyTorch: layer, group and instance norm give the same outputs,
gradients, running statistics and state_dict keys as torch.nn, and refuse bad input clearly."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn import functional as F

from d2lbn.variants import (
    GroupNorm,
    InstanceNorm,
    LayerNorm,
    group_norm,
    instance_norm,
    layer_norm,
    standardize,
)

FAST = settings(max_examples=40, deadline=None)


def randomize_affine(module: nn.Module) -> None:
    """Give a module's weight and bias (when it has them) values other than 1 and 0."""
    with torch.no_grad():
        if getattr(module, "weight", None) is not None:
            module.weight.uniform_(0.5, 2.0)
        if getattr(module, "bias", None) is not None:
            module.bias.uniform_(-1.0, 1.0)


def pair(ours: nn.Module, theirs: nn.Module, dtype: torch.dtype = torch.float32) -> tuple[nn.Module, nn.Module]:
    """Our module and PyTorch's with the same random parameters (loaded through the state_dict)."""
    theirs = theirs.to(dtype)
    randomize_affine(theirs)
    ours = ours.to(dtype)
    ours.load_state_dict(theirs.state_dict())  # strict: the keys and shapes must match
    return ours, theirs


def assert_same_step(
    ours: nn.Module, theirs: nn.Module, x: torch.Tensor, atol: float, rtol: float, grad_scale: float = 1.0
) -> None:
    """One forward and backward pass: outputs, input and parameter gradients, and buffers agree.

    The input gradient is a difference of terms of size |gamma| / std * |grad|, which cancel when
    a normalized set holds few values (with two, it is exactly 0 up to eps); ``grad_scale``
    (see :func:`term_size`) makes its tolerance relative to that size.
    """
    x1 = x.clone().requires_grad_()
    x2 = x.clone().requires_grad_()
    y1, y2 = ours(x1), theirs(x2)
    torch.testing.assert_close(y1, y2, atol=atol, rtol=rtol)
    grad = torch.randn_like(y1)
    y1.backward(grad)
    y2.backward(grad)
    grad_atol = atol * grad_scale * grad.abs().max().item()
    torch.testing.assert_close(x1.grad, x2.grad, atol=max(atol, grad_atol), rtol=rtol, msg="gradient of the input")
    theirs_params = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, theirs_params[name].grad, atol=atol, rtol=rtol, msg=f"gradient of {name}")
    theirs_buffers = dict(theirs.named_buffers())
    for name, b in ours.named_buffers():
        torch.testing.assert_close(b, theirs_buffers[name], atol=atol, rtol=rtol, msg=f"buffer {name}")


def term_size(module: nn.Module, sets: torch.Tensor) -> float:
    """|gamma| / std for the normalized set with the smallest spread; ``sets`` is (sets, values)."""
    std = sets.double().var(dim=1, unbiased=False).add(module.eps).sqrt().min().item()
    weight = getattr(module, "weight", None)
    gamma = 1.0 if weight is None else weight.abs().max().item()
    return max(1.0, gamma / std)


def some_input(shape, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    """Values with an offset and a spread far from 0 and 1, different per example and channel."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=dtype)
    scale = torch.rand(shape[:2], generator=g, dtype=dtype) * 3 + 0.5
    shift = torch.randn(shape[:2], generator=g, dtype=dtype) * 2
    view = shape[:2] + (1,) * (len(shape) - 2)
    return x * scale.view(view) + shift.view(view)


# ---------------------------------------------------------------------------- standardize


def test_standardize_gives_zero_mean_unit_variance_over_the_dims():
    x = some_input((4, 3, 5, 5), dtype=torch.float64)
    for dims in [(0, 2, 3), (1, 2, 3), (2, 3), (1,)]:
        y = standardize(x, dims, eps=0.0)
        torch.testing.assert_close(y.mean(dims), torch.zeros_like(y.mean(dims)), atol=1e-12, rtol=0)
        torch.testing.assert_close(y.var(dims, unbiased=False), torch.ones_like(y.mean(dims)))


# ---------------------------------------------------------------------------- layer norm


@pytest.mark.parametrize(
    "shape, normalized_shape",
    [((8, 5), 5), ((8, 5), (5,)), ((4, 3, 6, 6), (3, 6, 6)), ((4, 3, 6, 6), (6, 6)), ((2, 7, 16), 16), ((3, 2), 2)],
)
@pytest.mark.parametrize("elementwise_affine, bias", [(True, True), (True, False), (False, True)])
def test_layer_norm_matches_torch(shape, normalized_shape, elementwise_affine, bias):
    torch.manual_seed(0)
    ours, theirs = pair(
        LayerNorm(normalized_shape, elementwise_affine=elementwise_affine, bias=bias),
        nn.LayerNorm(normalized_shape, elementwise_affine=elementwise_affine, bias=bias),
    )
    assert sorted(ours.state_dict()) == sorted(theirs.state_dict())
    assert_same_step(ours, theirs, some_input(shape), atol=1e-5, rtol=1e-4)
    ours.eval(), theirs.eval()
    assert_same_step(ours, theirs, some_input(shape, seed=1), atol=1e-5, rtol=1e-4)


@FAST
@given(
    leading=st.lists(st.integers(1, 4), min_size=1, max_size=2),
    trailing=st.lists(st.integers(1, 5), min_size=1, max_size=3),
    eps=st.sampled_from([1e-5, 1e-3, 0.1]),
    seed=st.integers(0, 2**16),
)
def test_layer_norm_matches_torch_on_random_shapes(leading, trailing, eps, seed):
    torch.manual_seed(seed)
    ours, theirs = pair(LayerNorm(trailing, eps=eps), nn.LayerNorm(trailing, eps=eps), dtype=torch.float64)
    assert_same_step(ours, theirs, some_input(tuple(leading + trailing), seed, torch.float64), atol=1e-10, rtol=1e-8)


def test_layer_norm_function_matches_torch_and_accepts_no_affine():
    x = some_input((5, 4, 3))
    w, b = torch.rand(4, 3) + 0.5, torch.randn(4, 3)
    torch.testing.assert_close(layer_norm(x, (4, 3), w, b), F.layer_norm(x, (4, 3), w, b))
    torch.testing.assert_close(layer_norm(x, 3), F.layer_norm(x, (3,)))


@pytest.mark.parametrize(
    "normalized_shape, shape",
    [(4, (2, 3)), ((3, 5), (2, 3, 4)), ((2, 3, 4), (3, 4))],
)
def test_layer_norm_refuses_an_input_whose_last_dims_are_not_normalized_shape(normalized_shape, shape):
    with pytest.raises(ValueError, match="normalized_shape must be the last dimensions"):
        LayerNorm(normalized_shape)(torch.randn(shape))


@pytest.mark.parametrize("bad", [0, -3, (), (4, 0)])
def test_layer_norm_refuses_a_bad_normalized_shape(bad):
    with pytest.raises(ValueError, match=r"normalized_shape must be a positive int .* for an \(N, C, H, W\) input use \(C, H, W\)"):
        LayerNorm(bad)


@pytest.mark.parametrize("bad", [2.5, True])
def test_layer_norm_refuses_a_normalized_shape_that_is_not_integers(bad):
    with pytest.raises(TypeError, match=f"normalized_shape must be an int or a sequence of ints, got {type(bad).__name__}"):
        LayerNorm(bad)


def test_layer_norm_function_refuses_parameters_of_the_wrong_shape():
    with pytest.raises(ValueError, match="weight must have shape"):
        layer_norm(torch.randn(2, 4), 4, weight=torch.ones(3))


# ---------------------------------------------------------------------------- group norm


@pytest.mark.parametrize(
    "shape, num_groups",
    [((4, 6, 5, 5), 2), ((4, 6, 5, 5), 1), ((4, 6, 5, 5), 6), ((2, 16, 3, 3), 4), ((8, 12), 3), ((3, 8, 10), 2)],
)
@pytest.mark.parametrize("affine", [True, False])
def test_group_norm_matches_torch(shape, num_groups, affine):
    torch.manual_seed(0)
    ours, theirs = pair(GroupNorm(num_groups, shape[1], affine=affine), nn.GroupNorm(num_groups, shape[1], affine=affine))
    assert sorted(ours.state_dict()) == sorted(theirs.state_dict())
    for seed in (0, 1):
        x = some_input(shape, seed)
        scale = term_size(theirs, x.reshape(shape[0] * num_groups, -1))
        assert_same_step(ours, theirs, x, atol=1e-5, rtol=1e-4, grad_scale=scale)
        ours.eval(), theirs.eval()


@FAST
@given(
    n=st.integers(1, 4),
    groups=st.integers(1, 4),
    per_group=st.integers(1, 4),
    spatial=st.lists(st.integers(1, 5), min_size=0, max_size=2),
    seed=st.integers(0, 2**16),
)
def test_group_norm_matches_torch_on_random_shapes(n, groups, per_group, spatial, seed):
    c = groups * per_group
    assume(per_group * math.prod(spatial) > 1)  # groups of one value: see the test after this one
    torch.manual_seed(seed)
    ours, theirs = pair(GroupNorm(groups, c), nn.GroupNorm(groups, c), dtype=torch.float64)
    assert_same_step(ours, theirs, some_input((n, c, *spatial), seed, torch.float64), atol=1e-10, rtol=1e-8)


def test_group_norm_refuses_groups_of_one_value_for_any_batch_size():
    # PyTorch refuses a single example; with more it returns bias, since x - mean is 0.
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        nn.GroupNorm(4, 4)(torch.randn(1, 4))
    for n in (1, 3):
        with pytest.raises(ValueError, match="holds a single value.*Use fewer groups, or layer norm"):
            GroupNorm(4, 4)(torch.randn(n, 4))
        with pytest.raises(ValueError, match="holds a single value.*Use fewer groups, or layer norm"):
            group_norm(torch.randn(n, 4, 1, 1), 4)
    torch.testing.assert_close(GroupNorm(2, 4)(torch.tensor([[1.0, 3.0, 10.0, 30.0]])),
                               torch.tensor([[-1.0, 1.0, -1.0, 1.0]]), atol=1e-5, rtol=0)


@pytest.mark.parametrize("shape", [(0, 6, 5, 5), (0, 6)])
def test_group_norm_of_an_empty_batch_is_empty_like_torch(shape):
    ours, theirs = pair(GroupNorm(2, 6), nn.GroupNorm(2, 6))
    x = torch.randn(shape, requires_grad=True)
    y = ours(x)
    assert y.shape == theirs(x).shape == x.shape
    y.sum().backward()
    assert torch.equal(ours.weight.grad, torch.zeros(6))


def test_group_norm_without_bias_matches_torch():
    ours, theirs = pair(GroupNorm(2, 4, bias=False), nn.GroupNorm(2, 4, bias=False))
    assert ours.bias is None
    assert_same_step(ours, theirs, some_input((3, 4, 2, 2)), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("num_groups, num_channels", [(4, 6), (3, 16), (32, 16)])
def test_group_norm_refuses_channels_not_divisible_by_groups(num_groups, num_channels):
    with pytest.raises(ValueError, match=f"num_channels={num_channels} is not divisible by num_groups={num_groups}"):
        GroupNorm(num_groups, num_channels)
    with pytest.raises(ValueError, match=f"cannot be split into num_groups={num_groups} equal groups; pick num_groups among the divisors of {num_channels}"):
        group_norm(torch.randn(2, num_channels, 3, 3), num_groups)


def test_group_norm_refuses_bad_sizes_and_inputs():
    with pytest.raises(ValueError, match="num_groups must be a positive int"):
        GroupNorm(0, 4)
    with pytest.raises(ValueError, match="expects 6 channels in dimension 1, got 4"):
        GroupNorm(2, 6)(torch.randn(2, 4, 3, 3))
    with pytest.raises(ValueError, match="unsqueeze"):
        GroupNorm(2, 6)(torch.randn(6))
    with pytest.raises(ValueError, match="eps must be non-negative"):
        GroupNorm(2, 6, eps=-1.0)


# ---------------------------------------------------------------------------- instance norm


@pytest.mark.parametrize("shape", [(4, 3, 5, 5), (1, 6, 4, 7), (8, 2, 2, 1)])
@pytest.mark.parametrize("affine", [True, False])
def test_instance_norm_matches_torch_without_running_stats(shape, affine):
    torch.manual_seed(0)
    ours, theirs = pair(InstanceNorm(shape[1], affine=affine), nn.InstanceNorm2d(shape[1], affine=affine))
    assert sorted(ours.state_dict()) == sorted(theirs.state_dict())
    for seed in (0, 1):
        x = some_input(shape, seed)
        scale = term_size(theirs, x.reshape(shape[0] * shape[1], -1))
        assert_same_step(ours, theirs, x, atol=1e-5, rtol=1e-4, grad_scale=scale)
        ours.eval(), theirs.eval()


@pytest.mark.parametrize("momentum", [0.1, 0.5, 1.0])
@pytest.mark.parametrize("affine", [True, False])
def test_instance_norm_running_stats_match_torch_over_training_and_eval_steps(momentum, affine):
    torch.manual_seed(0)
    ours, theirs = pair(
        InstanceNorm(3, momentum=momentum, affine=affine, track_running_stats=True),
        nn.InstanceNorm2d(3, momentum=momentum, affine=affine, track_running_stats=True),
    )
    assert sorted(ours.state_dict()) == sorted(theirs.state_dict())
    for step in range(4):  # statistics that move from step to step
        assert_same_step(ours, theirs, some_input((5, 3, 4, 6), seed=step) * (step + 1) + step, atol=1e-5, rtol=1e-4)
    assert not torch.equal(ours.running_mean, torch.zeros(3))
    assert int(ours.num_batches_tracked) == int(theirs.num_batches_tracked) == 0  # as PyTorch: never counted
    ours.eval(), theirs.eval()
    assert_same_step(ours, theirs, some_input((2, 3, 4, 6), seed=9), atol=1e-5, rtol=1e-4)


@FAST
@given(
    n=st.integers(1, 4),
    c=st.integers(1, 4),
    h=st.integers(1, 5),
    w=st.integers(2, 5),
    track=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_instance_norm_matches_torch_on_random_shapes(n, c, h, w, track, seed):
    torch.manual_seed(seed)
    ours, theirs = pair(
        InstanceNorm(c, affine=True, track_running_stats=track),
        nn.InstanceNorm2d(c, affine=True, track_running_stats=track),
        dtype=torch.float64,
    )
    assert_same_step(ours, theirs, some_input((n, c, h, w), seed, torch.float64), atol=1e-10, rtol=1e-8)


def test_instance_norm_function_matches_torch_in_both_modes():
    x = some_input((4, 3, 5, 5))
    w, b = torch.rand(3) + 0.5, torch.randn(3)
    ours_mean, ours_var = torch.zeros(3), torch.ones(3)
    theirs_mean, theirs_var = torch.zeros(3), torch.ones(3)
    y1 = instance_norm(x, ours_mean, ours_var, w, b, use_input_stats=True, momentum=0.3)
    y2 = F.instance_norm(x, theirs_mean, theirs_var, w, b, use_input_stats=True, momentum=0.3)
    torch.testing.assert_close(y1, y2)
    torch.testing.assert_close(ours_mean, theirs_mean)
    torch.testing.assert_close(ours_var, theirs_var)
    torch.testing.assert_close(
        instance_norm(x, ours_mean, ours_var, w, b, use_input_stats=False),
        F.instance_norm(x, theirs_mean, theirs_var, w, b, use_input_stats=False),
    )
    torch.testing.assert_close(instance_norm(x[..., 0]), F.instance_norm(x[..., 0]))  # (N, C, L) works too


def test_instance_norm_refuses_unsupported_options_and_bad_inputs():
    with pytest.raises(ValueError, match=r"momentum=None \(a cumulative average\) is not supported.*Pass a float in \[0, 1\]"):
        InstanceNorm(3, momentum=None)
    with pytest.raises(ValueError, match="momentum must be in"):
        InstanceNorm(3, momentum=1.5)
    with pytest.raises(ValueError, match="unsqueeze"):
        InstanceNorm(3)(torch.randn(3, 5, 5))
    with pytest.raises(ValueError, match="use LayerNorm"):
        InstanceNorm(3)(torch.randn(4, 3))
    with pytest.raises(ValueError, match="expects 3 channels in dimension 1, got 4"):
        InstanceNorm(3)(torch.randn(2, 4, 5, 5))
    with pytest.raises(ValueError, match="Expected more than 1 spatial element when training"):
        InstanceNorm(3)(torch.randn(2, 3, 1, 1))
    with pytest.raises(ValueError, match="running_mean and running_var must be given"):
        instance_norm(torch.randn(2, 3, 4, 4), use_input_stats=False)


def test_instance_norm_with_one_position_per_channel_works_in_eval_with_running_stats():
    ours, theirs = pair(InstanceNorm(3, track_running_stats=True), nn.InstanceNorm2d(3, track_running_stats=True))
    ours.eval(), theirs.eval()
    assert_same_step(ours, theirs, some_input((2, 3, 1, 1)), atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------------------- properties


@pytest.mark.parametrize("affine", [True, False])
def test_group_norm_with_one_group_is_layer_norm_and_with_one_channel_per_group_is_instance_norm(affine):
    x = some_input((4, 6, 5, 5), dtype=torch.float64)
    torch.testing.assert_close(
        GroupNorm(1, 6, affine=affine).double()(x), LayerNorm((6, 5, 5), elementwise_affine=affine).double()(x)
    )
    torch.testing.assert_close(GroupNorm(6, 6, affine=affine).double()(x), InstanceNorm(6, affine=affine).double()(x))


VARIANTS = {
    "layer": lambda: LayerNorm((6, 5, 5)),
    "group": lambda: GroupNorm(3, 6),
    "instance": lambda: InstanceNorm(6, affine=True),
}


@pytest.mark.parametrize("name", sorted(VARIANTS))
@FAST
@given(batch=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_an_example_output_does_not_depend_on_the_rest_of_the_batch_nor_on_the_mode(name, batch, seed):
    layer = VARIANTS[name]()
    randomize_affine(layer)
    g = torch.Generator().manual_seed(seed)
    x = some_input((1, 6, 5, 5), seed)
    others = torch.randn((batch, 6, 5, 5), generator=g) * 5
    alone = layer(x)
    in_batch = layer(torch.cat([x, others]))[:1]
    torch.testing.assert_close(in_batch, alone, atol=1e-6, rtol=1e-5)
    layer.eval()
    torch.testing.assert_close(layer(torch.cat([others, x]))[-1:], alone, atol=1e-6, rtol=1e-5)


def test_the_output_is_invariant_to_scaling_and_shifting_each_example():
    x = some_input((3, 6, 4, 4), dtype=torch.float64)
    scale = torch.tensor([0.1, 3.0, 50.0], dtype=torch.float64).view(3, 1, 1, 1)
    for layer in (LayerNorm((6, 4, 4), eps=0.0), GroupNorm(2, 6, eps=0.0), InstanceNorm(6, eps=0.0)):
        layer = layer.double()
        torch.testing.assert_close(layer(x * scale + 7.0), layer(x))


def test_modules_print_like_torch():
    assert repr(LayerNorm(4)) == "LayerNorm((4,), eps=1e-05, elementwise_affine=True, bias=True)"
    assert repr(GroupNorm(2, 4)) == "GroupNorm(2, 4, eps=1e-05, affine=True, bias=True)"
    assert repr(InstanceNorm(3)) == "InstanceNorm(3, eps=1e-05, momentum=0.1, affine=False, track_running_stats=False)"


TORCH_VARIANTS = {
    "layer": (lambda: LayerNorm((6, 5, 5)), lambda: nn.LayerNorm((6, 5, 5))),
    "group": (lambda: GroupNorm(3, 6), lambda: nn.GroupNorm(3, 6)),
    "instance": (
        lambda: InstanceNorm(6, affine=True, track_running_stats=True),
        lambda: nn.InstanceNorm2d(6, affine=True, track_running_stats=True),
    ),
}


@pytest.mark.parametrize("name", sorted(TORCH_VARIANTS))
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_keeps_its_dtype_and_does_not_overflow_like_torch(name, dtype):
    """Values a few hundred from the mean overflow float16 when squared: the statistics use float32."""
    torch.manual_seed(14)
    ours, theirs = pair(*(make() for make in TORCH_VARIANTS[name]), dtype=dtype)
    x = (torch.randn(4, 6, 5, 5) * 300 + 50).to(dtype)
    for training in (True, False):
        ours.train(training)
        theirs.train(training)
        y1, y2 = ours(x), theirs(x)
        assert y1.dtype == y2.dtype == dtype
        assert torch.isfinite(y1).all()
        torch.testing.assert_close(y1.float(), y2.float(), atol=0.05, rtol=0.02)


@pytest.mark.parametrize("name", sorted(TORCH_VARIANTS))
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_output_is_rounded_once_like_torch(name, dtype):
    """Standardizing, scaling and shifting all happen in float32, and only the output is rounded
    to the half dtype: (almost) every value is the exact result rounded, as with torch."""
    torch.manual_seed(15)
    ours, theirs = pair(*(make() for make in TORCH_VARIANTS[name]), dtype=dtype)
    if name == "instance":  # running statistics away from 0 and 1, for evaluation mode
        for bn in (ours, theirs):
            bn.running_mean.copy_(torch.linspace(-1.5, 2.0, 6))
            bn.running_var.copy_(torch.linspace(0.3, 3.0, 6))
    x = (torch.randn(4, 6, 5, 5) * 2 + 0.5).to(dtype)
    exact_model = copy.deepcopy(theirs).double()
    for training in (False, True):  # evaluation first, before training moves the running statistics
        for module in (ours, theirs, exact_model):
            module.train(training)
        with torch.no_grad():
            exact = exact_model(x.double()).to(dtype)
            ours_exact = (ours(x) == exact).double().mean().item()
            torch_exact = (theirs(x) == exact).double().mean().item()
        assert ours_exact > 0.99 and ours_exact >= torch_exact - 0.005, (training, ours_exact, torch_exact)
