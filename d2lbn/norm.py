"""Batch normalization from scratch.

This module is the package form of chapters 2 and 3 of the course. It holds:

- :func:`batch_norm`, the functional form, with the same arguments as
  :func:`torch.nn.functional.batch_norm`;
- :class:`BatchNormFunction`, the training-mode transform with its backward pass derived by
  hand, as a :class:`torch.autograd.Function`;
- :class:`BatchNorm`, the module, numerically equivalent to :class:`torch.nn.BatchNorm1d` and
  :class:`torch.nn.BatchNorm2d` (same buffers, same ``state_dict`` keys, same momentum
  convention);
- :func:`fold_batch_norm`, which merges an evaluation-mode batch norm into the convolution or
  linear layer before it.

Conventions follow PyTorch: the statistics are taken over every dimension except dimension 1
(the features of an ``(N, C)`` input, the channels of an ``(N, C, H, W)`` input); training
normalizes with the biased batch variance and stores the unbiased one in ``running_var``; the
running statistics move by ``running = (1 - momentum) * running + momentum * batch``.
"""

from __future__ import annotations

import copy
import functools
from typing import Callable, Optional, Tuple, Union

import torch
from torch import Tensor, nn

__all__ = ["batch_norm", "BatchNormFunction", "BatchNorm", "fold_batch_norm"]


def _reduce_dims(x: Tensor) -> Tuple[int, ...]:
    """The dimensions a batch norm averages over: all but dimension 1."""
    return (0,) + tuple(range(2, x.dim()))


def _per_channel(t: Tensor, x: Tensor) -> Tensor:
    """View a per-channel vector of shape (C,) so that it broadcasts against ``x``."""
    return t.view((1, -1) + (1,) * (x.dim() - 2))


def _channel_sum(t: Tensor) -> Tensor:
    """Per-channel sums of ``t``, of shape (1, C) or (1, C, 1, 1) so that they broadcast.

    For (N, C, H, W) it first sums each (H, W) plane, which lies contiguous in memory, then
    over N. The result is the same sum as ``t.sum((0, 2, 3), keepdim=True)`` up to rounding,
    but PyTorch's CPU reduction over the non-adjacent dimensions 0, 2 and 3 at once is slower:
    1.0 to 1.6 times on LeNet's first batch-norm input (256 x 6 x 24 x 24), 1.8 to 2.4 times on
    its second (256 x 16 x 8 x 8), in runs of the benchmark on this book's two-core CPU with two
    threads. With one reduction, ``benchmarks/bench_batchnorm.py`` measured :class:`BatchNorm`
    at 0.94 to 1.00 times the training speed of ``nn.BatchNorm``; with two steps, at 0.99 to
    1.03 times (twelve runs on two days).
    """
    if t.dim() == 2:
        return t.sum(0, keepdim=True)
    return _per_channel(t.sum(tuple(range(2, t.dim()))).sum(0), t)


def _values_per_channel(x: Tensor) -> int:
    """How many values each channel averages over: m for (m, C), m * p * q for (m, C, p, q)."""
    return x.numel() // x.shape[1]


def _compute_dtype(x: Tensor) -> torch.dtype:
    """The dtype the statistics are computed in: float32 for half and bfloat16 inputs, whose
    squares overflow (half) or lose most of their digits (bfloat16), as PyTorch's kernel does."""
    return torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype


def _update_running(running: Tensor, batch: Tensor, momentum: float) -> None:
    """``running += momentum * (batch - running)`` in place, computed in the wider of the two
    dtypes (a half-precision buffer moving towards a float32 statistic does not overflow)."""
    wide = torch.promote_types(running.dtype, batch.dtype)
    if running.dtype == wide:
        running.lerp_(batch.to(wide), momentum)
    else:
        running.copy_(running.to(wide).lerp_(batch, momentum))


