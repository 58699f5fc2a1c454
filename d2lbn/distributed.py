"""Batch normalization across processes: synchronized statistics for data-parallel training.

In data-parallel training every process (a *replica*, usually one per GPU) holds a copy of the
network and a shard of each mini-batch. A plain batch norm then normalizes each shard with the
shard's own statistics. This module is the package form of chapter 10, which synchronizes them:

- :class:`SyncBatchNormFunction`, the training-mode transform whose forward pass all-reduces the
  per-channel count, sum and sum of squares across the process group and whose hand-derived
  backward pass all-reduces the two per-channel gradient sums, so that outputs and input
  gradients equal those of one batch norm over the concatenated batch;
- :class:`SyncBatchNorm`, the module, a :class:`d2lbn.norm.BatchNorm` that synchronizes while
  training in a process group of two or more processes and is exactly
  :class:`d2lbn.norm.BatchNorm` otherwise;
- :func:`convert_sync_batchnorm`, which swaps every batch norm of a model for a
  :class:`SyncBatchNorm`, keeping its parameters and buffers;
- :func:`launch`, :func:`shard` and :func:`shard_forward_backward`, to run a function in a few
  local processes joined in a process group (from a notebook, a test or a script) and to split
  a batch between them, and :func:`run_command`, to run a launcher such as ``torchrun`` from a
  notebook without leaving its workers behind when it times out.

PyTorch's own :class:`torch.nn.SyncBatchNorm` does the same job on GPUs (NCCL), but its
synchronized path needs CUDA-only kernels: in a process group of two or more CPU processes its
forward pass raises ``ValueError`` (checked with torch 2.14). The classes here run on any device
and any backend, gloo on the CPU included. The training script that uses them is
:mod:`d2lbn.ddp_lenet`.

**Combining statistics.** Replica :math:`r` holds :math:`m_r` values of a channel with mean
:math:`\\mu_r` and sum of squared deviations :math:`M_r = \\sum_i (x_i - \\mu_r)^2`, both computed
locally in two passes. One all-reduce (a sum over replicas) of the :math:`2C + 1` numbers

.. math::

    m_r, \\qquad m_r \\mu_r, \\qquad M_r + m_r \\mu_r^2

gives :math:`m = \\sum_r m_r`, :math:`\\mu = \\sum_r m_r \\mu_r / m` and
:math:`M = \\sum_r (M_r + m_r \\mu_r^2) - m \\mu^2 = \\sum_r M_r + \\sum_r m_r (\\mu_r - \\mu)^2`,
Chan, Golub and LeVeque's formula for merging the variances of groups. These three numbers
are the count, sum and sum of squares of the channel, but each process accumulates its sum in
float64 and squares deviations from its own mean, and the reduction runs in float64. Summing raw
squares :math:`\\sum_i x_i^2` in the input's float32 and subtracting :math:`m\\mu^2` loses every
digit of the variance once :math:`|\\mu|` is a few thousand times :math:`\\sigma`; here the one
subtraction of large numbers happens in float64, whose 16 digits leave the variance accurate to
float32 precision until :math:`|\\mu|` nears :math:`10^4 \\sigma`. Gathering every
replica's :math:`(m_r, \\mu_r, M_r)` instead (what :class:`torch.nn.SyncBatchNorm` does) costs
:math:`W (2C + 1)` numbers received per layer instead of :math:`2C + 1`.
"""

from __future__ import annotations

import functools
import os
import pickle
import queue as queue_module
import signal
import subprocess
import time
import traceback
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor, nn

from d2lbn.norm import (
    BatchNorm,
    _check_input,
    _compute_dtype,
    _first_derivatives_only,
    _per_channel,
    _reduce_dims,
    _statistics_to_use,
    _update_running,
    batch_norm,
)

__all__ = [
    "SyncBatchNormFunction",
    "SyncBatchNorm",
    "convert_sync_batchnorm",
    "launch",
    "run_command",
    "shard",
    "shard_forward_backward",
    "group_size",
]


# ----------------------------------------------------------------------------- process groups


def group_size(process_group: Optional[Any] = None) -> int:
    """The number of processes in ``process_group``: 1 when :mod:`torch.distributed` is not initialized.

    Parameters
    ----------
    process_group
        A group made by :func:`torch.distributed.new_group`, or ``None`` for all processes.

    Examples
    --------
    >>> group_size()  # a plain Python process: no process group
    1
    """
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size(process_group)


