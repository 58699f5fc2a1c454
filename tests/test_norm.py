"""d2lbn.norm against PyTorch: same outputs, gradients, running statistics and errors."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from d2lbn.norm import BatchNorm, BatchNormFunction, _channel_sum, batch_norm, fold_batch_norm

TORCH_BN = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d}


def make_pair(num_features: int, num_dims: int, **kwargs) -> tuple[BatchNorm, nn.Module]:
    """A from-scratch batch norm and PyTorch's, with the same random gamma and beta."""
    ours = BatchNorm(num_features, num_dims, **kwargs)
    kwargs.pop("manual_backward", None)
    theirs = TORCH_BN[num_dims](num_features, **kwargs)
    if theirs.affine:
        with torch.no_grad():
            theirs.weight.uniform_(0.5, 2.0)
            theirs.bias.uniform_(-1.0, 1.0)
    ours.load_state_dict(theirs.state_dict())
    return ours, theirs


def assert_same_step(
    ours: nn.Module, theirs: nn.Module, x: torch.Tensor, atol: float = 1e-5, rtol: float = 1e-5
) -> None:
    """One forward and backward pass: outputs, input and parameter gradients, and buffers agree."""
    x1 = x.clone().requires_grad_()
    x2 = x.clone().requires_grad_()
    y1, y2 = ours(x1), theirs(x2)
    torch.testing.assert_close(y1, y2, atol=atol, rtol=rtol)
    grad = torch.randn_like(y1)
    y1.backward(grad)
    y2.backward(grad)
    # The input gradient is a difference of terms of size |gamma| / std * |grad|, which can cancel
    # (with two examples it is exactly 0 up to eps), so its error is relative to that size.
    dims = (0,) + tuple(range(2, x.dim()))
    std = x.double().var(dim=dims, unbiased=False).add(theirs.eps).sqrt().min().item()
    gamma = theirs.weight.abs().max().item() if theirs.affine else 1.0
    grad_atol = atol * max(1.0, gamma / std * grad.abs().max().item())
    torch.testing.assert_close(x1.grad, x2.grad, atol=grad_atol, rtol=10 * rtol)
    for (name, p1), (_, p2) in zip(ours.named_parameters(), theirs.named_parameters()):
        torch.testing.assert_close(p1.grad, p2.grad, atol=atol, rtol=10 * rtol, msg=f"gradient of {name}")
    # A float32 mean of values of size |x| is rounded to about |x| * 2^-24 whatever its own size (a
    # mean near 0 of values near 40 too), and a variance to about |x|^2 * 2^-24; both
    # implementations round, in different orders, so the buffers agree to that, and to 1e-6 for
    # inputs of size 1 or less.
    size = max(1.0, x.abs().max().item())
    buffer_atol = {"running_mean": 1e-6 * size, "running_var": 1e-6 * size**2}
    for (name, b1), (_, b2) in zip(ours.named_buffers(), theirs.named_buffers()):
        torch.testing.assert_close(b1, b2, atol=buffer_atol.get(name, 1e-6), rtol=rtol, msg=f"buffer {name}")