def _check_input(x: Tensor, training: bool) -> None:
    if x.dim() < 2:
        raise ValueError(
            f"batch norm expects an input of shape (N, C) or (N, C, H, W), got shape {tuple(x.shape)}; "
            "add a batch dimension with x.unsqueeze(0) for a single example"
        )
    if training and x.numel() == x.shape[1] and x.numel() > 0:
        raise ValueError(
            f"Expected more than 1 value per channel when training, got input of shape {tuple(x.shape)}: "
            "a batch of one normalizes every value to 0 with its own statistics. Train with batches of "
            "at least 2 examples; to predict one example, call model.eval() on a batch norm that keeps "
            "running statistics (track_running_stats=True, the default)."
        )


_SECOND_DERIVATIVE_ERROR = (
    "the hand-derived backward pass of d2lbn's batch norm gives first derivatives only, and a second "
    "derivative was taken through it. Use BatchNorm(..., manual_backward=False) (or "
    "batch_norm(..., manual_backward=False)), whose op-by-op formula autograd can differentiate as "
    "often as needed"
)


class _NoSecondDerivative(torch.autograd.Function):
    """Passes tensors through unchanged; differentiating through it raises ``message``."""

    @staticmethod
    def forward(ctx, message: str, *tensors: Optional[Tensor]) -> Tuple[Optional[Tensor], ...]:
        ctx.message = message
        return tuple(None if t is None else t.view_as(t) for t in tensors)

    @staticmethod
    def backward(ctx, *grads: Tensor) -> Tuple[Tensor, ...]:
        raise RuntimeError(ctx.message)


def _first_derivatives_only(backward: Callable, message: str = _SECOND_DERIVATIVE_ERROR) -> Callable:
    """:func:`torch.autograd.function.once_differentiable`, with an error that says what to do.

    The backward pass runs without recording a graph. When it was called to build one
    (``create_graph=True``) from gradients that require grad, its outputs are returned through
    a node that raises the error only if a second derivative is actually taken through them,
    so a double-backward computation that does not pass through batch norm still works.

    When the incoming gradients do not require grad (a loss linear in the output, whose
    gradient is a constant), ``once_differentiable`` returns the gradients as constants,
    although they depend on the input through the saved tensors: a gradient penalty built on
    them then gets a silently wrong second derivative. Here that case raises the error at once,
    since any second derivative through these gradients would be wrong.
    """

    @functools.wraps(backward)
    def wrapper(ctx, *grads):
        if not torch.is_grad_enabled():  # an ordinary backward pass
            return backward(ctx, *grads)
        # create_graph=True: a graph of the gradients was asked for
        if not any(isinstance(g, Tensor) and g.requires_grad for g in grads):
            raise RuntimeError(message + " (create_graph=True asked for a graph of the gradients)")
        with torch.no_grad():
            outputs = backward(ctx, *grads)
        return _NoSecondDerivative.apply(
            message, *[None if t is None else t.detach().requires_grad_(True) for t in outputs]
        )

    return wrapper


