"""d2lbn.distributed: synchronized batch norm equals one batch norm over the concatenated batch.

Most checks need two processes in a gloo process group. Starting processes dominates the time,
so one launch (the module-scoped fixture ``two_processes``) runs every two-process case and the
tests then read its results. The worker lives here, at the top level, so that the spawned
processes can import it (pytest puts this folder on ``sys.path``, and spawned processes inherit
it).
"""

from __future__ import annotations

import copy
import operator
import subprocess
import sys
import time

import pytest
import torch
import torch.distributed as dist
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from d2lbn.distributed import (
    SyncBatchNorm,
    SyncBatchNormFunction,
    convert_sync_batchnorm,
    group_size,
    launch,
    run_command,
    shard,
    shard_forward_backward,
)
from d2lbn.norm import BatchNorm, BatchNormFunction

DOUBLE = torch.float64


def randomized(module: nn.Module, seed: int) -> nn.Module:
    """``module`` with gamma and beta drawn away from 1 and 0, so that mistakes show."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        if getattr(module, "weight", None) is not None:
            module.weight.copy_(torch.rand(module.weight.shape, generator=generator, dtype=DOUBLE) + 0.5)
        if getattr(module, "bias", None) is not None:
            module.bias.copy_(torch.rand(module.bias.shape, generator=generator, dtype=DOUBLE) - 0.5)
    return module


def small_net() -> nn.Sequential:
    torch.manual_seed(3)
    return nn.Sequential(
        nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.Sigmoid(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3)
    ).double()


# ---------------------------------------------------------------------------------------------
# The cases, each run in both processes of a gloo group and, in this process, on the whole batch.


def make_cases() -> dict:
    """name -> (module, list of (x, grad_y) steps, shard sizes for process 0 and 1)."""
    g = torch.Generator().manual_seed(0)

    def data(*shape, dtype=DOUBLE, scale=2.0, shift=1.0):
        return torch.randn(shape, generator=g, dtype=dtype) * scale + shift

    def steps(shape, n=2, **kw):
        return [(data(*shape, **kw), data(*shape, dtype=kw.get("dtype", DOUBLE), scale=1.0, shift=0.0)) for _ in range(n)]

    large = torch.randn(64, 2, generator=g) + 1e4  # float32, mean 10,000 times the standard deviation
    return {
        "conv": (randomized(SyncBatchNorm(3, num_dims=4, dtype=DOUBLE), 1), steps((8, 3, 5, 5), 3), (4, 4)),
        "uneven_cumulative": (
            randomized(SyncBatchNorm(4, momentum=None, dtype=DOUBLE), 2), steps((7, 4), 3), (5, 2)
        ),
        "one_process_empty": (SyncBatchNorm(2, affine=False, dtype=DOUBLE), steps((3, 2, 2)), (3, 0)),
        "one_value_each": (randomized(SyncBatchNorm(3, dtype=DOUBLE), 3), steps((2, 3)), (1, 1)),
        "untracked": (
            randomized(SyncBatchNorm(3, track_running_stats=False, dtype=DOUBLE), 4), steps((6, 3, 2, 2)), (3, 3)
        ),
        "float32": (SyncBatchNorm(6), steps((32, 6, 8, 8), dtype=torch.float32), (16, 16)),
        "large_mean": (SyncBatchNorm(2, momentum=1.0), [(large, torch.randn(64, 2, generator=g))], (32, 32)),
        "one_value_in_all": (SyncBatchNorm(3), [(data(1, 3), data(1, 3))], (1, 0)),
        "torch_sync_on_cpu": (nn.SyncBatchNorm(3).double(), steps((4, 3, 2, 2)), (2, 2)),
    }


def reference_of(module: nn.Module, num_dims: int) -> nn.Module:
    """The single-process batch norm that ``module`` over the whole batch must equal."""
    dtype = next(iter(module.state_dict().values()), torch.zeros((), dtype=DOUBLE)).dtype
    if isinstance(module, SyncBatchNorm):
        twin = BatchNorm(
            module.num_features,
            num_dims,
            eps=module.eps,
            momentum=module.momentum,
            affine=module.affine,
            track_running_stats=module.track_running_stats,
            dtype=dtype,
        )
    else:
        twin = nn.BatchNorm2d(module.num_features, dtype=dtype)
    twin.load_state_dict(module.state_dict())
    return twin


def run_steps(module: nn.Module, steps: list, sizes: tuple | None) -> dict:
    """Train-mode forward and backward of each step on this process's part (all of it when sizes is None)."""
    out = {"y": [], "grad_x": [], "grads": [], "state": None}
    for x, grad_y in steps:
        if sizes is not None:
            x, grad_y = x.split(list(sizes))[dist.get_rank()], grad_y.split(list(sizes))[dist.get_rank()]
        x = x.clone().requires_grad_(True)
        module.train()
        module.zero_grad(set_to_none=True)
        y = module(x)
        y.backward(grad_y)
        out["y"].append(y.detach())
        out["grad_x"].append(x.grad)
        out["grads"].append({n: p.grad.clone() for n, p in module.named_parameters()})
    out["state"] = copy.deepcopy(module.state_dict())
    return out