SHAPES = [(16, 5), (7, 3, 11), (8, 3, 6, 6), (2, 4, 1, 1), (32, 16, 4, 4)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("momentum", [0.1, 0.5, 1.0, None])
@pytest.mark.parametrize("manual_backward", [True, False])
def test_matches_torch_over_several_training_and_eval_steps(shape, momentum, manual_backward):
    torch.manual_seed(0)
    ours, theirs = make_pair(shape[1], len(shape), momentum=momentum, manual_backward=manual_backward)
    for step in range(4):
        x = torch.randn(shape) * (step + 1) + 3 * step  # statistics that move from step to step
        assert_same_step(ours, theirs, x)
    assert int(ours.num_batches_tracked) == 4
    ours.eval()
    theirs.eval()
    assert_same_step(ours, theirs, torch.randn(shape) * 2 + 1)
    assert int(ours.num_batches_tracked) == 4, "evaluation must not count batches"


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("track_running_stats", [True, False])
@pytest.mark.parametrize("training", [True, False])
def test_matches_torch_with_affine_and_tracking_options(affine, track_running_stats, training):
    torch.manual_seed(1)
    ours, theirs = make_pair(4, 4, affine=affine, track_running_stats=track_running_stats, eps=1e-3)
    ours.train(training)
    theirs.train(training)
    assert_same_step(ours, theirs, torch.randn(6, 4, 3, 3) * 5 - 2)
    assert sorted(ours.state_dict()) == sorted(theirs.state_dict())


@pytest.mark.parametrize("how", ["flag turned off", "buffers set to None"])
def test_evaluation_mode_follows_the_buffers_like_torch(how):
    """PyTorch uses batch statistics in eval only when the running buffers are None; turning
    track_running_stats off after training keeps evaluating with the buffers."""
    torch.manual_seed(2)
    ours, theirs = make_pair(3, 2)
    x = torch.randn(16, 3) * 3 + 1
    assert_same_step(ours, theirs, x)  # running statistics away from their initial 0 and 1
    for bn in (ours, theirs):
        bn.eval()
        if how == "flag turned off":
            bn.track_running_stats = False
        else:
            bn.running_mean = bn.running_var = None
    assert_same_step(ours, theirs, x)
    ours.train(), theirs.train()
    assert_same_step(ours, theirs, x)  # training with the flag off or without buffers: nothing to update


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(2, 6),
    c=st.integers(1, 5),
    spatial=st.sampled_from([(), (1,), (3,), (1, 1), (2, 3), (5, 4)]),
    momentum=st.floats(0.0, 1.0),
    eps=st.sampled_from([1e-5, 1e-3, 0.1]),
    scale=st.floats(0.01, 100.0),
    shift=st.floats(-50.0, 50.0),
    seed=st.integers(0, 2**16),
)
# found by hypothesis in CI: a mean near 0 (0.0149) of values near 40, rounded 1.4e-6 apart
@example(n=6, c=3, spatial=(), momentum=1.0, eps=1e-5, scale=32.0, shift=0.0, seed=55572)
def test_property_matches_torch_for_any_shape_and_hyperparameters(n, c, spatial, momentum, eps, scale, shift, seed):
    torch.manual_seed(seed)
    shape = (n, c) + spatial
    ours, theirs = make_pair(c, len(shape), momentum=momentum, eps=eps)
    x = (torch.randn(shape, dtype=torch.float64) * scale + shift).float()
    # float32 loses about |shift| / scale times more digits in x - mean, in both implementations
    conditioning = 1.0 + abs(shift) / scale
    assert_same_step(ours, theirs, x, atol=1e-5 * conditioning, rtol=1e-5 * conditioning)