def _stats_dtype(x: Tensor) -> torch.dtype:
    """float64 for combining statistics, except on devices without it (Apple's MPS)."""
    return torch.float32 if x.device.type == "mps" else torch.float64


def _one_value_error(shape: tuple, count: int) -> ValueError:
    return ValueError(
        f"Expected more than 1 value per channel when training, got {count} value(s) per channel over all "
        f"processes (local input of shape {shape}): a batch of one normalizes every value to 0. Give the "
        "processes at least 2 examples in all, or call model.eval() to use the running statistics."
    )


# ----------------------------------------------------------------------------- the transform


_SYNC_SECOND_DERIVATIVE_ERROR = (
    "the hand-derived backward pass of d2lbn's SyncBatchNorm gives first derivatives only, and a "
    "second derivative was taken through it (a gradient penalty or a Hessian-vector product). "
    "Synchronized statistics have no twice-differentiable version here: for second derivatives, "
    "normalize each process's batch on its own with BatchNorm(..., manual_backward=False)"
)


class SyncBatchNormFunction(torch.autograd.Function):
    r"""The training-mode batch norm over the union of every process's batch, with a hand-derived backward.

    ``SyncBatchNormFunction.apply(x, weight, bias, running_mean, running_var, momentum, eps,
    process_group)`` is :class:`d2lbn.norm.BatchNormFunction` for a batch spread over the
    processes of ``process_group`` (``None``: all of them). Each process passes its own shard
    ``x``, of any size, even empty; every process must call it, in the same order.

    Forward: one all-reduce of :math:`2C + 1` float64 numbers (see the module's notes) gives
    the global count :math:`m`, mean :math:`\mu` and biased variance :math:`\sigma^2`; the
    shard is normalized with them, and ``running_mean`` and ``running_var`` (either may be
    ``None``) move towards :math:`\mu` and the unbiased :math:`\frac{m}{m-1}\sigma^2`,
    identically on every process.

    Backward: the input gradient of batch norm,

    .. math::

        \frac{\partial \ell}{\partial x_i} = \frac{\gamma}{\sqrt{\sigma^2 + \epsilon}}
        \Big(\frac{\partial \ell}{\partial y_i}
        - \frac{1}{m}\sum_j \frac{\partial \ell}{\partial y_j}
        - \frac{\hat x_i}{m} \sum_j \frac{\partial \ell}{\partial y_j} \hat x_j\Big),

    needs two sums over the *whole* batch per channel, so one all-reduce of :math:`2C` numbers
    (the local :math:`\sum_j \partial \ell / \partial y_j` and
    :math:`\sum_j (\partial \ell / \partial y_j)(x_j - \mu)`) precedes it. The gradients
    returned for ``weight`` and ``bias`` are this process's share of those sums, as
    :class:`torch.nn.SyncBatchNorm` returns them: :class:`torch.nn.parallel.DistributedDataParallel`
    combines them with every other parameter's gradient.

    Examples
    --------
    Outside a process group of several processes, use :class:`SyncBatchNorm`, which falls back to
    :class:`d2lbn.norm.BatchNormFunction`; :func:`launch` starts a group to try this function in.
    """

    @staticmethod
    def forward(
        ctx,
        x: Tensor,
        weight: Optional[Tensor],
        bias: Optional[Tensor],
        running_mean: Optional[Tensor],
        running_var: Optional[Tensor],
        momentum: float,
        eps: float,
        process_group: Optional[Any] = None,
    ) -> Tensor:
        num_channels = x.shape[1]
        dims = _reduce_dims(x)
        local_count = x.numel() // num_channels if num_channels else 0
        acc = _stats_dtype(x)
        input_dtype, x = x.dtype, x.to(_compute_dtype(x))  # half and bfloat16: work in float32
        # This process's count, sum and sum of squares about its own mean (two local passes).
        if local_count > 0:
            local_mean = x.sum(dims, dtype=acc) / local_count
            center = local_mean.to(x.dtype)  # the mean rounded to the working precision
            local_m2 = (x - _per_channel(center, x)).square_().sum(dims, dtype=acc)
            local_m2 -= local_count * (local_mean - center).square()  # squares about the exact mean
        else:
            local_mean = local_m2 = torch.zeros(num_channels, dtype=acc, device=x.device)
        stats = torch.cat(
            [
                torch.full((1,), float(local_count), dtype=acc, device=x.device),
                local_count * local_mean,
                local_m2 + local_count * local_mean.square(),
            ]
        )
        dist.all_reduce(stats, op=dist.ReduceOp.SUM, group=process_group)
        count = int(round(stats[0].item()))
        if count <= 1:  # every process sees the same count, so all of them raise
            raise _one_value_error(tuple(x.shape), count)
        total, total_sq = stats[1 : num_channels + 1], stats[num_channels + 1 :]
        mean = total / count
        var = (total_sq - count * mean.square()).div_(count).clamp_(min=0)  # biased
        if running_mean is not None:
            _update_running(running_mean, mean, momentum)
        if running_var is not None:
            _update_running(running_var, var * (count / (count - 1)), momentum)

        inv_std = _per_channel((var + eps).rsqrt_().to(x.dtype), x)
        scale = inv_std if weight is None else _per_channel(weight.to(x.dtype), x) * inv_std
        centered = x - _per_channel(mean.to(x.dtype), x)
        y = centered * scale
        if bias is not None:
            y += _per_channel(bias.to(x.dtype), x)
        ctx.save_for_backward(centered, inv_std, scale)
        ctx.count = count
        ctx.process_group = process_group
        ctx.input_dtype = input_dtype
        return y.to(input_dtype)

    @staticmethod
    @functools.partial(_first_derivatives_only, message=_SYNC_SECOND_DERIVATIVE_ERROR)
    def backward(ctx, grad_y: Tensor) -> Tuple[Optional[Tensor], ...]:
        centered, inv_std, scale = ctx.saved_tensors
        grad_y = grad_y.to(centered.dtype)
        num_channels = centered.shape[1]
        dims = _reduce_dims(centered)
        # This process's sums: of dl/dy (dl/dbeta) and of dl/dy * (x - mean) (dl/dgamma / inv_std).
        sum_dy = grad_y.sum(dims)
        sum_dy_xmu = (grad_y * centered).sum(dims)
        grad_x = None
        if ctx.needs_input_grad[0]:
            sums = torch.cat([sum_dy, sum_dy_xmu])
            dist.all_reduce(sums, op=dist.ReduceOp.SUM, group=ctx.process_group)
            global_dy, global_dy_xmu = _per_channel(sums[:num_channels], centered), _per_channel(
                sums[num_channels:], centered
            )
            # scale * (dy - sum(dy) / m - x_hat * sum(dy * x_hat) / m), x_hat = centered * inv_std
            grad_x = centered * (inv_std * inv_std * global_dy_xmu).mul_(-1.0 / ctx.count)
            grad_x += global_dy * (-1.0 / ctx.count)
            grad_x += grad_y
            grad_x *= scale
            grad_x = grad_x.to(ctx.input_dtype)
        grad_weight = (sum_dy_xmu * inv_std.view(-1)) if ctx.needs_input_grad[1] else None
        grad_bias = sum_dy if ctx.needs_input_grad[2] else None
        return grad_x, grad_weight, grad_bias, None, None, None, None, None