def ddp_steps(net: nn.Module, batches: list, use_ddp: bool) -> dict:
    model = DistributedDataParallel(net) if use_ddp else net
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    losses = []
    for x, y in batches:
        if use_ddp:
            x, y = shard(x), shard(y)
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
    return {"state": copy.deepcopy(net.state_dict()), "losses": losses}


def ddp_batches() -> list:
    g = torch.Generator().manual_seed(5)
    return [(torch.randn(8, 2, 6, 6, generator=g, dtype=DOUBLE) + 1, torch.randint(0, 3, (8,), generator=g)) for _ in range(3)]


def two_process_worker() -> dict:
    """Run in each of two processes: every case, DDP steps, and a few facts about the group."""
    results = {}
    for name, (module, steps, sizes) in make_cases().items():
        try:
            results[name] = run_steps(module, steps, sizes)
        except Exception as error:  # an expected refusal, compared by the tests
            results[name] = f"{type(error).__name__}: {error}"
    results["ddp_sync"] = ddp_steps(convert_sync_batchnorm(small_net()), ddp_batches(), use_ddp=True)
    results["ddp_local"] = ddp_steps(small_net(), ddp_batches(), use_ddp=True)
    x = torch.arange(10.0).view(5, 2)
    results["group_size"] = group_size()
    results["shard"] = shard(x)
    evaluation = randomized(SyncBatchNorm(2, dtype=DOUBLE), 6).eval()
    results["eval"] = evaluation(x.double())  # no communication in evaluation mode
    return results


@pytest.fixture(scope="module")
def two_processes() -> list:
    return launch(two_process_worker, world_size=2, timeout=240)


@pytest.fixture(scope="module")
def single_process() -> dict:
    """Every case on the whole batch, in this process, with d2lbn.BatchNorm."""
    results = {}
    for name, (module, steps, _) in make_cases().items():
        try:
            results[name] = run_steps(reference_of(module, steps[0][0].dim()), steps, None)
        except Exception as error:
            results[name] = f"{type(error).__name__}: {error}"
    results["ddp"] = ddp_steps(small_net(), ddp_batches(), use_ddp=False)
    return results


def gathered(parts: list, case: str, key: str, step: int) -> torch.Tensor:
    return torch.cat([p[case][key][step] for p in parts])


# ---------------------------------------------------------------------------------------------
# Two processes against one


@pytest.mark.parametrize("case", ["conv", "uneven_cumulative", "one_process_empty", "one_value_each", "untracked"])
def test_sync_equals_one_batch_norm_over_the_concatenated_batch(two_processes, single_process, case):
    reference = single_process[case]
    for step in range(len(reference["y"])):
        for key in ("y", "grad_x"):
            torch.testing.assert_close(gathered(two_processes, case, key, step), reference[key][step], rtol=1e-12, atol=1e-12)
        for name, grad in reference["grads"][step].items():
            # each process returns its share of dl/dgamma and dl/dbeta; DDP adds them up
            total = sum(p[case]["grads"][step][name] for p in two_processes)
            torch.testing.assert_close(total, grad, rtol=1e-12, atol=1e-12, msg=f"{case}: gradient of {name}")
    for part in two_processes:
        assert part[case]["state"].keys() == reference["state"].keys()
        for name, value in reference["state"].items():
            torch.testing.assert_close(part[case]["state"][name], value, rtol=1e-12, atol=1e-12, msg=f"{case}: {name}")