@pytest.mark.parametrize("shape", [(7, 3), (7, 3, 5), (7, 3, 4, 5), (2, 3, 2, 4, 5)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_channel_sum_in_two_steps_is_the_per_channel_sum(shape, channels_last):
    torch.manual_seed(0)
    t = torch.randn(shape, dtype=torch.float64)
    if channels_last and len(shape) == 4:
        t = t.to(memory_format=torch.channels_last)
    expected = t.sum(dim=(0,) + tuple(range(2, t.dim())), keepdim=True)
    got = _channel_sum(t)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_functional_matches_torch_functional():
    torch.manual_seed(2)
    x = torch.randn(10, 3, 4, 4) * 3 + 1
    weight, bias = torch.rand(3) + 0.5, torch.randn(3)
    for training in (True, False):
        rm1, rv1 = torch.randn(3), torch.rand(3) + 0.5
        rm2, rv2 = rm1.clone(), rv1.clone()
        y1 = batch_norm(x, rm1, rv1, weight, bias, training=training, momentum=0.3, eps=1e-4)
        y2 = F.batch_norm(x, rm2, rv2, weight, bias, training=training, momentum=0.3, eps=1e-4)
        torch.testing.assert_close(y1, y2)
        torch.testing.assert_close(rm1, rm2)
        torch.testing.assert_close(rv1, rv2)


def test_running_var_uses_unbiased_batch_variance():
    x = torch.tensor([[1.0], [2.0], [3.0], [6.0]])  # mean 3, biased var 3.5, unbiased var 14/3
    rm, rv = torch.zeros(1), torch.ones(1)
    batch_norm(x, rm, rv, training=True, momentum=1.0)
    assert rm.item() == pytest.approx(3.0)
    assert rv.item() == pytest.approx(14 / 3)


def test_momentum_none_is_a_cumulative_average():
    torch.manual_seed(3)
    bn = BatchNorm(2, num_dims=2, momentum=None)
    batches = [torch.randn(5, 2) * (i + 1) + i for i in range(5)]
    for x in batches:
        bn(x)
    expected_mean = torch.stack([x.mean(0) for x in batches]).mean(0)
    expected_var = torch.stack([x.var(0, unbiased=True) for x in batches]).mean(0)
    torch.testing.assert_close(bn.running_mean, expected_mean)
    torch.testing.assert_close(bn.running_var, expected_var)


def test_mode_follows_self_training_not_grad_mode():
    torch.manual_seed(4)
    bn = BatchNorm(3, num_dims=2)
    x = torch.randn(8, 3) * 4 + 2
    with torch.no_grad():  # d2l's version would switch to prediction here
        y = bn(x)
    torch.testing.assert_close(y.mean(0), torch.zeros(3), atol=1e-6, rtol=0)
    assert int(bn.num_batches_tracked) == 1
    bn.eval()
    running = bn.running_mean.clone()
    y = bn(x)  # evaluation with gradients enabled still uses the running statistics
    torch.testing.assert_close(bn.running_mean, running)
    assert not torch.allclose(y.mean(0), torch.zeros(3), atol=1e-3)


def test_identity_is_recoverable_with_gamma_std_and_beta_mean():
    torch.manual_seed(5)
    x = torch.randn(64, 3, 5, 5) * 2 + 7
    bn = BatchNorm(3, num_dims=4, eps=0.0)
    with torch.no_grad():
        bn.gamma.copy_(x.var(dim=(0, 2, 3), unbiased=False).sqrt())
        bn.beta.copy_(x.mean(dim=(0, 2, 3)))
    torch.testing.assert_close(bn(x), x, atol=1e-4, rtol=1e-5)


def test_gamma_and_beta_are_the_weight_and_bias():
    bn = BatchNorm(4, num_dims=2)
    assert bn.gamma is bn.weight and bn.beta is bn.bias
    assert BatchNorm(4, num_dims=2, affine=False).gamma is None


def test_state_dict_loads_both_ways():
    torch.manual_seed(6)
    theirs = nn.BatchNorm2d(5)
    theirs(torch.randn(4, 5, 3, 3))  # non-trivial running statistics
    ours = BatchNorm(5, num_dims=4)
    ours.load_state_dict(theirs.state_dict())
    back = nn.BatchNorm2d(5)
    back.load_state_dict(ours.state_dict())
    for key, value in theirs.state_dict().items():
        torch.testing.assert_close(back.state_dict()[key], value)
        assert ours.state_dict()[key].dtype == value.dtype


def test_state_dict_without_num_batches_tracked_loads_as_in_torch():
    """Checkpoints from before PyTorch 0.4.1 (or plain dicts) have no batch count; it starts at 0."""
    saved = {k: v for k, v in nn.BatchNorm2d(5).state_dict().items() if k != "num_batches_tracked"}
    ours, theirs = BatchNorm(5, num_dims=4), nn.BatchNorm2d(5)
    ours.load_state_dict(saved)
    theirs.load_state_dict(saved)
    assert int(ours.num_batches_tracked) == int(theirs.num_batches_tracked) == 0
    current = ours.state_dict()  # version 2: the count must be there
    del current["num_batches_tracked"]
    with pytest.raises(RuntimeError, match="num_batches_tracked"):
        BatchNorm(5, num_dims=4).load_state_dict(current)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("manual_backward", [True, False])
def test_empty_batch_leaves_the_running_statistics_alone_like_torch(training, manual_backward):
    ours, theirs = make_pair(3, 4, manual_backward=manual_backward)
    ours.train(training)
    theirs.train(training)
    x = torch.randn(0, 3, 2, 2, requires_grad=True)
    y1, y2 = ours(x), theirs(x)
    assert y1.shape == y2.shape == x.shape
    for (name, b1), (_, b2) in zip(ours.named_buffers(), theirs.named_buffers()):
        assert torch.equal(b1, b2), name
    assert not ours.running_mean.isnan().any()
    y1.sum().backward()
    y2.sum().backward()
    for p1, p2 in zip(ours.parameters(), theirs.parameters()):  # zero, not None, gradients
        assert p1.grad is not None and torch.equal(p1.grad, p2.grad)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("manual_backward", [True, False])
def test_half_precision_statistics_are_computed_in_float32_like_torch(dtype, manual_backward):
    """Values a few hundred from the mean overflow float16 when squared; torch accumulates in float32."""
    torch.manual_seed(12)
    ours, theirs = make_pair(3, 4, manual_backward=manual_backward)
    ours, theirs = ours.to(dtype), theirs.to(dtype)
    x = (torch.randn(32, 3, 8, 8) * 300).to(dtype)
    y1, y2 = ours(x), theirs(x)
    assert y1.dtype == y2.dtype == dtype
    torch.testing.assert_close(y1.float(), y2.float(), atol=0.05, rtol=0.02)
    assert torch.isfinite(ours.running_var).all()
    torch.testing.assert_close(ours.running_var.float(), theirs.running_var.float(), rtol=0.01, atol=0)
    ours.eval()
    theirs.eval()
    assert ours(x).dtype == theirs(x).dtype == dtype


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_prediction_rounds_once_like_torch(dtype):
    """A half model in eval mode computes scale and shift in float32 and rounds only the output,
    so (almost) every value is the exact result rounded to the dtype, as with torch."""
    torch.manual_seed(14)
    ours, theirs = make_pair(3, 4)
    with torch.no_grad():
        for bn in (ours, theirs):
            bn.running_mean.copy_(torch.tensor([0.3, -1.2, 2.0]))
            bn.running_var.copy_(torch.tensor([0.5, 2.0, 3.3]))
            bn.weight.copy_(torch.tensor([1.3, 0.7, -0.4]))
            bn.bias.copy_(torch.tensor([0.1, -0.2, 0.5]))
    ours, theirs = ours.to(dtype).eval(), theirs.to(dtype).eval()
    x = (torch.randn(64, 3, 8, 8) * 2).to(dtype)
    p = [t.double() for t in (theirs.running_mean, theirs.running_var, theirs.weight, theirs.bias)]
    exact = F.batch_norm(x.double(), p[0], p[1], p[2], p[3], False, 0.1, 1e-5).to(dtype)
    with torch.no_grad():
        ours_exact, torch_exact = (ours(x) == exact).double().mean(), (theirs(x) == exact).double().mean()
    assert ours_exact > 0.999 and ours_exact >= torch_exact - 0.001, (ours_exact, torch_exact)


@pytest.mark.parametrize("manual_backward", [True, False])
def test_mixed_precision_under_autocast_trains_like_torch(manual_backward):
    """Under CPU autocast a convolution returns bfloat16 into a batch norm whose parameters are float32."""
    torch.manual_seed(13)
    ours, theirs = make_pair(4, 4, manual_backward=manual_backward)
    conv = nn.Conv2d(1, 4, 3)
    x = torch.randn(8, 1, 10, 10)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y1, y2 = ours(conv(x)), theirs(conv(x))
    assert y1.dtype == y2.dtype == torch.bfloat16
    torch.testing.assert_close(y1.float(), y2.float(), atol=0.03, rtol=0.02)
    (y1.float().square().sum()).backward()
    assert ours.weight.grad.dtype == torch.float32 and conv.weight.grad.dtype == torch.float32
    assert ours.running_mean.dtype == torch.float32
    torch.testing.assert_close(ours.running_mean, theirs.running_mean, atol=1e-3, rtol=1e-2)


@pytest.mark.parametrize("layout", ["channels_last", "non-contiguous", "float64"])
@pytest.mark.parametrize("manual_backward", [True, False])
def test_matches_torch_on_other_memory_layouts_and_float64(layout, manual_backward):
    torch.manual_seed(12)
    dtype = torch.float64 if layout == "float64" else torch.float32
    ours, theirs = make_pair(4, 4, manual_backward=manual_backward)
    ours.to(dtype), theirs.to(dtype)
    for step in range(3):
        x = (torch.randn(6, 4, 5, 7, dtype=dtype) * (step + 1) + step)
        if layout == "channels_last":
            x = x.contiguous(memory_format=torch.channels_last)
        elif layout == "non-contiguous":
            x = torch.randn(6, 7, 4, 5, dtype=dtype).transpose(1, 3).transpose(1, 2) * (step + 1) + step
            assert x.shape == (6, 4, 5, 7) and not x.is_contiguous()
        tol = 1e-12 if dtype == torch.float64 else 1e-5
        assert_same_step(ours, theirs, x, atol=tol, rtol=tol)
    ours.eval(), theirs.eval()
    assert_same_step(ours, theirs, x, atol=tol, rtol=tol)


def test_dtype_and_device_arguments():
    bn = BatchNorm(3, num_dims=2, dtype=torch.float64, device="cpu")
    assert bn.weight.dtype == torch.float64 and bn.running_var.dtype == torch.float64
    assert bn.num_batches_tracked.dtype == torch.long
    assert bn(torch.randn(4, 3, dtype=torch.float64)).dtype == torch.float64


def test_reset_running_stats_and_parameters():
    bn = BatchNorm(3, num_dims=2)
    bn(torch.randn(5, 3) + 4)
    with torch.no_grad():
        bn.gamma.mul_(3)
    bn.reset_parameters()
    fresh = BatchNorm(3, num_dims=2)
    for key, value in fresh.state_dict().items():
        torch.testing.assert_close(bn.state_dict()[key], value)


def test_repr_names_the_hyperparameters():
    assert repr(BatchNorm(6, num_dims=4)) == (
        "BatchNorm(6, num_dims=4, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)"
    )


# The hand-derived backward pass -------------------------------------------------------------


@pytest.mark.parametrize("shape", [(6, 3), (4, 2, 3, 3), (3, 2, 5)])
@pytest.mark.parametrize("affine", [True, False])
def test_gradcheck_of_the_hand_derived_backward(shape, affine):
    torch.manual_seed(7)
    x = (torch.randn(shape, dtype=torch.float64) * 2 + 1).requires_grad_()
    c = shape[1]
    weight = (torch.rand(c, dtype=torch.float64) + 0.5).requires_grad_() if affine else None
    bias = torch.randn(c, dtype=torch.float64).requires_grad_() if affine else None

    def transform(x, weight, bias):
        return BatchNormFunction.apply(x, weight, bias, None, None, 0.1, 1e-5)

    assert torch.autograd.gradcheck(transform, (x, weight, bias))


def test_hand_derived_backward_equals_autograd_of_the_naive_formula():
    torch.manual_seed(8)
    x = torch.randn(16, 4, 5, 5, dtype=torch.float64) * 3 - 1
    w = torch.rand(4, dtype=torch.float64) + 0.5
    b = torch.randn(4, dtype=torch.float64)
    grad_y = torch.randn_like(x)

    def naive(x, w, b):
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        var = ((x - mean) ** 2).mean(dim=(0, 2, 3), keepdim=True)
        return (x - mean) / torch.sqrt(var + 1e-5) * w.view(1, -1, 1, 1) + b.view(1, -1, 1, 1)

    inputs = [t.clone().requires_grad_() for t in (x, w, b)]
    expected = torch.autograd.grad(naive(*inputs), inputs, grad_y)
    inputs = [t.clone().requires_grad_() for t in (x, w, b)]
    got = torch.autograd.grad(BatchNormFunction.apply(*inputs, None, None, 0.1, 1e-5), inputs, grad_y)
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-12)


def test_function_moves_running_statistics_towards_the_batch():
    x = torch.tensor([[1.0, 2.0], [3.0, 6.0]], requires_grad=True)  # means 2, 4; unbiased vars 2, 8
    running_mean, running_var = torch.zeros(2), torch.ones(2)
    y = BatchNormFunction.apply(x, None, None, running_mean, running_var, 0.5, 1e-5)
    torch.testing.assert_close(running_mean, torch.tensor([1.0, 2.0]))
    torch.testing.assert_close(running_var, torch.tensor([1.5, 4.5]))
    assert y.requires_grad and not running_mean.requires_grad


@pytest.mark.parametrize("needed", [(False, True, True), (True, False, True), (True, True, False)])
def test_only_requested_gradients_are_computed(needed):
    # what backward itself returns, seen by a hook on its node: None for an input that needs no
    # gradient (autograd would silently drop a computed one, so x.grad cannot tell)
    x, w, b = (t.requires_grad_(need) for t, need in zip((torch.randn(8, 3), torch.ones(3), torch.zeros(3)), needed))
    y = BatchNormFunction.apply(x, w, b, None, None, 0.1, 1e-5)
    returned = []
    y.grad_fn.register_hook(lambda grad_inputs, grad_outputs: returned.append(grad_inputs))
    y.sum().backward()
    assert [g is not None for g in returned[0][:3]] == list(needed)


# Errors ---------------------------------------------------------------------------------------


def test_wrong_number_of_dimensions_says_which_num_dims_to_use():
    with pytest.raises(ValueError, match=r"expects a 4-D input \(N, C, H, W\), got a 2-D input of shape \(8, 6\).*num_dims=2"):
        BatchNorm(6, num_dims=4)(torch.randn(8, 6))
    with pytest.raises(ValueError, match="expects a 2-D input"):
        BatchNorm(6, num_dims=2)(torch.randn(8, 6, 3, 3))
    with pytest.raises(ValueError, match=r"got a 3-D input .*num_dims=3 after a Conv1d"):
        BatchNorm(6, num_dims=2)(torch.randn(8, 6, 5))


def test_a_second_derivative_that_does_not_pass_through_batch_norm_works():
    # a penalty on the last layer's weight gradient: create_graph=True, but only batch norm's
    # forward pass is differentiated a second time, as with nn.BatchNorm1d
    torch.manual_seed(4)
    X = torch.randn(16, 4)
    penalties = []
    for norm in (BatchNorm(3, num_dims=2), nn.BatchNorm1d(3)):
        torch.manual_seed(5)
        net = nn.Sequential(nn.Linear(4, 3), norm, nn.Sigmoid(), nn.Linear(3, 2))
        grads = torch.autograd.grad(net(X).square().mean(), list(net.parameters()), create_graph=True)
        penalties.append(torch.autograd.grad(grads[-2].square().sum(), [net[3].weight, net[0].weight]))
    for a, b in zip(*penalties):
        torch.testing.assert_close(a, b)


def test_second_derivatives_need_manual_backward_false():
    torch.manual_seed(3)
    x = torch.randn(8, 3, dtype=torch.float64, requires_grad=True)
    ours, theirs = make_pair(3, 2, manual_backward=True)
    ours.double()
    (grad,) = torch.autograd.grad(ours(x).pow(3).sum(), x, create_graph=True)  # builds the graph
    with pytest.raises(RuntimeError, match=r"first derivatives only.*manual_backward=False"):
        grad.square().sum().backward()  # a second derivative through the hand-derived pass
    ours, theirs = make_pair(3, 2, manual_backward=False)
    ours.double(), theirs.double()
    second = []
    for bn in (ours, theirs):
        (grad,) = torch.autograd.grad(bn(x).pow(3).sum(), x, create_graph=True)
        second.append(torch.autograd.grad(grad.square().sum(), [x, bn.weight]))
    for a, b in zip(*second):
        torch.testing.assert_close(a, b)
    f = lambda x, w, b: batch_norm(x, None, None, w, b, training=True, manual_backward=False)
    w, b = ours.weight.detach().requires_grad_(), ours.bias.detach().requires_grad_()
    assert torch.autograd.gradgradcheck(f, (x, w, b))


def test_a_second_derivative_from_a_loss_linear_in_the_output_raises_rather_than_being_wrong():
    # The incoming gradient c is a constant, yet dl/dx depends on x: once_differentiable returns
    # it without a graph there, and the penalty's second derivative silently comes out wrong.
    torch.manual_seed(6)
    x = torch.randn(8, 3, dtype=torch.float64, requires_grad=True)
    c = torch.randn(8, 3, dtype=torch.float64)
    bn = BatchNorm(3, num_dims=2).double()
    with pytest.raises(RuntimeError, match=r"first derivatives only.*manual_backward=False.*create_graph=True"):
        torch.autograd.grad((bn(x) * c).sum(), x, create_graph=True)
    # Without create_graph the same gradient is computed, and equals nn.BatchNorm1d's.
    (grad,) = torch.autograd.grad((bn(x) * c).sum(), x)
    (expected,) = torch.autograd.grad((nn.BatchNorm1d(3).double()(x) * c).sum(), x)
    torch.testing.assert_close(grad, expected)


def test_channel_mismatch_names_both_counts():
    with pytest.raises(ValueError, match="expects 6 channels in dimension 1, got 16"):
        BatchNorm(6, num_dims=4)(torch.randn(2, 16, 4, 4))


@pytest.mark.parametrize("shape", [(1, 5), (1, 5, 1, 1), (1, 5, 1)])
def test_training_batch_with_one_value_per_channel_is_refused_like_torch(shape):
    bn = BatchNorm(5, num_dims=len(shape))
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training") as ours:
        bn(torch.randn(shape))
    assert "model.eval()" in str(ours.value)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        TORCH_BN[len(shape)](5)(torch.randn(shape))
    assert int(bn.num_batches_tracked) == 0, "a refused batch must not count"
    bn.eval()
    assert bn(torch.randn(shape)).shape == shape  # a single example is fine for prediction


def test_one_example_with_several_pixels_trains():
    bn = BatchNorm(2, num_dims=4)
    y = bn(torch.randn(1, 2, 3, 3))
    torch.testing.assert_close(y.mean(dim=(0, 2, 3)), torch.zeros(2), atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_features": 0, "num_dims": 2}, "num_features must be a positive int"),
        ({"num_features": 3, "num_dims": 5}, "num_dims must be 2"),
        ({"num_features": 3, "num_dims": 2, "momentum": 1.5}, r"momentum must be in \[0, 1\]"),
        ({"num_features": 3, "num_dims": 2, "eps": -1e-5}, "eps must be non-negative"),
    ],
)
def test_bad_constructor_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BatchNorm(**kwargs)