class BatchNormFunction(torch.autograd.Function):
    r"""The training-mode batch-norm transform with a hand-derived backward pass.

    ``BatchNormFunction.apply(x, weight, bias, running_mean, running_var, momentum, eps)``
    normalizes ``x`` with the mean and biased variance of the batch, scales by ``weight`` and
    shifts by ``bias`` (either may be ``None``), and moves ``running_mean`` and ``running_var``
    (either may be ``None``) towards the batch's mean and unbiased variance, in place.

    With :math:`\hat x = (x - \mu_B)/\sqrt{\sigma_B^2 + \epsilon}` and :math:`m` values per
    channel, the backward pass is

    .. math::

        \frac{\partial \ell}{\partial \beta} = \sum_i \frac{\partial \ell}{\partial y_i}, \qquad
        \frac{\partial \ell}{\partial \gamma} = \sum_i \frac{\partial \ell}{\partial y_i} \hat x_i,

        \frac{\partial \ell}{\partial x_i} = \frac{\gamma}{\sqrt{\sigma_B^2 + \epsilon}}
        \Big(\frac{\partial \ell}{\partial y_i}
        - \frac{1}{m}\frac{\partial \ell}{\partial \beta}
        - \frac{1}{m}\hat x_i \frac{\partial \ell}{\partial \gamma}\Big).

    Forward and backward each read the activation tensor only a few times and do the rest on
    per-channel vectors, so the module that uses this function trains about as fast as
    PyTorch's fused C++ kernel (see ``benchmarks/bench_batchnorm.py``). The backward pass gives
    first derivatives only. As with ``@once_differentiable``, a graph built through it with
    ``create_graph=True`` works for whatever does not differentiate it again; a second derivative
    through it (a gradient penalty on the input, a Hessian-vector product) fails with an error
    that points to ``manual_backward=False``. Where ``@once_differentiable`` would let a wrong
    second derivative through (a loss linear in the output, whose gradient is a constant), the
    error comes at once, from the ``create_graph=True`` call. It is an old-style
    ``autograd.Function`` (no ``setup_context``), so :mod:`torch.func` transforms such as
    ``torch.func.grad`` and ``vmap`` refuse it; use ``manual_backward=False`` under them.

    Examples
    --------
    >>> x = torch.randn(8, 3, dtype=torch.float64, requires_grad=True)
    >>> w = torch.ones(3, dtype=torch.float64, requires_grad=True)
    >>> b = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    >>> f = lambda x, w, b: BatchNormFunction.apply(x, w, b, None, None, 0.1, 1e-5)
    >>> torch.autograd.gradcheck(f, (x, w, b))
    True
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
    ) -> Tensor:
        ctx.input_dtype = x.dtype
        x = x.to(_compute_dtype(x))  # the same tensor, not a copy, unless x is half or bfloat16
        m = _values_per_channel(x)
        mean = _channel_sum(x).div_(m)
        centered = x - mean
        y = centered * centered  # a scratch buffer for the squares, then the output
        var = _channel_sum(y).div_(m)
        # running += momentum * (batch - running), with the unbiased variance m / (m - 1) * var
        if running_mean is not None:
            _update_running(running_mean, mean.view(-1), momentum)
        if running_var is not None:
            _update_running(running_var, var.view(-1) * (m / (m - 1)), momentum)
        inv_std = (var + eps).rsqrt_()
        scale = inv_std if weight is None else _per_channel(weight.to(x.dtype), x) * inv_std
        torch.mul(centered, scale, out=y)
        if bias is not None:
            y += _per_channel(bias.to(x.dtype), x)
        # Keep x - mean rather than x: the backward pass needs it, and x itself is not needed.
        ctx.save_for_backward(centered, inv_std, scale)
        return y.to(ctx.input_dtype)

    @staticmethod
    @_first_derivatives_only
    def backward(ctx, grad_y: Tensor) -> Tuple[Optional[Tensor], ...]:
        centered, inv_std, scale = ctx.saved_tensors  # scale = gamma / sqrt(var + eps)
        grad_y = grad_y.to(centered.dtype)
        grad_beta = _channel_sum(grad_y)
        grad_x = grad_y * centered  # a scratch buffer for the products, then the result
        grad_gamma = _channel_sum(grad_x).mul_(inv_std)
        if ctx.needs_input_grad[0]:
            # grad_x = scale * (grad_y - grad_beta / m - x_hat * grad_gamma / m), with
            # x_hat = centered * inv_std, computed as centered * a + c + grad_y * scale: three
            # passes over the activations, the rest on per-channel vectors.
            q = scale * (-1.0 / _values_per_channel(centered))
            a = (q * inv_std).mul_(grad_gamma)
            torch.mul(centered, a, out=grad_x)
            grad_x += q.mul_(grad_beta)
            grad_x.addcmul_(grad_y, scale)
            grad_x = grad_x.to(ctx.input_dtype)
        else:
            grad_x = None
        grad_weight = grad_gamma.view(-1) if ctx.needs_input_grad[1] else None
        grad_bias = grad_beta.view(-1) if ctx.needs_input_grad[2] else None
        return grad_x, grad_weight, grad_bias, None, None, None, None


def _batch_norm_autograd(
    x: Tensor,
    weight: Optional[Tensor],
    bias: Optional[Tensor],
    running_mean: Optional[Tensor],
    running_var: Optional[Tensor],
    momentum: float,
    eps: float,
) -> Tensor:
    """The same transform as :class:`BatchNormFunction`, op by op, differentiated by autograd."""
    input_dtype, x = x.dtype, x.to(_compute_dtype(x))
    dims = _reduce_dims(x)
    mean = x.mean(dim=dims, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=dims, keepdim=True)
    with torch.no_grad():
        if running_mean is not None:
            _update_running(running_mean, mean.view(-1), momentum)
        if running_var is not None:
            m = _values_per_channel(x)
            _update_running(running_var, var.view(-1) * (m / (m - 1)), momentum)
    x_hat = (x - mean) / torch.sqrt(var + eps)
    y = x_hat
    if weight is not None:
        y = y * _per_channel(weight.to(x.dtype), x)
    if bias is not None:
        y = y + _per_channel(bias.to(x.dtype), x)
    return y.to(input_dtype)


def batch_norm(
    x: Tensor,
    running_mean: Optional[Tensor],
    running_var: Optional[Tensor],
    weight: Optional[Tensor] = None,
    bias: Optional[Tensor] = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
    *,
    manual_backward: bool = True,
) -> Tensor:
    r"""Batch-normalize ``x`` per channel; the same contract as :func:`torch.nn.functional.batch_norm`.

    Parameters
    ----------
    x
        Input of shape ``(N, C)`` (statistics over the N examples of each feature) or
        ``(N, C, H, W)`` (statistics over the N * H * W values of each channel).
    running_mean, running_var
        Running statistics of shape ``(C,)``, or ``None`` not to keep any. In training they are
        updated in place: ``running = (1 - momentum) * running + momentum * batch``, where the
        batch variance stored is the unbiased one (times m / (m - 1)).
    weight, bias
        :math:`\gamma` and :math:`\beta` of shape ``(C,)``, or ``None`` for 1 and 0.
    training
        ``True`` normalizes with the statistics of this batch; ``False`` with the running ones.
    momentum
        Weight of the new batch in the running statistics (PyTorch's convention; Keras's
        ``momentum`` is ``1 - momentum`` here).
    eps
        Added to the variance before the square root. Unlike :func:`torch.nn.functional.batch_norm`,
        which refuses ``eps=0`` in training, ``0`` is allowed, to show the paper's formula exactly
        (a constant channel then gives ``nan``); a negative ``eps`` raises ``ValueError``.
    manual_backward
        ``True`` (default) uses :class:`BatchNormFunction` and its hand-derived backward pass,
        which gives first derivatives only; ``False`` writes the transform op by op and lets
        autograd differentiate it, twice if asked (``create_graph=True``).

    Returns
    -------
    Tensor
        The normalized, scaled and shifted input, of the same shape as ``x``.

    Examples
    --------
    >>> x = torch.tensor([[1.0, 10.0], [3.0, 30.0]])
    >>> batch_norm(x, None, None, training=True, eps=0.0)
    tensor([[-1., -1.],
            [ 1.,  1.]])
    """
    _check_input(x, training)
    if eps < 0:
        raise ValueError(f"batch_norm eps must be 0 or more, got {eps}; PyTorch's default is 1e-5")
    if x.numel() == 0:  # an empty batch: nothing to normalize, and no statistics to learn from
        y = x.clone()  # empty, but weight and bias stay in the graph: zero gradients, as in PyTorch
        if weight is not None:
            y = y * _per_channel(weight.to(x.dtype), x)
        if bias is not None:
            y = y + _per_channel(bias.to(x.dtype), x)
        return y
    if training:
        transform = BatchNormFunction.apply if manual_backward else _batch_norm_autograd
        return transform(x, weight, bias, running_mean, running_var, momentum, eps)
    if running_mean is None or running_var is None:
        raise ValueError(
            "batch_norm with training=False normalizes with the running statistics, "
            "so running_mean and running_var must be given; pass training=True to use the batch's own"
        )
    # In prediction the transform is a fixed affine map per channel: y = x * scale + shift,
    # computed in float32 or wider (half-precision buffers and parameters too) and returned in
    # the input's dtype.
    compute = torch.promote_types(_compute_dtype(x), _compute_dtype(running_var))
    scale = torch.rsqrt(running_var.to(compute) + eps)
    if weight is not None:
        scale = scale * weight.to(compute)
    shift = -running_mean.to(compute) * scale
    if bias is not None:
        shift = shift + bias.to(compute)
    y = x.to(compute) * _per_channel(scale, x) + _per_channel(shift, x)
    return y.to(x.dtype)


def _statistics_to_use(bn: "BatchNorm") -> Tuple[bool, Optional[Tensor], Optional[Tensor]]:
    """PyTorch's rule for a batch-norm module: whether to normalize with the batch's statistics,
    and which running buffers to pass (to update in training, to normalize with in evaluation).

    Training uses the batch; evaluation uses the running statistics, or the batch's when there
    are no running buffers (``track_running_stats=False`` at construction, or buffers set to
    ``None``). Training updates the buffers only while ``track_running_stats`` is on.
    """
    use_batch_stats = bn.training or (bn.running_mean is None and bn.running_var is None)
    pass_buffers = not bn.training or bn.track_running_stats
    return (
        use_batch_stats,
        bn.running_mean if pass_buffers else None,
        bn.running_var if pass_buffers else None,
    )


class BatchNorm(nn.Module):
    r"""Batch normalization written from scratch, equivalent to ``nn.BatchNorm1d/2d``.

    ``BatchNorm(num_features, num_dims=2)`` follows a ``Linear`` layer (input ``(N, C)``) and
    matches :class:`torch.nn.BatchNorm1d`; ``BatchNorm(num_features, num_dims=4)`` follows a
    ``Conv2d`` (input ``(N, C, H, W)``) and matches :class:`torch.nn.BatchNorm2d`.

    In training mode (``model.train()``) it normalizes with the statistics of the batch and
    updates the running statistics; in evaluation mode (``model.eval()``) it normalizes with the
    running statistics, so a prediction depends on its own input only. Which one happens
    follows ``self.training``, not whether gradients are being recorded. As in PyTorch, a
    float16 or bfloat16 input (under autocast too) has its statistics computed in float32 and
    comes out in its own dtype.

    Parameters
    ----------
    num_features
        C, the number of features or channels.
    num_dims
        2 for fully connected inputs ``(N, C)``, 3 for ``(N, C, L)``, 4 for convolutional inputs
        ``(N, C, H, W)``.
    eps
        Added to the variance for numerical stability.
    momentum
        Weight of the new batch in the running statistics; ``None`` keeps a cumulative average
        over all batches seen (``1 / num_batches_tracked``).
    affine
        Learn a scale :math:`\gamma` (``weight``) and a shift :math:`\beta` (``bias``) per channel.
    track_running_stats
        Keep ``running_mean``, ``running_var`` and ``num_batches_tracked`` buffers. Without them,
        the batch statistics are used in evaluation mode too.
    manual_backward
        Use the hand-derived backward pass of :class:`BatchNormFunction` (default), or let autograd
        differentiate the op-by-op formula. The hand-derived pass gives first derivatives only;
        for second derivatives (``create_graph=True``) pass ``False``.
    device, dtype
        Where and in which floating-point type to create the parameters and running
        statistics, as in ``torch.nn`` layers.

    Attributes
    ----------
    weight, bias
        :math:`\gamma` and :math:`\beta`, parameters of shape ``(C,)``; also readable as
        ``gamma`` and ``beta``.
    running_mean, running_var
        Buffers of shape ``(C,)``, initialized to 0 and 1.
    num_batches_tracked
        How many training batches updated the running statistics.

    Examples
    --------
    >>> bn = BatchNorm(3, num_dims=4)
    >>> y = bn(torch.randn(8, 3, 5, 5))
    >>> torch.allclose(y.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-6)
    True
    >>> sorted(bn.state_dict()) == sorted(nn.BatchNorm2d(3).state_dict())
    True
    """

    # Version 2 of the state_dict has num_batches_tracked, as for PyTorch's batch norms.
    _version = 2

    def __init__(
        self,
        num_features: int,
        num_dims: int,
        eps: float = 1e-5,
        momentum: Optional[float] = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        manual_backward: bool = True,
        device: Optional[Union[str, torch.device]] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__()
        if not isinstance(num_features, int) or num_features < 1:
            raise ValueError(f"num_features must be a positive int (the number of channels), got {num_features!r}")
        if num_dims not in (2, 3, 4):
            raise ValueError(
                f"num_dims must be 2 (after a Linear layer), 3 (after a Conv1d) or 4 (after a Conv2d), got {num_dims!r}"
            )
        if momentum is not None and not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1] or None for a cumulative average, got {momentum!r}")
        if eps < 0:
            raise ValueError(f"eps must be non-negative (it is added to the variance), got {eps!r}")
        self.num_features = num_features
        self.num_dims = num_dims
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        self.manual_backward = manual_backward
        factory = {"device": device, "dtype": dtype}
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features, **factory))
            self.bias = nn.Parameter(torch.zeros(num_features, **factory))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features, **factory))
            self.register_buffer("running_var", torch.ones(num_features, **factory))
            self.register_buffer(
                "num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device)
            )
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    @property
    def gamma(self) -> Optional[nn.Parameter]:
        """The learned scale, :math:`\\gamma` in the paper (PyTorch calls it ``weight``)."""
        return self.weight

    @property
    def beta(self) -> Optional[nn.Parameter]:
        """The learned shift, :math:`\\beta` in the paper (PyTorch calls it ``bias``)."""
        return self.bias

    def reset_running_stats(self) -> None:
        """Set the running mean to 0, the running variance to 1 and the batch count to 0."""
        if self.track_running_stats:
            self.running_mean.zero_()
            self.running_var.fill_(1)
            self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        """Reset the running statistics, and :math:`\\gamma` to 1 and :math:`\\beta` to 0."""
        self.reset_running_stats()
        if self.affine:
            nn.init.ones_(self.weight)
            nn.init.zeros_(self.bias)

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ) -> None:
        # A state_dict saved before num_batches_tracked existed (no version, or version 1), or a
        # plain dict without it, loads as in PyTorch: the count starts from zero (or keeps its value).
        key = prefix + "num_batches_tracked"
        if self.track_running_stats and local_metadata.get("version", 1) < 2 and key not in state_dict:
            tracked = self.num_batches_tracked
            state_dict[key] = tracked if tracked.device.type != "meta" else torch.tensor(0, dtype=torch.long)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != self.num_dims:
            layout = {2: "(N, C)", 3: "(N, C, L)", 4: "(N, C, H, W)"}[self.num_dims]
            raise ValueError(
                f"{self._name()} expects a {self.num_dims}-D input {layout}, got a {x.dim()}-D input "
                f"of shape {tuple(x.shape)}; use num_dims=2 after a Linear layer, num_dims=3 after a Conv1d "
                "and num_dims=4 after a Conv2d"
            )
        if x.shape[1] != self.num_features:
            raise ValueError(
                f"{self._name()} expects {self.num_features} channels in dimension 1, got {x.shape[1]} "
                f"(input shape {tuple(x.shape)}); set num_features to the preceding layer's output size"
            )
        _check_input(x, self.training)  # before counting the batch: a refused one leaves no trace
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                momentum = 1.0 / float(self.num_batches_tracked)
        use_batch_stats, running_mean, running_var = _statistics_to_use(self)
        return batch_norm(
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

    def _name(self) -> str:
        return f"BatchNorm({self.num_features}, num_dims={self.num_dims})"

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, num_dims={self.num_dims}, eps={self.eps}, momentum={self.momentum}, "
            f"affine={self.affine}, track_running_stats={self.track_running_stats}"
        )


_BatchNormLike = Union[BatchNorm, nn.modules.batchnorm._BatchNorm]


def fold_batch_norm(
    layer: Union[nn.Linear, nn.Conv1d, nn.Conv2d], bn: _BatchNormLike
) -> Union[nn.Linear, nn.Conv1d, nn.Conv2d]:
    r"""Return one layer equal to ``layer`` followed by ``bn`` in evaluation mode.

    At inference a batch norm is the fixed map
    :math:`y = \gamma (x - \hat\mu) / \sqrt{\hat\sigma^2 + \epsilon} + \beta` per channel, with
    the running mean :math:`\hat\mu` and variance :math:`\hat\sigma^2`. Following a layer :math:`x = W u + b`, it folds
    into new weights and bias,

    .. math::

        W' = s\, W, \qquad b' = s\,(b - \hat\mu) + \beta, \qquad s = \gamma / \sqrt{\hat\sigma^2 + \epsilon},

    with :math:`s` scaling each output channel (each row of ``W``). The inputs are not modified.

    Parameters
    ----------
    layer
        A :class:`torch.nn.Linear`, :class:`torch.nn.Conv1d` or :class:`torch.nn.Conv2d`.
    bn
        A :class:`BatchNorm` or a ``torch.nn.BatchNorm*d`` in evaluation mode (``bn.eval()``)
        with running statistics, with as many features as ``layer`` has outputs.

    Returns
    -------
    nn.Module
        A copy of ``layer`` whose weight and bias include the batch norm. It always has a bias;
        as in :mod:`torch.nn.utils.fusion`, the parameters keep their ``requires_grad`` flags and a
        bias the layer did not have is made with ``requires_grad=False``.

    Examples
    --------
    >>> conv, bn = nn.Conv2d(1, 4, 3), BatchNorm(4, num_dims=4)
    >>> _ = bn(conv(torch.randn(16, 1, 8, 8)))  # one training step moves the running statistics
    >>> fused = fold_batch_norm(conv, bn.eval())
    >>> x = torch.randn(2, 1, 8, 8)
    >>> torch.allclose(fused(x), bn(conv(x)), atol=1e-6)
    True
    """
    if not isinstance(layer, (nn.Linear, nn.Conv1d, nn.Conv2d)):
        raise TypeError(f"fold_batch_norm folds into nn.Linear, nn.Conv1d or nn.Conv2d, got {type(layer).__name__}")
    if bn.training:
        raise ValueError(
            "fold_batch_norm folds a batch norm in evaluation mode, which uses its running statistics; "
            "this one is in training mode and normalizes with each batch's own. Call bn.eval() first "
            "(or model.eval() on the network)"
        )
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError(
            "fold_batch_norm needs running statistics, but this batch norm was made with "
            "track_running_stats=False and normalizes with each batch's own; it cannot be folded"
        )
    out_features = layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
    if out_features != bn.num_features:
        raise ValueError(
            f"{type(layer).__name__} has {out_features} outputs but the batch norm has {bn.num_features} "
            "features; fold a batch norm into the layer directly before it"
        )
    with torch.no_grad():
        # Compute in float64 so that folding adds no rounding error of its own.
        mean, var = bn.running_mean.double(), bn.running_var.double()
        scale = torch.rsqrt(var + bn.eps)
        if bn.weight is not None:
            scale = scale * bn.weight.double()
        shift = -mean * scale
        if bn.bias is not None:
            shift = shift + bn.bias.double()
        weight = layer.weight.double() * scale.view((-1,) + (1,) * (layer.weight.dim() - 1))
        bias = shift if layer.bias is None else layer.bias.double() * scale + shift

        fused = copy.deepcopy(layer)
        # Each parameter keeps its own dtype and requires_grad flag; a bias the layer did not have
        # is made with requires_grad=False, as torch.nn.utils.fusion does.
        fused.weight = nn.Parameter(weight.to(layer.weight.dtype), requires_grad=layer.weight.requires_grad)
        fused.bias = nn.Parameter(
            bias.to(layer.weight.dtype if layer.bias is None else layer.bias.dtype),
            requires_grad=layer.bias is not None and layer.bias.requires_grad,
        )
    return fused
