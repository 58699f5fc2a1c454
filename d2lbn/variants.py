r"""Layer, group and instance normalization from scratch.

This module is the package form of chapter 9 of the course. Batch norm standardizes each
channel over the examples of the batch; the three variants here standardize over the values of
*one example* instead, so an example's output never depends on the rest of its batch, and the
layers compute the same function in training and in evaluation (unless an instance norm is
asked to keep running statistics):

- :func:`layer_norm` and :class:`LayerNorm` (Ba, Kiros and Hinton, 2016): over the last
  dimensions of each example (all of ``(C, H, W)`` after a convolution, the ``C`` features
  after a linear layer, the features of each token in a transformer);
- :func:`group_norm` and :class:`GroupNorm` (Wu and He, 2018): over each group of ``C / G``
  channels and every position of one example;
- :func:`instance_norm` and :class:`InstanceNorm` (Ulyanov, Vedaldi and Lempitsky, 2016): over
  the positions ``(H, W)`` of one channel of one example.

All three are one operation, :func:`standardize`, applied over different dimensions, followed by
a learned per-element (layer norm) or per-channel (group and instance norm) scale and shift.
Group norm with one group is layer norm over ``(C, H, W)`` with per-channel parameters; with
one channel per group it is instance norm.

The functions take the arguments of their :mod:`torch.nn.functional` namesakes and the modules
those of :class:`torch.nn.LayerNorm`, :class:`torch.nn.GroupNorm` and
:class:`torch.nn.InstanceNorm2d`, with the same parameter and buffer names, so a ``state_dict``
moves between the two unchanged. Variances are biased (divided by the number of values), as in
PyTorch; only the running variance an instance norm can keep is unbiased, as in batch norm.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from d2lbn.norm import _compute_dtype, _update_running

__all__ = [
    "standardize",
    "layer_norm",
    "group_norm",
    "instance_norm",
    "LayerNorm",
    "GroupNorm",
    "InstanceNorm",
]

Shape = Union[int, Sequence[int], torch.Size]
Device = Union[str, torch.device, None]


def standardize(x: Tensor, dims: Sequence[int], eps: float = 1e-5) -> Tensor:
    r"""Subtract the mean and divide by the standard deviation over the dimensions ``dims``.

    Every normalization layer of the course is this operation over different dimensions:
    ``(0, 2, 3)`` is batch norm of an ``(N, C, H, W)`` input, ``(1, 2, 3)`` layer norm,
    ``(2, 3)`` instance norm. With :math:`\mu` and :math:`\sigma^2` the mean and the biased
    variance over ``dims``, it returns :math:`(x - \mu) / \sqrt{\sigma^2 + \epsilon}`.

    Parameters
    ----------
    x
        Any floating-point tensor.
    dims
        The dimensions to average over; negative ones count from the end.
    eps
        Added to the variance before the square root.

    Returns
    -------
    Tensor
        A tensor of the shape of ``x``, with zero mean and (nearly) unit variance over ``dims``.

    Examples
    --------
    >>> x = torch.tensor([[1.0, 3.0], [10.0, 30.0]])
    >>> standardize(x, dims=[1], eps=0.0)  # each row
    tensor([[-1.,  1.],
            [-1.,  1.]])
    >>> standardize(x, dims=[0], eps=0.0)  # each column
    tensor([[-1., -1.],
            [ 1.,  1.]])
    """
    return _standardized(x, dims, eps).to(x.dtype)


def _standardized(x: Tensor, dims: Sequence[int], eps: float) -> Tensor:
    """:func:`standardize`, left in the dtype it is computed in (float32 for half and bfloat16
    inputs, whose squares overflow), so that a scale and shift can follow before one rounding."""
    dims = tuple(dims)
    x = x.to(_compute_dtype(x))
    mean = x.mean(dim=dims, keepdim=True)
    centered = x - mean
    var = (centered * centered).mean(dim=dims, keepdim=True)
    return centered * torch.rsqrt(var + eps)


def _per_channel(t: Tensor, x: Tensor) -> Tensor:
    """View a per-channel vector of shape (C,) so that it broadcasts against ``x`` (N, C, ...)."""
    return t.view((1, -1) + (1,) * (x.dim() - 2))


def _affine(y: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], x: Tensor) -> Tensor:
    """Scale and shift ``y`` per channel (dimension 1 of ``x``) in ``y``'s dtype, then round once
    to the input's dtype."""
    if weight is not None:
        y = y * _per_channel(weight.to(y.dtype), x)
    if bias is not None:
        y = y + _per_channel(bias.to(y.dtype), x)
    return y.to(x.dtype)