def test_functional_prediction_needs_running_statistics():
    with pytest.raises(ValueError, match="running_mean and running_var must be given; pass training=True to use the batch's own"):
        batch_norm(torch.randn(4, 3), None, None, training=False)


def test_negative_eps_is_refused_and_zero_gives_the_exact_formula():
    x = torch.tensor([[1.0, 5.0], [3.0, 9.0]])
    for training in (True, False):
        with pytest.raises(ValueError, match="eps must be 0 or more, got -1.0"):
            batch_norm(x, torch.zeros(2), torch.ones(2), training=training, eps=-1.0)
    assert torch.equal(batch_norm(x, None, None, training=True, eps=0.0), torch.tensor([[-1.0, -1.0], [1.0, 1.0]]))


def test_scalar_input_is_refused():
    with pytest.raises(ValueError, match=r"\(N, C\) or \(N, C, H, W\), got shape \(5,\); add a batch dimension with x\.unsqueeze\(0\)"):
        batch_norm(torch.randn(5), None, None, training=True)


# Folding --------------------------------------------------------------------------------------


def trained(bn: nn.Module, layer: nn.Module, x: torch.Tensor) -> nn.Module:
    """Move bn's running statistics away from 0 and 1 with a few training steps, then eval it."""
    with torch.no_grad():
        bn.train()
        for _ in range(3):
            bn(layer(x))
        if bn.affine:
            bn.weight.uniform_(0.5, 2.0)
            bn.bias.uniform_(-1.0, 1.0)
    return bn.eval()


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("ours", [True, False])
def test_fold_into_conv_matches_torch_fusion(bias, ours):
    torch.manual_seed(9)
    conv = nn.Conv2d(3, 5, 3, bias=bias).eval()
    x = torch.randn(8, 3, 7, 7) * 2 + 1
    bn = trained(BatchNorm(5, num_dims=4) if ours else nn.BatchNorm2d(5), conv, x)
    fused = fold_batch_norm(conv, bn)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), bn(conv(x)), atol=1e-5, rtol=1e-5)
        reference = fuse_conv_bn_eval(conv, bn if not ours else _as_torch(bn, nn.BatchNorm2d))
        torch.testing.assert_close(fused.weight, reference.weight, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(fused.bias, reference.bias, atol=1e-6, rtol=1e-5)
    assert conv.bias is None or fused.bias is not conv.bias  # the original layer is untouched


def test_fold_into_linear_matches_torch_fusion():
    torch.manual_seed(10)
    linear = nn.Linear(6, 4).eval()
    x = torch.randn(32, 6) * 3
    bn = trained(BatchNorm(4, num_dims=2), linear, x)
    fused = fold_batch_norm(linear, bn)
    reference = fuse_linear_bn_eval(linear, _as_torch(bn, nn.BatchNorm1d))
    with torch.no_grad():
        torch.testing.assert_close(fused(x), bn(linear(x)), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(fused.weight, reference.weight, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(fused.bias, reference.bias, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("affine", [True, False])
def test_fold_into_conv1d_and_without_affine(affine):
    torch.manual_seed(13)
    conv = nn.Conv1d(3, 4, 3).eval()
    x = torch.randn(8, 3, 9) * 2 + 1
    bn = trained(BatchNorm(4, num_dims=3, affine=affine), conv, x)
    fused = fold_batch_norm(conv, bn)
    assert isinstance(fused, nn.Conv1d)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), bn(conv(x)), atol=1e-5, rtol=1e-5)
    linear = nn.Linear(5, 4).eval()
    u = torch.randn(16, 5) * 3
    bn = trained(nn.BatchNorm1d(4, affine=affine), linear, u)
    with torch.no_grad():
        torch.testing.assert_close(fold_batch_norm(linear, bn)(u), bn(linear(u)), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("frozen", ["none", "weight", "bias", "both"])
def test_fold_keeps_requires_grad_like_torch_fusion(bias, frozen):
    """Fine-tuning only the biases after folding still trains the folded bias, as in PyTorch."""
    torch.manual_seed(11)
    conv = nn.Conv2d(2, 3, 3, bias=bias).eval()
    conv.weight.requires_grad_(frozen not in ("weight", "both"))
    if bias:
        conv.bias.requires_grad_(frozen not in ("bias", "both"))
    bn = trained(nn.BatchNorm2d(3), conv, torch.randn(8, 2, 6, 6))
    fused, reference = fold_batch_norm(conv, bn), fuse_conv_bn_eval(conv, bn)
    assert fused.weight.requires_grad == reference.weight.requires_grad
    assert fused.bias.requires_grad == reference.bias.requires_grad


def test_fold_leaves_inputs_unchanged():
    conv = nn.Conv2d(1, 2, 3)
    bn = trained(BatchNorm(2, num_dims=4), conv, torch.randn(4, 1, 5, 5))
    before = copy.deepcopy((conv.state_dict(), bn.state_dict()))
    fold_batch_norm(conv, bn)
    for saved, now in zip(before, (conv.state_dict(), bn.state_dict())):
        for key in saved:
            torch.testing.assert_close(saved[key], now[key])


def test_fold_errors():
    with pytest.raises(ValueError, match="track_running_stats=False"):
        fold_batch_norm(nn.Linear(3, 2), BatchNorm(2, num_dims=2, track_running_stats=False).eval())
    with pytest.raises(ValueError, match="has 2 outputs but the batch norm has 3 features; fold a batch norm into the layer directly before it"):
        fold_batch_norm(nn.Linear(3, 2), BatchNorm(3, num_dims=2).eval())
    with pytest.raises(TypeError, match="folds into nn.Linear, nn.Conv1d or nn.Conv2d"):
        fold_batch_norm(nn.ReLU(), BatchNorm(3, num_dims=2).eval())
    # In training mode the batch norm uses each batch's statistics, which no fixed layer equals.
    for bn in (BatchNorm(2, num_dims=2), nn.BatchNorm1d(2)):
        with pytest.raises(ValueError, match=r"training mode.*Call bn.eval\(\) first"):
            fold_batch_norm(nn.Linear(3, 2), bn)


def _as_torch(bn: BatchNorm, cls: type) -> nn.Module:
    """PyTorch's module with the state of ours, for torch.nn.utils.fusion."""
    twin = cls(bn.num_features, eps=bn.eps).eval()
    twin.load_state_dict(bn.state_dict())
    return twin