def test_float32_agrees_to_float32_rounding(two_processes, single_process):
    reference = single_process["float32"]
    for step in range(2):
        torch.testing.assert_close(gathered(two_processes, "float32", "y", step), reference["y"][step], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(gathered(two_processes, "float32", "grad_x", step), reference["grad_x"][step], rtol=1e-4, atol=1e-5)
    for name in ("running_mean", "running_var"):
        torch.testing.assert_close(two_processes[0]["float32"]["state"][name], reference["state"][name], rtol=1e-5, atol=1e-6)


def test_large_mean_keeps_the_variance(two_processes):
    x = make_cases()["large_mean"][1][0][0]
    exact = x.double().var(dim=0)  # unbiased, in float64 from the same float32 values
    for part in two_processes:
        torch.testing.assert_close(part["large_mean"]["state"]["running_var"].double(), exact, rtol=1e-5, atol=0)
    # ... where the textbook sum of squares in float32 loses it entirely
    naive = (x.square().sum(0) - x.sum(0).square() / len(x)) / (len(x) - 1)
    assert ((naive.double() - exact).abs() / exact).max() > 0.5


def test_every_process_refuses_one_value_per_channel_in_all(two_processes):
    for part in two_processes:  # both raise (neither waits for the other), with BatchNorm's message
        assert part["one_value_in_all"].startswith("ValueError: Expected more than 1 value per channel")


def test_one_value_per_process_is_enough_when_the_group_has_more(two_processes):
    assert all(p["one_value_each"]["y"][0].shape == (1, 3) for p in two_processes)


def test_torch_sync_batch_norm_refuses_cpu_tensors_or_agrees(two_processes, single_process):
    """torch 2.14's nn.SyncBatchNorm needs GPU kernels; should a release run it on the CPU, it must agree."""
    result = two_processes[0]["torch_sync_on_cpu"]
    if isinstance(result, str):
        assert "GPU" in result
    else:  # pragma: no cover - not the case with torch 2.14
        torch.testing.assert_close(gathered(two_processes, "torch_sync_on_cpu", "y", 0), single_process["torch_sync_on_cpu"]["y"][0])


def test_ddp_with_sync_batch_norm_trains_like_one_process(two_processes, single_process):
    reference = single_process["ddp"]
    for part in two_processes:
        for name, value in reference["state"].items():
            torch.testing.assert_close(part["ddp_sync"]["state"][name], value, rtol=1e-10, atol=1e-10, msg=name)
        # the processes' mean losses average to the loss over the whole batch
    for step, loss in enumerate(reference["losses"]):
        mean = sum(p["ddp_sync"]["losses"][step] for p in two_processes) / 2
        torch.testing.assert_close(mean, loss, rtol=1e-10, atol=1e-10)
    local = two_processes[0]["ddp_local"]["state"]
    assert max((local[k] - v).abs().max().item() for k, v in reference["state"].items()) > 1e-3


def test_group_facts(two_processes):
    assert [p["group_size"] for p in two_processes] == [2, 2]
    assert torch.equal(torch.cat([p["shard"] for p in two_processes]), torch.arange(10.0).view(5, 2))
    reference = randomized(BatchNorm(2, num_dims=2, dtype=DOUBLE), 6).eval()
    for part in two_processes:
        assert torch.equal(part["eval"], reference(torch.arange(10.0).view(5, 2).double()))


# ---------------------------------------------------------------------------------------------
# Without a process group, and in a group of one: exactly d2lbn.BatchNorm


OPTIONS = [
    {},
    {"momentum": None},
    {"momentum": 1.0, "eps": 1e-3},
    {"affine": False},
    {"track_running_stats": False},
    {"manual_backward": False},
]


def assert_identical_steps(sync: SyncBatchNorm, plain: BatchNorm, shape: tuple) -> None:
    torch.manual_seed(7)
    for training in (True, True, False, True):
        sync.train(training)
        plain.train(training)
        x = torch.randn(shape) * 3 + 1
        x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
        y1, y2 = sync(x1), plain(x2)
        assert torch.equal(y1, y2)
        grad = torch.randn_like(y1)
        y1.backward(grad)
        y2.backward(grad)
        assert torch.equal(x1.grad, x2.grad)
        for (n1, p1), (n2, p2) in zip(sync.named_parameters(), plain.named_parameters()):
            assert n1 == n2 and torch.equal(p1.grad, p2.grad)
        for (n1, b1), (n2, b2) in zip(sync.named_buffers(), plain.named_buffers()):
            assert n1 == n2 and torch.equal(b1, b2)


@pytest.mark.parametrize("options", OPTIONS)
@pytest.mark.parametrize("shape", [(16, 5), (8, 5, 3, 3)])
def test_without_process_group_it_is_batch_norm_bit_for_bit(options, shape):
    assert not dist.is_initialized()
    assert_identical_steps(SyncBatchNorm(5, **options), BatchNorm(5, num_dims=len(shape), **options), shape)


@pytest.fixture
def group_of_one():
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def test_in_a_group_of_one_it_is_batch_norm_bit_for_bit(group_of_one):
    assert group_size() == 1
    assert_identical_steps(SyncBatchNorm(4, num_dims=4), BatchNorm(4, num_dims=4), (6, 4, 3, 3))


def test_function_in_a_group_of_one_equals_batch_norm_function(group_of_one):
    torch.manual_seed(8)
    x = torch.randn(9, 3, 4, dtype=DOUBLE) * 2 - 1
    w, b = torch.rand(3, dtype=DOUBLE) + 0.5, torch.rand(3, dtype=DOUBLE)
    stats = [torch.zeros(3, dtype=DOUBLE), torch.ones(3, dtype=DOUBLE)]
    stats2 = [s.clone() for s in stats]
    inputs = [t.clone().requires_grad_() for t in (x, w, b)]
    inputs2 = [t.clone().requires_grad_() for t in (x, w, b)]
    y = SyncBatchNormFunction.apply(*inputs, *stats, 0.1, 1e-5, None)
    y2 = BatchNormFunction.apply(*inputs2, *stats2, 0.1, 1e-5)
    grad = torch.randn_like(y)
    y.backward(grad)
    y2.backward(grad)
    torch.testing.assert_close(y, y2, rtol=1e-12, atol=1e-12)
    for a, c in zip(inputs + stats, inputs2 + stats2):
        torch.testing.assert_close(a.grad if a.requires_grad else a, c.grad if c.requires_grad else c, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_function_computes_in_float32_like_batch_norm_function(group_of_one, dtype):
    """The synchronized path itself (the module would fall back to BatchNorm in a group of one):
    statistics, output and the backward sums in float32, rounded once to the input's dtype. A
    float16 computation would overflow: 64 * 16 * 16 values per channel, gradients near 3e4."""
    torch.manual_seed(16)
    x = (torch.randn(64, 4, 16, 16) * 3 + 2).to(dtype)
    w, b = torch.rand(4) + 0.5, torch.rand(4)  # float32 parameters, as under autocast
    r = torch.randn(x.shape)  # so that the input gradient is not a cancellation to zero
    outputs, grads = [], []
    for function, extra in ((SyncBatchNormFunction.apply, (None,)), (BatchNormFunction.apply, ())):
        inputs = [t.clone().requires_grad_() for t in (x, w, b)]
        y = function(*inputs, None, None, 0.1, 1e-5, *extra)
        assert y.dtype == dtype
        outputs.append(y)
        grads.append(torch.autograd.grad((y.float().square() + r * y.float()).sum(), inputs))
    torch.testing.assert_close(outputs[0].float(), outputs[1].float(), atol=2e-3, rtol=0.01)  # an ulp or so
    for g_sync, g_plain in zip(*grads):
        assert torch.isfinite(g_sync).all()
        torch.testing.assert_close(g_sync.float(), g_plain.float(), atol=0.02 * g_plain.abs().max().item(), rtol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_module_in_a_group_of_one_keeps_its_dtype_like_batch_norm(group_of_one, dtype):
    """Statistics in float32 (no overflow), output in the input's dtype, float32 parameters allowed."""
    torch.manual_seed(15)
    x = (torch.randn(16, 3, 4, 4) * 300).to(dtype)
    sync, plain = SyncBatchNorm(3, num_dims=4), BatchNorm(3, num_dims=4)  # float32 parameters
    y, y2 = sync(x), plain(x)
    assert y.dtype == y2.dtype == dtype
    torch.testing.assert_close(y.float(), y2.float(), atol=0.05, rtol=0.02)
    torch.testing.assert_close(sync.running_var, plain.running_var, rtol=1e-3, atol=0)


def test_second_derivatives_raise_an_error_that_names_the_way_out(group_of_one):
    torch.manual_seed(10)
    x = torch.randn(6, 2, dtype=DOUBLE, requires_grad=True)
    c = torch.randn(6, 2, dtype=DOUBLE)
    f = lambda x: SyncBatchNormFunction.apply(x, None, None, None, None, 0.1, 1e-5, None)  # noqa: E731
    message = r"SyncBatchNorm gives first derivatives only.*manual_backward=False"
    with pytest.raises(RuntimeError, match=message):  # a constant incoming gradient: at once
        torch.autograd.grad((f(x) * c).sum(), x, create_graph=True)
    (grad,) = torch.autograd.grad(f(x).pow(3).sum(), x, create_graph=True)  # first derivatives work
    with pytest.raises(RuntimeError, match=message):  # when a second one is taken
        grad.square().sum().backward()


@pytest.mark.parametrize("affine", [True, False])
def test_gradcheck_of_the_hand_derived_backward(group_of_one, affine):
    torch.manual_seed(9)
    x = torch.randn(6, 2, 3, dtype=DOUBLE, requires_grad=True)
    if affine:
        w = (torch.rand(2, dtype=DOUBLE) + 0.5).requires_grad_()
        b = torch.rand(2, dtype=DOUBLE, requires_grad=True)
        f = lambda x, w, b: SyncBatchNormFunction.apply(x, w, b, None, None, 0.1, 1e-5, None)  # noqa: E731
        assert torch.autograd.gradcheck(f, (x, w, b))
    else:
        f = lambda x: SyncBatchNormFunction.apply(x, None, None, None, None, 0.1, 1e-5, None)  # noqa: E731
        assert torch.autograd.gradcheck(f, (x,))


def test_matches_torch_modules_without_a_group():
    torch.manual_seed(10)
    x = torch.randn(8, 3, 4, 4)
    ours, bn, torch_sync = SyncBatchNorm(3), nn.BatchNorm2d(3), nn.SyncBatchNorm(3)
    for module in (ours, bn, torch_sync):
        module.load_state_dict(randomized(nn.BatchNorm2d(3), 11).state_dict())
    y = ours(x)
    torch.testing.assert_close(y, bn(x))
    torch.testing.assert_close(y, torch_sync(x))  # not initialized: nn.SyncBatchNorm falls back to batch_norm
    torch.testing.assert_close(ours.running_var, torch_sync.running_var)


@pytest.mark.parametrize("how", ["flag turned off", "buffers set to None"])
def test_evaluation_mode_follows_the_buffers_like_torch(how):
    torch.manual_seed(12)
    x = torch.randn(8, 3, 4, 4) * 2 + 1
    ours, torch_sync = SyncBatchNorm(3), nn.SyncBatchNorm(3)
    ours(x), torch_sync(x)
    for module in (ours, torch_sync):
        module.eval()
        if how == "flag turned off":
            module.track_running_stats = False
        else:
            module.running_mean = module.running_var = None
    torch.testing.assert_close(ours(x), torch_sync(x))
    ours.train(), torch_sync.train()
    torch.testing.assert_close(ours(x), torch_sync(x))
    assert int(ours.num_batches_tracked) == int(torch_sync.num_batches_tracked)


# ---------------------------------------------------------------------------------------------
# Conversion


def test_convert_replaces_every_batch_norm_and_shares_its_state():
    torch.manual_seed(12)
    net = nn.Sequential(
        nn.Conv2d(1, 3, 3),
        BatchNorm(3, num_dims=4, momentum=None, eps=1e-3),
        nn.Sequential(nn.BatchNorm2d(3, affine=False), nn.GroupNorm(1, 3)),
        nn.Flatten(),
        nn.Linear(3 * 6 * 6, 4),
        nn.BatchNorm1d(4, track_running_stats=False),
        nn.SyncBatchNorm(4),
    )
    _ = net(torch.randn(5, 1, 8, 8))  # move the running statistics away from their initial values
    before = copy.deepcopy(net)
    old = [net[1], net[2][0], net[5], net[6]]
    net.eval()
    converted = convert_sync_batchnorm(net)
    assert converted is net
    new = [net[1], net[2][0], net[5], net[6]]
    assert all(type(m) is SyncBatchNorm for m in new)
    assert type(net[2][1]) is nn.GroupNorm
    assert [m.num_dims for m in new] == [4, 4, None, None]
    for a, b in zip(old, new):
        assert (a.eps, a.momentum, a.affine, a.track_running_stats) == (b.eps, b.momentum, b.affine, b.track_running_stats)
        assert a.weight is b.weight and a.bias is b.bias
        assert a.running_mean is b.running_mean and a.running_var is b.running_var
        assert a.num_batches_tracked is b.num_batches_tracked
        assert not b.training
    assert net.state_dict().keys() == before.state_dict().keys()
    x = torch.randn(4, 1, 8, 8)
    torch.testing.assert_close(net(x), before.eval()(x))
    net.train(), before.train()
    torch.testing.assert_close(net(x), before(x))


def test_convert_a_single_layer_returns_a_new_one():
    bn = nn.BatchNorm3d(2, bias=False).double()
    sync = convert_sync_batchnorm(bn)
    assert type(sync) is SyncBatchNorm and sync.num_dims == 5 and sync.bias is None
    assert sync.weight is bn.weight and sync.running_mean.dtype == DOUBLE
    x = torch.randn(3, 2, 2, 2, 2, dtype=DOUBLE)
    torch.testing.assert_close(sync(x), bn(x))


def test_convert_keeps_sync_layers_and_sets_their_group():
    sync = SyncBatchNorm(2)
    assert convert_sync_batchnorm(sync) is sync and sync.process_group is None
    marker = object()
    assert convert_sync_batchnorm(nn.Sequential(sync), process_group=marker)[0] is sync
    assert sync.process_group is marker


def test_convert_refuses_an_uninitialized_lazy_batch_norm():
    with pytest.raises(ValueError, match="run one batch"):
        convert_sync_batchnorm(nn.Sequential(nn.LazyBatchNorm2d()))


# ---------------------------------------------------------------------------------------------
# Errors, shards, launching


@pytest.mark.parametrize("num_dims", [1, 6, 0])
def test_bad_num_dims(num_dims):
    with pytest.raises(ValueError, match=f"num_dims must be 2, 3, 4 or 5 .*or None for any; got {num_dims}"):
        SyncBatchNorm(3, num_dims=num_dims)


def test_input_errors_say_what_to_do():
    with pytest.raises(ValueError, match=r"4-D input.*add a batch dimension with x\.unsqueeze\(0\)"):
        SyncBatchNorm(3, num_dims=4)(torch.randn(2, 3))
    with pytest.raises(ValueError, match=r"2 or more-D input.*add a batch dimension with x\.unsqueeze\(0\)"):
        SyncBatchNorm(3)(torch.randn(3))
    with pytest.raises(ValueError, match="expects 3 channels.*set num_features to the preceding layer's output size"):
        SyncBatchNorm(3)(torch.randn(2, 4))
    bn = SyncBatchNorm(3)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        bn(torch.randn(1, 3))
    assert int(bn.num_batches_tracked) == 0
    assert SyncBatchNorm(3).eval()(torch.randn(1, 3)).shape == (1, 3)


@settings(max_examples=50, deadline=None)
@given(n=st.integers(0, 40), k=st.integers(1, 8))
def test_shards_split_the_batch_in_order(n, k):
    x = torch.arange(n)
    parts = [shard(x, r, k) for r in range(k)]
    assert torch.equal(torch.cat(parts), x)
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1


def test_shard_defaults_and_errors():
    assert torch.equal(shard(torch.arange(4)), torch.arange(4))  # no group: one shard
    with pytest.raises(ValueError, match="rank must be in"):
        shard(torch.arange(4), rank=2, num_shards=2)


def test_launch_refuses_what_new_processes_cannot_import():
    def local_function():
        return 1

    for fn in (lambda: 1, local_function):
        with pytest.raises(ValueError, match="top level of a module"):
            launch(fn, world_size=1)


@pytest.mark.parametrize("size", [0, -1, 1.5, True])
def test_launch_refuses_bad_world_sizes(size):
    with pytest.raises(ValueError, match=f"world_size must be a positive int, got {size}"):
        launch(group_size, world_size=size)


def test_launch_reports_the_failure_of_a_process():
    with pytest.raises(RuntimeError, match="ZeroDivisionError"):
        launch(operator.truediv, world_size=1, args=(1, 0), timeout=120)


def test_shard_forward_backward_in_one_process_group(group_of_one):
    torch.manual_seed(13)
    x, grad = torch.randn(6, 2), torch.randn(6, 2)
    result = shard_forward_backward({"sync": SyncBatchNorm(2), "plain": BatchNorm(2, num_dims=2)}, x, grad)
    assert set(result["sync"]) == {"y", "grad_x", "grads", "state"}
    assert set(result["sync"]["grads"]) == {"weight", "bias"}
    # one process holds the whole batch: both agree with nn.BatchNorm1d on all of it
    reference, xr = nn.BatchNorm1d(2), x.clone().requires_grad_(True)
    yr = reference(xr)
    yr.backward(grad)
    for r in result.values():
        torch.testing.assert_close(r["y"], yr.detach())
        torch.testing.assert_close(r["grad_x"], xr.grad)
        torch.testing.assert_close(r["grads"]["weight"], reference.weight.grad)
        torch.testing.assert_close(r["grads"]["bias"], reference.bias.grad)
        for key in ("running_mean", "running_var", "num_batches_tracked"):
            torch.testing.assert_close(r["state"][key], reference.state_dict()[key])


# A launcher in miniature: it starts a worker that appends a line to a file every 20 ms (until a
# file named like it with ".stop" appears), says so, and waits. ``ignore_term`` makes both of them
# ignore SIGTERM (the worker inherits it).
LAUNCHER = """
import signal, subprocess, sys, time
if sys.argv[2] == "ignore_term":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
worker = (
    "import os, time\\n"
    "while not os.path.exists(%r):\\n"
    "    open(%r, 'a').write('tick\\\\n'); time.sleep(0.02)" % (sys.argv[1] + ".stop", sys.argv[1])
)
subprocess.Popen([sys.executable, "-c", worker])
print("started", flush=True)
time.sleep(600)
"""


@pytest.fixture
def ticks(tmp_path):
    """The worker's file; afterwards the worker is told to stop, whatever the test did."""
    path = tmp_path / "ticks"
    yield path
    (tmp_path / "ticks.stop").touch()


def _still_ticking(path) -> bool:
    time.sleep(0.3)  # let a live worker write
    before = path.stat().st_size
    time.sleep(0.3)
    return path.stat().st_size != before


@pytest.mark.skipif(sys.platform == "win32", reason="process groups are POSIX; on Windows only the command is killed")
@pytest.mark.parametrize("behaviour", ["default", "ignore_term"])
def test_run_command_timeout_stops_the_workers_too(ticks, behaviour):
    command = [sys.executable, "-c", LAUNCHER, str(ticks), behaviour]
    start = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired) as caught:
        run_command(command, timeout=2, grace=1)
    assert time.monotonic() - start < 30
    assert "started" in caught.value.output  # the output so far comes with the error
    assert ticks.exists(), "the worker never ran, so the test proves nothing"
    assert not _still_ticking(ticks)


def test_subprocess_run_leaves_the_worker_running(ticks):
    """The failure that run_command avoids, shown with the same launcher."""
    with pytest.raises(subprocess.TimeoutExpired):
        subprocess.run([sys.executable, "-c", LAUNCHER, str(ticks), "default"], stdout=subprocess.DEVNULL, timeout=2)
    assert _still_ticking(ticks)


def test_run_command_returns_output_and_exit_code():
    completed = run_command([sys.executable, "-c", "import sys; print('out'); sys.exit('failed')"])
    assert (completed.returncode, completed.stdout, completed.stderr) == (1, "out\n", "failed\n")


@pytest.mark.parametrize("timeout, grace", [(0, 1), (-1, 1), (1, -1)])
def test_run_command_refuses_bad_times(timeout, grace):
    with pytest.raises(ValueError, match="timeout must be positive"):
        run_command(["true"], timeout=timeout, grace=grace)