def _as_shape(normalized_shape: Shape) -> Tuple[int, ...]:
    if isinstance(normalized_shape, (int,)) and not isinstance(normalized_shape, bool):
        shape: Tuple[int, ...] = (normalized_shape,)
    else:
        try:
            shape = tuple(normalized_shape)  # type: ignore[arg-type]
        except TypeError:
            raise TypeError(
                f"normalized_shape must be an int or a sequence of ints, got {type(normalized_shape).__name__}"
            ) from None
    if not shape or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape):
        raise ValueError(
            f"normalized_shape must be a positive int or a non-empty sequence of positive ints, "
            f"got {normalized_shape!r}; for an (N, C, H, W) input use (C, H, W), for (N, C) use C"
        )
    return shape


def _check_eps(eps: float) -> None:
    if not eps >= 0:
        raise ValueError(f"eps must be non-negative (it is added to the variance), got {eps!r}")


def _check_positive(name: str, value: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int ({what}), got {value!r}")


# ---------------------------------------------------------------------------- functional forms


def layer_norm(
    x: Tensor,
    normalized_shape: Shape,
    weight: Optional[Tensor] = None,
    bias: Optional[Tensor] = None,
    eps: float = 1e-5,
) -> Tensor:
    r"""Layer-normalize ``x`` over its last dimensions; the contract of :func:`torch.nn.functional.layer_norm`.

    Each example (each slice over the leading dimensions) is standardized with the mean and
    biased variance of its own values over the trailing ``normalized_shape`` dimensions, then
    scaled by ``weight`` and shifted by ``bias`` element by element.

    Parameters
    ----------
    x
        Input of shape ``(*, *normalized_shape)``: for example ``(N, C)`` with
        ``normalized_shape=C``, ``(N, C, H, W)`` with ``(C, H, W)``, or ``(N, L, D)`` (a batch of
        sequences of ``L`` tokens) with ``D``.
    normalized_shape
        The trailing shape to normalize over, an int for one dimension.
    weight, bias
        :math:`\gamma` and :math:`\beta` of shape ``normalized_shape``, or ``None`` for 1 and 0.
    eps
        Added to the variance before the square root.

    Returns
    -------
    Tensor
        The normalized, scaled and shifted input, of the shape of ``x``.

    Raises
    ------
    ValueError
        If the trailing dimensions of ``x`` are not ``normalized_shape``, or ``weight`` or
        ``bias`` has another shape.

    Examples
    --------
    >>> x = torch.tensor([[1.0, 2.0, 3.0], [10.0, 20.0, 30.0]])
    >>> layer_norm(x, 3, eps=0.0) * 1.5 ** 0.5  # each row to mean 0, variance 1
    tensor([[-1.5000,  0.0000,  1.5000],
            [-1.5000,  0.0000,  1.5000]])
    """
    shape = _as_shape(normalized_shape)
    k = len(shape)
    if x.dim() < k or tuple(x.shape[-k:]) != shape:
        raise ValueError(
            f"layer_norm over normalized_shape={list(shape)} expects an input of shape [*, {', '.join(map(str, shape))}], "
            f"got {list(x.shape)}; normalized_shape must be the last dimensions of the input"
        )
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and tuple(t.shape) != shape:
            raise ValueError(f"{name} must have shape normalized_shape={list(shape)}, got {list(t.shape)}")
    y = _standardized(x, range(-k, 0), eps)
    if weight is not None:
        y = y * weight.to(y.dtype)
    if bias is not None:
        y = y + bias.to(y.dtype)
    return y.to(x.dtype)


def _check_channels_first(x: Tensor, who: str, min_dims: int, layout: str) -> None:
    if x.dim() < min_dims:
        raise ValueError(
            f"{who} expects an input of shape {layout}, got shape {list(x.shape)}; "
            "add a batch dimension with x.unsqueeze(0) for a single example"
        )


def group_norm(
    x: Tensor,
    num_groups: int,
    weight: Optional[Tensor] = None,
    bias: Optional[Tensor] = None,
    eps: float = 1e-5,
) -> Tensor:
    r"""Group-normalize ``x``; the contract of :func:`torch.nn.functional.group_norm`.

    The ``C`` channels are split into ``num_groups`` groups of ``C / num_groups`` consecutive
    channels. Each group of each example is standardized with the mean and biased variance of
    its values (its channels at every position), then every channel is scaled by its own
    ``weight`` and shifted by its own ``bias``.

    Parameters
    ----------
    x
        Input of shape ``(N, C, *)``: ``(N, C, H, W)`` after a convolution, ``(N, C)`` after a
        linear layer.
    num_groups
        G, which must divide ``C``. ``1`` gives layer norm over ``(C, *)``; ``C`` gives instance
        norm.
    weight, bias
        :math:`\gamma` and :math:`\beta` of shape ``(C,)``, or ``None`` for 1 and 0.
    eps
        Added to the variance before the square root.

    Returns
    -------
    Tensor
        The normalized, scaled and shifted input, of the shape of ``x``.

    Raises
    ------
    ValueError
        If ``x`` has fewer than 2 dimensions, ``num_groups`` does not divide its channels, or each
        group would hold a single value (PyTorch refuses that only for a batch of one example;
        with more, it returns ``bias``).

    Examples
    --------
    Two groups of two channels; each example's group is standardized on its own:

    >>> x = torch.tensor([[1.0, 3.0, 10.0, 30.0]])
    >>> group_norm(x, num_groups=2, eps=0.0)
    tensor([[-1.,  1., -1.,  1.]])
    """
    _check_channels_first(x, "group_norm", 2, "(N, C, *)")
    _check_positive("num_groups", num_groups, "the number of groups of channels")
    n, c = x.shape[0], x.shape[1]
    if c % num_groups != 0:
        raise ValueError(
            f"the input's {c} channels cannot be split into num_groups={num_groups} equal groups; "
            f"pick num_groups among the divisors of {c}: {[g for g in range(1, c + 1) if c % g == 0]}"
        )
    per_group = (c // num_groups) * math.prod(x.shape[2:])
    grouped = x.reshape(n, num_groups, per_group)  # one row per group of one example
    if grouped.shape[2] == 1:
        raise ValueError(
            f"each group of the input of shape {list(x.shape)} holds a single value (num_groups={num_groups} "
            f"equals the channels and there are no positions), which normalizes to 0 whatever the input. "
            "Use fewer groups, or layer norm after a linear layer"
        )
    y = _standardized(grouped, [2], eps).view(x.shape)
    return _affine(y, weight, bias, x)


def instance_norm(
    x: Tensor,
    running_mean: Optional[Tensor] = None,
    running_var: Optional[Tensor] = None,
    weight: Optional[Tensor] = None,
    bias: Optional[Tensor] = None,
    use_input_stats: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    r"""Instance-normalize ``x``; the contract of :func:`torch.nn.functional.instance_norm`.

    With ``use_input_stats`` (the default), each channel of each example is standardized with
    the mean and biased variance over its own positions. ``running_mean`` and ``running_var``,
    when given, then move towards the batch average of those per-instance means and *unbiased*
    variances, in place: ``running = (1 - momentum) * running + momentum * batch_average``.
    Without ``use_input_stats`` every example is normalized with the running statistics, as a
    batch norm in evaluation mode does.

    Parameters
    ----------
    x
        Input of shape ``(N, C, *)`` with at least one spatial dimension, such as
        ``(N, C, H, W)``.
    running_mean, running_var
        Running statistics of shape ``(C,)``, or ``None``.
    weight, bias
        :math:`\gamma` and :math:`\beta` of shape ``(C,)``, or ``None`` for 1 and 0.
    use_input_stats
        Normalize with each instance's own statistics (``True``) or with the running ones.
    momentum
        Weight of the new statistics in the running ones (PyTorch's convention).
    eps
        Added to the variance before the square root.

    Returns
    -------
    Tensor
        The normalized, scaled and shifted input, of the shape of ``x``.

    Raises
    ------
    ValueError
        If ``x`` has no spatial dimension, or a single position per channel while using the
        input's statistics, or the running statistics are missing without ``use_input_stats``.

    Examples
    --------
    >>> x = torch.tensor([[[[1.0, 3.0]], [[10.0, 30.0]]]])  # N=1, C=2, H=1, W=2
    >>> instance_norm(x, eps=0.0).flatten()
    tensor([-1.,  1., -1.,  1.])
    """
    _check_channels_first(x, "instance_norm", 3, "(N, C, *) with spatial dimensions, such as (N, C, H, W)")
    spatial = tuple(range(2, x.dim()))
    if not use_input_stats:
        if running_mean is None or running_var is None:
            raise ValueError(
                "instance_norm with use_input_stats=False normalizes with the running statistics, so "
                "running_mean and running_var must be given; pass use_input_stats=True to use each instance's own"
            )
        compute = torch.promote_types(_compute_dtype(x), _compute_dtype(running_var))
        scale = torch.rsqrt(running_var.to(compute) + eps)
        y = (x.to(compute) - _per_channel(running_mean.to(compute), x)) * _per_channel(scale, x)
        return _affine(y, weight, bias, x)
    positions = 1
    for size in x.shape[2:]:
        positions *= size
    if positions == 1:
        raise ValueError(
            f"Expected more than 1 spatial element when training, got input size {list(x.shape)}: "
            "each channel of each example would normalize to 0. Instance norm needs feature maps; "
            "after a linear layer use layer norm"
        )
    if running_mean is not None or running_var is not None:
        with torch.no_grad():
            xs = x.to(_compute_dtype(x))
            mean = xs.mean(dim=spatial)  # (N, C): one mean per instance
            var = xs.var(dim=spatial, unbiased=True)  # stored unbiased, as batch norm does
            if running_mean is not None:
                _update_running(running_mean, mean.mean(0), momentum)
            if running_var is not None:
                _update_running(running_var, var.mean(0), momentum)
    return _affine(_standardized(x, spatial, eps), weight, bias, x)


# ---------------------------------------------------------------------------- modules


def _init_affine(
    module: nn.Module, shape: Shape, enabled: bool, bias: bool, device: Device, dtype: Optional[torch.dtype]
) -> None:
    """Give ``module`` a ``weight`` of ones and a ``bias`` of zeros of ``shape``, or register them as ``None``."""
    factory = {"device": device, "dtype": dtype}
    module.register_parameter("weight", nn.Parameter(torch.ones(shape, **factory)) if enabled else None)
    module.register_parameter("bias", nn.Parameter(torch.zeros(shape, **factory)) if enabled and bias else None)


def _reset_affine(module: nn.Module) -> None:
    """Set ``module``'s :math:`\\gamma` (``weight``) to 1 and :math:`\\beta` (``bias``) to 0, where it has them."""
    if module.weight is not None:
        nn.init.ones_(module.weight)
    if module.bias is not None:
        nn.init.zeros_(module.bias)


class LayerNorm(nn.Module):
    r"""Layer normalization written from scratch, equivalent to :class:`torch.nn.LayerNorm`.

    Normalizes each example over its trailing ``normalized_shape`` dimensions, then applies an
    element-wise scale :math:`\gamma` (``weight``) and shift :math:`\beta` (``bias``) of that
    shape. It keeps no running statistics: training and evaluation compute the same function,
    and an example's output does not depend on the other examples of its batch.

    Parameters
    ----------
    normalized_shape
        The trailing shape to normalize over: ``C`` after a linear layer, ``(C, H, W)`` after a
        convolution, ``D`` for the ``D`` features of each token of an ``(N, L, D)`` sequence.
    eps
        Added to the variance for numerical stability.
    elementwise_affine
        Learn ``weight`` (initialized to 1) and ``bias`` (initialized to 0).
    bias
        With ``elementwise_affine``, learn the shift too (``False``: a scale only).
    device, dtype
        Where and in which type to create the parameters.

    Attributes
    ----------
    weight, bias
        Parameters of shape ``normalized_shape``, or ``None``.

    Examples
    --------
    >>> ln = LayerNorm((3, 4, 4))
    >>> y = ln(torch.randn(2, 3, 4, 4))
    >>> torch.allclose(y.mean(dim=(1, 2, 3)), torch.zeros(2), atol=1e-6)
    True
    >>> sorted(ln.state_dict()) == sorted(nn.LayerNorm((3, 4, 4)).state_dict())
    True
    """

    def __init__(
        self,
        normalized_shape: Shape,
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
        device: Device = None,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__()
        self.normalized_shape = _as_shape(normalized_shape)
        _check_eps(eps)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        _init_affine(self, self.normalized_shape, elementwise_affine, bias, device, dtype)

    def reset_parameters(self) -> None:
        """Set :math:`\\gamma` to 1 and :math:`\\beta` to 0."""
        _reset_affine(self)

    def forward(self, x: Tensor) -> Tensor:
        return layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}, " \
               f"bias={self.bias is not None}"


class GroupNorm(nn.Module):
    r"""Group normalization written from scratch, equivalent to :class:`torch.nn.GroupNorm`.

    Splits the ``num_channels`` channels into ``num_groups`` groups, standardizes each group of
    each example over its channels and positions, then scales and shifts each channel with its
    own :math:`\gamma` (``weight``) and :math:`\beta` (``bias``). Like :class:`LayerNorm` it keeps
    no running statistics and is independent of the rest of the batch.

    Parameters
    ----------
    num_groups
        G, a divisor of ``num_channels``. ``1`` is layer norm over ``(C, H, W)`` (with
        per-channel parameters); ``num_channels`` is instance norm.
    num_channels
        C, the channels of the ``(N, C, *)`` input.
    eps
        Added to the variance for numerical stability.
    affine
        Learn ``weight`` (initialized to 1) and ``bias`` (initialized to 0), one per channel.
    bias
        With ``affine``, learn the shift too (``False``: a scale only).
    device, dtype
        Where and in which type to create the parameters.

    Attributes
    ----------
    weight, bias
        Parameters of shape ``(C,)``, or ``None``.

    Raises
    ------
    ValueError
        If ``num_groups`` does not divide ``num_channels``.

    Examples
    --------
    >>> gn = GroupNorm(2, 6)
    >>> y = gn(torch.randn(4, 6, 5, 5))
    >>> groups = y.view(4, 2, -1)  # (N, G, C/G * H * W)
    >>> torch.allclose(groups.mean(dim=2), torch.zeros(4, 2), atol=1e-6)
    True
    >>> GroupNorm(4, 6)
    Traceback (most recent call last):
    ...
    ValueError: num_channels=6 is not divisible by num_groups=4; pick num_groups among the divisors of 6: [1, 2, 3, 6]
    """

    def __init__(
        self,
        num_groups: int,
        num_channels: int,
        eps: float = 1e-5,
        affine: bool = True,
        device: Device = None,
        dtype: Optional[torch.dtype] = None,
        *,
        bias: bool = True,
    ) -> None:
        super().__init__()
        _check_positive("num_groups", num_groups, "the number of groups of channels")
        _check_positive("num_channels", num_channels, "the channels of the input")
        if num_channels % num_groups != 0:
            divisors = [g for g in range(1, num_channels + 1) if num_channels % g == 0]
            raise ValueError(
                f"num_channels={num_channels} is not divisible by num_groups={num_groups}; "
                f"pick num_groups among the divisors of {num_channels}: {divisors}"
            )
        _check_eps(eps)
        self.num_groups = num_groups
        self.num_channels = num_channels
        self.eps = eps
        self.affine = affine
        _init_affine(self, num_channels, affine, bias, device, dtype)

    def reset_parameters(self) -> None:
        """Set :math:`\\gamma` to 1 and :math:`\\beta` to 0."""
        _reset_affine(self)

    def forward(self, x: Tensor) -> Tensor:
        _check_channels_first(x, f"GroupNorm({self.num_groups}, {self.num_channels})", 2, "(N, C, *)")
        if x.shape[1] != self.num_channels:
            raise ValueError(
                f"GroupNorm({self.num_groups}, {self.num_channels}) expects {self.num_channels} channels in "
                f"dimension 1, got {x.shape[1]} (input shape {list(x.shape)}); set num_channels to the "
                "preceding layer's output size"
            )
        return group_norm(x, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}, " \
               f"bias={self.bias is not None}"


class InstanceNorm(nn.Module):
    r"""Instance normalization written from scratch, equivalent to :class:`torch.nn.InstanceNorm2d`.

    Standardizes each channel of each example of an ``(N, C, H, W)`` input over its ``H * W``
    positions. PyTorch's defaults are kept: no learned scale and shift (``affine=False``) and no
    running statistics (``track_running_stats=False``), so by default training and evaluation
    compute the same function and an example's output does not depend on its batch.

    With ``track_running_stats=True``, training still normalizes each instance with its own
    statistics, but also moves ``running_mean`` and ``running_var`` towards the batch averages
    of the per-instance means and unbiased variances; evaluation then normalizes with those
    running statistics, as a batch norm does. As in PyTorch, ``num_batches_tracked`` exists (for
    the same ``state_dict`` keys) but stays 0.

    Parameters
    ----------
    num_features
        C, the channels of the input.
    eps
        Added to the variance for numerical stability.
    momentum
        Weight of the new statistics in the running ones. ``None`` (a cumulative average) is
        refused: PyTorch's ``InstanceNorm2d`` accepts it but then never updates its running
        statistics.
    affine
        Learn ``weight`` (initialized to 1) and ``bias`` (initialized to 0), one per channel.
    track_running_stats
        Keep running statistics and use them in evaluation mode.
    bias
        With ``affine``, learn the shift too (``False``: a scale only).
    device, dtype
        Where and in which type to create the parameters and buffers.

    Attributes
    ----------
    weight, bias
        Parameters of shape ``(C,)``, or ``None``.
    running_mean, running_var, num_batches_tracked
        Buffers (``(C,)``, ``(C,)`` and a 0-d count), or ``None`` without
        ``track_running_stats``.

    Examples
    --------
    >>> inorm = InstanceNorm(3)
    >>> y = inorm(torch.randn(2, 3, 5, 5) * 4 + 1)
    >>> torch.allclose(y.mean(dim=(2, 3)), torch.zeros(2, 3), atol=1e-6)
    True
    >>> sorted(InstanceNorm(3, affine=True, track_running_stats=True).state_dict())
    ['bias', 'num_batches_tracked', 'running_mean', 'running_var', 'weight']
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: Optional[float] = 0.1,
        affine: bool = False,
        track_running_stats: bool = False,
        device: Device = None,
        dtype: Optional[torch.dtype] = None,
        *,
        bias: bool = True,
    ) -> None:
        super().__init__()
        _check_positive("num_features", num_features, "the number of channels")
        _check_eps(eps)
        if momentum is None:
            raise ValueError(
                "momentum=None (a cumulative average) is not supported: PyTorch's InstanceNorm2d accepts it but "
                "never updates its running statistics then. Pass a float in [0, 1], such as the default 0.1"
            )
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum!r}")
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        _init_affine(self, num_features, affine, bias, device, dtype)
        factory = {"device": device, "dtype": dtype}
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features, **factory))
            self.register_buffer("running_var", torch.ones(num_features, **factory))
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def reset_running_stats(self) -> None:
        """Set the running mean to 0 and the running variance to 1."""
        if self.track_running_stats:
            self.running_mean.zero_()
            self.running_var.fill_(1)
            self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        """Reset the running statistics, and :math:`\\gamma` to 1 and :math:`\\beta` to 0."""
        self.reset_running_stats()
        _reset_affine(self)

    def forward(self, x: Tensor) -> Tensor:
        name = f"InstanceNorm({self.num_features})"
        if x.dim() != 4:
            hint = " add a batch dimension with x.unsqueeze(0) for a single example;" if x.dim() == 3 else ""
            raise ValueError(
                f"{name} expects a 4-D input (N, C, H, W), got shape {list(x.shape)};{hint} "
                "after a linear layer use LayerNorm"
            )
        if x.shape[1] != self.num_features:
            raise ValueError(
                f"{name} expects {self.num_features} channels in dimension 1, got {x.shape[1]} "
                f"(input shape {list(x.shape)}); set num_features to the preceding layer's output size"
            )
        use_input_stats = self.training or not self.track_running_stats
        update = self.training and self.track_running_stats
        return instance_norm(
            x,
            self.running_mean if update or not use_input_stats else None,
            self.running_var if update or not use_input_stats else None,
            self.weight,
            self.bias,
            use_input_stats=use_input_stats,
            momentum=self.momentum,
            eps=self.eps,
        )

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
            f"track_running_stats={self.track_running_stats}"
        )