# ----------------------------------------------------------------------------- the module


class SyncBatchNorm(BatchNorm):
    r"""Batch norm whose training statistics cover the whole batch of every process of a group.

    While training in a process group of two or more processes, it normalizes with the mean and
    variance of the union of the processes' batches (:class:`SyncBatchNormFunction`), so that
    outputs, input gradients and running statistics are those of one
    :class:`d2lbn.norm.BatchNorm` over the concatenated batch, the same on every process. In
    evaluation mode, or when :mod:`torch.distributed` is not initialized, or in a group of one
    process, it *is* a :class:`d2lbn.norm.BatchNorm`: the same code path, bit for bit. Like
    :class:`torch.nn.SyncBatchNorm`, it synchronizes only in training mode.

    Parameters
    ----------
    num_features
        C, the number of features or channels.
    num_dims
        Dimensions of the input: 2 ``(N, C)``, 3 ``(N, C, L)``, 4 ``(N, C, H, W)`` or 5
        ``(N, C, D, H, W)``; ``None`` (default) accepts any input of 2 or more dimensions, as
        :class:`torch.nn.SyncBatchNorm` does.
    eps, momentum, affine, track_running_stats, manual_backward, device, dtype
        As for :class:`d2lbn.norm.BatchNorm`; ``manual_backward`` applies when not synchronizing
        (the synchronized path always uses the hand-derived backward).
    process_group
        The processes to synchronize across, from :func:`torch.distributed.new_group`; ``None``
        (default) for all of them.

    Examples
    --------
    Without a process group it computes exactly what :class:`d2lbn.norm.BatchNorm` computes:

    >>> x = torch.randn(8, 3, 5, 5)
    >>> torch.equal(SyncBatchNorm(3)(x), BatchNorm(3, num_dims=4)(x))
    True
    >>> sorted(SyncBatchNorm(3).state_dict()) == sorted(nn.BatchNorm2d(3).state_dict())
    True
    """

    def __init__(
        self,
        num_features: int,
        num_dims: Optional[int] = None,
        eps: float = 1e-5,
        momentum: Optional[float] = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        manual_backward: bool = True,
        device: Optional[Union[str, torch.device]] = None,
        dtype: Optional[torch.dtype] = None,
        *,
        process_group: Optional[Any] = None,
    ) -> None:
        if num_dims not in (None, 2, 3, 4, 5):
            raise ValueError(
                f"num_dims must be 2, 3, 4 or 5 (the input's dimensions), or None for any; got {num_dims!r}"
            )
        # BatchNorm checks every other argument; it knows num_dims 2 to 4 only, so pass one of them.
        super().__init__(
            num_features, 2, eps, momentum, affine, track_running_stats, manual_backward, device, dtype
        )
        self.num_dims = num_dims
        self.process_group = process_group

    def _needs_sync(self) -> bool:
        return self.training and group_size(self.process_group) > 1

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() < 2 or (self.num_dims is not None and x.dim() != self.num_dims):
            expected = "2 or more" if self.num_dims is None else str(self.num_dims)
            raise ValueError(
                f"{self._name()} expects a {expected}-D input (N, C, ...), got a {x.dim()}-D input of shape "
                f"{tuple(x.shape)}; add a batch dimension with x.unsqueeze(0) for a single example"
            )
        if x.shape[1] != self.num_features:
            raise ValueError(
                f"{self._name()} expects {self.num_features} channels in dimension 1, got {x.shape[1]} "
                f"(input shape {tuple(x.shape)}); set num_features to the preceding layer's output size"
            )
        sync = self._needs_sync()
        if not sync:
            _check_input(x, self.training)  # a refused batch leaves no trace in the buffers
        momentum = 0.0 if self.momentum is None else self.momentum
        count_batch = self.training and self.track_running_stats and self.num_batches_tracked is not None
        if count_batch and self.momentum is None:
            momentum = 1.0 / float(self.num_batches_tracked + 1)
        use_batch_stats, running_mean, running_var = _statistics_to_use(self)
        if sync:
            y = SyncBatchNormFunction.apply(
                x, self.weight, self.bias, running_mean, running_var, momentum, self.eps, self.process_group
            )
        else:
            # The path of d2lbn.norm.BatchNorm.forward, argument for argument.
            y = batch_norm(
                x,
                running_mean,
                running_var,
                self.weight,
                self.bias,
                training=use_batch_stats,
                momentum=momentum,
                eps=self.eps,
                manual_backward=self.manual_backward,
            )
        if count_batch:
            self.num_batches_tracked.add_(1)
        return y

    def _name(self) -> str:
        return f"SyncBatchNorm({self.num_features}, num_dims={self.num_dims})"


# ----------------------------------------------------------------------------- conversion


def _num_dims_of(module: nn.Module) -> Optional[int]:
    if isinstance(module, BatchNorm):
        return module.num_dims
    if isinstance(module, nn.BatchNorm2d):
        return 4
    if isinstance(module, nn.BatchNorm3d):
        return 5
    return None  # BatchNorm1d takes (N, C) and (N, C, L); nn.SyncBatchNorm takes any


def convert_sync_batchnorm(module: nn.Module, process_group: Optional[Any] = None) -> nn.Module:
    """Replace every batch norm in ``module`` by a :class:`SyncBatchNorm`, keeping its state.

    Each :class:`d2lbn.norm.BatchNorm` and each ``torch.nn.BatchNorm1d/2d/3d`` (and
    :class:`torch.nn.SyncBatchNorm`) becomes a :class:`SyncBatchNorm` with the same
    hyperparameters that *shares* the old layer's parameters and buffers (so an optimizer
    built before the conversion still updates them) and keeps its training mode. Like
    :meth:`torch.nn.SyncBatchNorm.convert_sync_batchnorm`, it changes the containers in place
    and returns ``module``, or the new layer when ``module`` itself is a batch norm. Convert
    before wrapping the model in :class:`torch.nn.parallel.DistributedDataParallel`. Other
    normalizations (layer, group, instance) are left alone: they need no synchronization.

    Parameters
    ----------
    module
        A model, or a single batch-norm layer.
    process_group
        The group to synchronize across (``None``: all processes); a :class:`SyncBatchNorm`
        already in ``module`` is moved to this group when one is given.

    Returns
    -------
    torch.nn.Module
        The converted model.

    Raises
    ------
    ValueError
        For a lazy batch norm whose size is not known yet: run one batch through it first.

    Examples
    --------
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    >>> gamma = net[1].weight
    >>> net = convert_sync_batchnorm(net)
    >>> net[1]
    SyncBatchNorm(4, num_dims=4, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)
    >>> net[1].weight is gamma
    True
    """
    converted = module
    if isinstance(module, SyncBatchNorm):
        if process_group is not None:
            module.process_group = process_group
    elif isinstance(module, (BatchNorm, nn.modules.batchnorm._BatchNorm)):
        if isinstance(module, nn.modules.lazy.LazyModuleMixin) and module.has_uninitialized_params():
            raise ValueError(
                f"cannot convert {type(module).__name__} before its number of features is known; "
                "run one batch through the model first"
            )
        reference = next((t for t in (module.weight, module.running_mean) if t is not None), None)
        factory = {} if reference is None else {"device": reference.device, "dtype": reference.dtype}
        converted = SyncBatchNorm(
            module.num_features,
            _num_dims_of(module),
            eps=module.eps,
            momentum=module.momentum,
            affine=module.affine,
            track_running_stats=module.track_running_stats,
            manual_backward=getattr(module, "manual_backward", True),
            process_group=process_group,
            **factory,
        )
        converted.weight = module.weight  # shared, not copied; None when affine=False or bias=False
        converted.bias = module.bias
        converted.running_mean = module.running_mean
        converted.running_var = module.running_var
        converted.num_batches_tracked = module.num_batches_tracked
        converted.train(module.training)
    for name, child in module.named_children():
        converted.add_module(name, convert_sync_batchnorm(child, process_group))
    return converted


# ----------------------------------------------------------------------------- launching processes


def shard(batch: Tensor, rank: Optional[int] = None, num_shards: Optional[int] = None) -> Tensor:
    """This process's contiguous share of a batch (along dimension 0).

    The shards of ranks 0, 1, ... concatenated in order give back ``batch``; their sizes differ
    by at most one when ``len(batch)`` is not a multiple of ``num_shards``.

    Parameters
    ----------
    batch
        A tensor whose first dimension indexes examples.
    rank, num_shards
        Which share, of how many; by default this process's rank and the world size
        (0 and 1 outside a process group).

    Examples
    --------
    >>> shard(torch.arange(10), rank=1, num_shards=2)
    tensor([5, 6, 7, 8, 9])
    >>> shard(torch.arange(5), rank=0, num_shards=2)
    tensor([0, 1, 2])
    """
    initialized = dist.is_available() and dist.is_initialized()
    if rank is None:
        rank = dist.get_rank() if initialized else 0
    if num_shards is None:
        num_shards = group_size()
    if not 0 <= rank < num_shards:
        raise ValueError(f"rank must be in [0, {num_shards}), got {rank}")
    return batch.tensor_split(num_shards)[rank]


def shard_forward_backward(
    modules: Mapping[str, nn.Module], x: Tensor, grad_y: Tensor
) -> Dict[str, Dict[str, Any]]:
    """Run each module in training mode on this process's shard of ``x`` and back-propagate ``grad_y``'s.

    A worker for :func:`launch` (or any process group): every process runs the same modules on
    its own :func:`shard` of the batch, which is what data-parallel training does to a batch
    norm. Each module is used as given (a fresh copy arrives in each process through
    :func:`launch`).

    Parameters
    ----------
    modules
        Name -> module, e.g. ``{"local": BatchNorm(6, num_dims=4), "sync": SyncBatchNorm(6)}``.
    x, grad_y
        The whole batch and the gradient of the loss with respect to the whole output.

    Returns
    -------
    dict
        Name -> ``{"y": output shard, "grad_x": input gradient shard, "grads": {parameter name:
        gradient}, "state": state_dict}``, all detached CPU tensors.
    """
    results = {}
    for name, module in modules.items():
        xs = shard(x).detach().clone().requires_grad_(True)
        module.train()
        module.zero_grad(set_to_none=True)
        y = module(xs)
        y.backward(shard(grad_y))
        results[name] = {
            "y": y.detach().cpu(),
            "grad_x": xs.grad.detach().cpu(),
            "grads": {n: p.grad.detach().cpu() for n, p in module.named_parameters() if p.grad is not None},
            "state": {k: v.detach().cpu().clone() for k, v in module.state_dict().items()},
        }
    return results


def _worker(
    fn: Callable[..., Any],
    args: bytes,
    rank: int,
    size: int,
    backend: str,
    port: int,
    threads: int,
    results: Any,
) -> None:
    """One launched process: join the group through the parent's store, run ``fn``, report back."""
    os.environ.update(
        {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(size), "LOCAL_WORLD_SIZE": str(size)}
    )
    torch.set_num_threads(threads)
    try:
        store = dist.TCPStore("127.0.0.1", port, is_master=False)
        dist.init_process_group(backend, store=store, rank=rank, world_size=size)
        try:
            positional, keywords = pickle.loads(args)
            result = fn(*positional, **keywords)
        finally:
            dist.destroy_process_group()
        results.put((rank, None, pickle.dumps(result)))
    except BaseException:  # report every failure, KeyboardInterrupt included, then exit
        results.put((rank, traceback.format_exc(), None))


def launch(
    fn: Callable[..., Any],
    world_size: int = 2,
    args: Sequence[Any] = (),
    kwargs: Optional[Mapping[str, Any]] = None,
    *,
    backend: str = "gloo",
    timeout: float = 300.0,
    threads: Optional[int] = None,
) -> List[Any]:
    """Run ``fn(*args, **kwargs)`` in ``world_size`` new local processes joined in a process group.

    Each process is started fresh (the ``spawn`` method, so it works from a notebook and with
    CUDA), joins a process group through a store that this process hosts on 127.0.0.1 (on a
    port the system picks, so launches never collide), calls ``fn`` and leaves the group.
    Inside ``fn``, :func:`torch.distributed.get_rank` tells the processes apart, as in a script
    started by ``torchrun``; the environment variables ``RANK``, ``LOCAL_RANK``,
    ``WORLD_SIZE`` and ``LOCAL_WORLD_SIZE`` are set as ``torchrun`` sets them.

    ``fn`` must be importable by name (defined in a module, not in a notebook or ``__main__``),
    since the new processes import it. The arguments are pickled to them by value, so each
    process gets its own copy: a module passed as an argument is copied, not shared.

    Parameters
    ----------
    fn
        The function every process runs.
    world_size
        How many processes.
    args, kwargs
        Its positional and keyword arguments.
    backend
        ``"gloo"`` (CPU, default) or ``"nccl"`` (one GPU per process).
    timeout
        Seconds to wait for all the results before stopping the processes.
    threads
        PyTorch threads per process; by default the CPU cores divided among the processes, so
        that they do not compete for cores.

    Returns
    -------
    list
        ``fn``'s return value in each process, by rank (tensors come back as copies).

    Raises
    ------
    RuntimeError
        If a process raised (the message holds its traceback), died, or the time ran out; the
        other processes are then stopped.

    Examples
    --------
    >>> launch(group_size, world_size=2)  # two new processes, each in a group of two
    [2, 2]
    """
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be a positive int, got {world_size!r}")
    if getattr(fn, "__module__", None) == "__main__" or "<locals>" in getattr(fn, "__qualname__", ""):
        raise ValueError(
            f"launch runs {getattr(fn, '__qualname__', fn)!r} in new processes, which must import it; "
            "define it at the top level of a module (a .py file) and import it from there"
        )
    if threads is None:
        threads = max(1, (os.cpu_count() or 1) // world_size)
    # Arguments travel by value (plain pickle), not through shared memory: each process must get
    # its own copy of a module, or every process would update the same running statistics.
    payload = pickle.dumps((tuple(args), dict(kwargs or {})))
    context = mp.get_context("spawn")
    store = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    results = context.Queue()
    processes = [
        context.Process(
            target=_worker,
            args=(fn, payload, rank, world_size, backend, store.port, threads, results),
            daemon=True,
        )
        for rank in range(world_size)
    ]
    for process in processes:
        process.start()
    outputs: Dict[int, Any] = {}
    failure = None
    deadline = time.monotonic() + timeout
    try:
        while len(outputs) < world_size and failure is None:
            try:
                rank, error, data = results.get(timeout=0.2)
            except queue_module.Empty:
                dead = [r for r, p in enumerate(processes) if p.exitcode not in (None, 0) and r not in outputs]
                if dead:
                    failure = f"process {dead[0]} died with exit code {processes[dead[0]].exitcode}"
                elif time.monotonic() > deadline:
                    failure = f"no result within {timeout} s (a process may be waiting for another one)"
                continue
            if error is not None:
                failure = f"process {rank} raised:\n{error}"
            else:
                outputs[rank] = pickle.loads(data)
    finally:
        for process in processes:
            process.join(timeout=5 if failure is None else 0.5)
        for process in processes:
            if process.is_alive():
                process.terminate()
                process.join()
        results.close()
        del store
    if failure is not None:
        raise RuntimeError(f"launch({getattr(fn, '__qualname__', fn)}, world_size={world_size}): {failure}")
    return [outputs[rank] for rank in range(world_size)]


def run_command(command: Sequence[str], timeout: float = 300.0, grace: float = 10.0) -> "subprocess.CompletedProcess[str]":
    """Run ``command`` and capture its output; on timeout, stop it and every process it started.

    ``subprocess.run(command, timeout=...)`` kills only the process it started. A launcher
    such as ``torchrun`` killed that way cannot stop its workers, which go on running (and
    holding their port) after the notebook has moved on. Here the command starts in a process
    group of its own; when the time runs out the whole group gets ``SIGTERM`` (``torchrun``
    passes it on to its workers and shuts down), and whatever is still running ``grace``
    seconds later gets ``SIGKILL``. Then ``subprocess.TimeoutExpired`` is raised, carrying the
    output so far. On Windows, which has no process groups, only the command itself is killed.

    Parameters
    ----------
    command
        The program and its arguments, as for :func:`subprocess.run`.
    timeout
        Seconds the command may run.
    grace
        Seconds between ``SIGTERM`` and ``SIGKILL`` after a timeout.

    Returns
    -------
    subprocess.CompletedProcess
        With ``returncode``, and ``stdout`` and ``stderr`` as text. A failing command is not an
        error here: check ``returncode``.

    Examples
    --------
    >>> import sys
    >>> run_command([sys.executable, "-c", "print(6 * 7)"]).stdout
    '42\\n'
    """
    if timeout <= 0 or grace < 0:
        raise ValueError(f"timeout must be positive and grace not negative, got {timeout!r} and {grace!r}")
    posix = os.name == "posix"
    process = subprocess.Popen(
        list(command), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=posix
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        if posix:
            _signal_group(process.pid, signal.SIGTERM)
            try:
                stdout, stderr = process.communicate(timeout=grace)
            except subprocess.TimeoutExpired:  # ignored SIGTERM, or a worker holds the pipes open
                _signal_group(process.pid, signal.SIGKILL)
                stdout, stderr = process.communicate()
            _signal_group(process.pid, signal.SIGKILL)  # any worker that outlived the launcher
        else:
            process.kill()
            stdout, stderr = process.communicate()
        raise subprocess.TimeoutExpired(process.args, timeout, output=stdout, stderr=stderr) from None
    except BaseException:  # KeyboardInterrupt in a notebook: leave nothing running either
        if posix:
            _signal_group(process.pid, signal.SIGKILL)
        process.kill()
        process.wait()
        raise
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def _signal_group(group: int, sig: int) -> None:
    try:
        os.killpg(group, sig)
    except ProcessLookupError:  # every process of the group has already exited
        pass
