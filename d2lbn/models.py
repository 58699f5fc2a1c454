"""The networks the chapters train: the d2l recipe's LeNet and configurable MLPs.

Both factories take a ``norm`` argument that says which normalization layer follows each hidden
convolution or linear layer:

- ``None``: no normalization (the baseline; every other layer is the same);
- ``"scratch"``: :class:`d2lbn.norm.BatchNorm`, the course's batch norm written from scratch;
- ``"torch"``: PyTorch's :class:`torch.nn.BatchNorm1d` / :class:`torch.nn.BatchNorm2d`;
- a callable ``norm(num_features, num_dims) -> nn.Module``, for any other normalization (noisy
  batch norm, layer, group or instance norm, :class:`torch.nn.SyncBatchNorm`). ``num_dims`` is 4
  after a convolution (input ``(N, C, H, W)``) and 2 after a linear layer (input ``(N, C)``).

Neither factory normalizes the network's input or its output layer. Both return an
:class:`torch.nn.Sequential`, so a chapter can reach a layer by index (``net[1].gamma``).
:func:`count_parameters` counts trainable and non-trainable numbers the way Keras's
``model.summary()`` reports them.
"""

from __future__ import annotations

from typing import Callable, List, NamedTuple, Optional, Sequence, Union

import torch
from torch import nn

from d2lbn.norm import BatchNorm

__all__ = ["NormSpec", "norm_layer", "lenet", "mlp", "ParameterCount", "count_parameters"]

NormSpec = Union[None, str, Callable[[int, int], nn.Module]]
"""What the ``norm`` argument accepts: ``None``, ``"scratch"``, ``"torch"`` or a callable."""

_NORM_NAMES = ("scratch", "torch")
_ACTIVATIONS = {"sigmoid": nn.Sigmoid, "relu": nn.ReLU, "tanh": nn.Tanh}
_PLACEMENTS = ("before", "after")


def _valid_norms() -> str:
    return 'None, "scratch", "torch", or a callable norm(num_features, num_dims) -> nn.Module'


def norm_layer(norm: NormSpec, num_features: int, num_dims: int) -> Optional[nn.Module]:
    """Build the normalization layer that ``norm`` names, or ``None`` for no normalization.

    Parameters
    ----------
    norm
        ``None``, ``"scratch"`` (:class:`d2lbn.norm.BatchNorm`), ``"torch"``
        (:class:`torch.nn.BatchNorm1d` for ``num_dims`` 2 or 3, :class:`torch.nn.BatchNorm2d` for
        4), or a callable ``norm(num_features, num_dims)`` returning an :class:`torch.nn.Module`.
    num_features
        Channels (after a convolution) or features (after a linear layer) to normalize.
    num_dims
        Dimensions of the layer's input: 2 for ``(N, C)``, 4 for ``(N, C, H, W)``.

    Returns
    -------
    torch.nn.Module or None
        The new layer, or ``None`` when ``norm`` is ``None``.

    Raises
    ------
    ValueError
        If ``norm`` is a string other than ``"scratch"`` or ``"torch"``.
    TypeError
        If ``norm`` is of another type, or the callable returns something that is not a module.

    Examples
    --------
    >>> type(norm_layer("torch", 6, num_dims=4)).__name__, type(norm_layer("torch", 6, num_dims=2)).__name__
    ('BatchNorm2d', 'BatchNorm1d')
    >>> group_norm = norm_layer(lambda c, d: nn.GroupNorm(2, c), 6, num_dims=4)
    >>> group_norm.num_groups, group_norm.num_channels
    (2, 6)
    >>> norm_layer(None, 6, num_dims=4) is None
    True
    """
    if norm is None:
        return None
    if isinstance(norm, str):
        if norm == "scratch":
            return BatchNorm(num_features, num_dims=num_dims)
        if norm == "torch":
            if num_dims == 4:
                return nn.BatchNorm2d(num_features)
            if num_dims in (2, 3):
                return nn.BatchNorm1d(num_features)
            raise ValueError(f"norm='torch' supports num_dims 2, 3 or 4, got {num_dims}")
        raise ValueError(f"unknown norm {norm!r}; use {_valid_norms()}")
    if callable(norm):
        layer = norm(num_features, num_dims)
        if not isinstance(layer, nn.Module):
            raise TypeError(
                f"the norm callable must return an nn.Module, got {type(layer).__name__} "
                f"for norm({num_features}, {num_dims})"
            )
        return layer
    raise TypeError(f"norm must be {_valid_norms()}; got {type(norm).__name__}")


def _check_dropout(dropout: float) -> None:
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout is the probability of zeroing a unit, in [0, 1); got {dropout}")


def _xavier_init(net: nn.Module) -> None:
    """Xavier-uniform weights for every convolution and linear layer (biases keep their init)."""
    for module in net.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(module.weight)


def lenet(norm: NormSpec = None, *, dropout: float = 0.0) -> nn.Sequential:
    """The sigmoid LeNet of the d2l batch-norm recipe, for 28 x 28 single-channel images.

    With a ``norm``, a normalization layer sits after each convolution and hidden linear layer,
    before its sigmoid::

        Conv2d(1, 6, 5)   norm(6)   Sigmoid AvgPool2d(2, 2)
        Conv2d(6, 16, 5)  norm(16)  Sigmoid AvgPool2d(2, 2) Flatten
        Linear(256, 120)  norm(120) Sigmoid
        Linear(120, 84)   norm(84)  Sigmoid
        Linear(84, 10)

    so that, for example, ``net[1]`` is the first batch norm. ``norm=None`` gives the same
    network without the normalization layers (``net[1]`` is then the first sigmoid).

    The weights of every convolution and linear layer are drawn Xavier-uniform here, as the d2l
    recipe does before training, so :func:`d2lbn.train.train` does not re-initialize anything.
    The normalization layers draw no random numbers, so under the same seed every ``norm`` gives
    the same convolution and linear weights.

    Parameters
    ----------
    norm
        ``None``, ``"scratch"``, ``"torch"`` or a callable ``norm(num_features, num_dims)``;
        see :func:`norm_layer`.
    dropout
        When positive, an :class:`torch.nn.Dropout` with this probability follows the sigmoid of
        each hidden linear layer (the 120- and 84-unit ones).

    Returns
    -------
    torch.nn.Sequential
        The network; it maps ``(N, 1, 28, 28)`` images to ``(N, 10)`` logits.

    Examples
    --------
    >>> net = lenet("scratch")
    >>> net(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    >>> net[1]
    BatchNorm(6, num_dims=4, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)
    >>> len(lenet()), len(lenet("torch")), len(lenet("torch", dropout=0.5))
    (12, 16, 18)
    """
    _check_dropout(dropout)
    layers: List[nn.Module] = []

    def block(layer: nn.Module, features: int, num_dims: int) -> None:
        layers.append(layer)
        normalization = norm_layer(norm, features, num_dims)
        if normalization is not None:
            layers.append(normalization)
        layers.append(nn.Sigmoid())

    block(nn.Conv2d(1, 6, kernel_size=5), 6, 4)
    layers.append(nn.AvgPool2d(kernel_size=2, stride=2))
    block(nn.Conv2d(6, 16, kernel_size=5), 16, 4)
    layers += [nn.AvgPool2d(kernel_size=2, stride=2), nn.Flatten()]
    for n_in, n_out in ((16 * 4 * 4, 120), (120, 84)):
        block(nn.Linear(n_in, n_out), n_out, 2)
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(84, 10))
    net = nn.Sequential(*layers)
    _xavier_init(net)
    return net


def mlp(
    in_features: int,
    hidden: Sequence[int],
    out_features: int,
    *,
    activation: Union[str, Callable[[], nn.Module]] = "sigmoid",
    norm: NormSpec = None,
    placement: str = "before",
    init_std: Optional[float] = None,
    dropout: float = 0.0,
    flatten: bool = True,
) -> nn.Sequential:
    """A fully connected network, optionally normalizing each hidden layer.

    Each hidden layer is ``Linear``, then ``norm`` and the activation in the order ``placement``
    says, then ``Dropout`` when asked; the output layer is a plain ``Linear`` that returns
    logits (use :class:`torch.nn.CrossEntropyLoss`, or :class:`torch.nn.BCEWithLogitsLoss` for
    one output). The input and the output layer are never normalized.

    Parameters
    ----------
    in_features
        Size of one flattened input (784 for a 28 x 28 image).
    hidden
        Widths of the hidden layers, e.g. ``[100, 100, 100]``; empty for a linear model.
    out_features
        Number of outputs (classes, or 1 for a binary classifier's logit).
    activation
        ``"sigmoid"``, ``"relu"`` or ``"tanh"``, or a callable returning a new activation module
        (such as ``nn.GELU``).
    norm
        ``None``, ``"scratch"``, ``"torch"`` or a callable ``norm(num_features, num_dims)``
        (called with ``num_dims=2``); see :func:`norm_layer`.
    placement
        ``"before"`` the activation (as in the paper: normalize ``Wu + b``, then apply the
        nonlinearity) or ``"after"`` it.
    init_std
        When given, every linear layer gets weights drawn from :math:`\\mathcal{N}(0, \\sigma^2)`
        with :math:`\\sigma` = ``init_std``, and zero biases (the paper's "small random Gaussian
        values"); ``None`` keeps PyTorch's default initialization.
    dropout
        When positive, an :class:`torch.nn.Dropout` with this probability ends each hidden
        layer.
    flatten
        Start with :class:`torch.nn.Flatten`, so that ``(N, 1, 28, 28)`` images can be fed
        directly. It shifts every layer's index by one.

    Returns
    -------
    torch.nn.Sequential
        The network.

    Raises
    ------
    ValueError
        For an unknown activation, norm or placement, a non-positive width or ``init_std``, or a
        dropout probability outside [0, 1).
    TypeError
        If ``hidden`` is a single number rather than a sequence of widths, ``activation`` is
        neither a string nor a callable, or ``norm`` is of an unsupported type.

    Examples
    --------
    The paper's MNIST network (Section 4.1), with batch norm before each sigmoid:

    >>> net = mlp(784, [100, 100, 100], 10, norm="torch", init_std=0.1)
    >>> net(torch.zeros(4, 1, 28, 28)).shape
    torch.Size([4, 10])
    >>> [type(layer).__name__ for layer in net[:4]]
    ['Flatten', 'Linear', 'BatchNorm1d', 'Sigmoid']

    The Keras example: 20 features, Dense(64) BN ReLU Dense(32) BN ReLU Dense(1):

    >>> keras_like = mlp(20, [64, 32], 1, activation="relu", norm="torch", flatten=False)
    >>> count_parameters(keras_like)
    ParameterCount(trainable=3649, non_trainable=192)
    """
    if isinstance(hidden, int):
        raise TypeError(f"hidden is a sequence of widths; for one hidden layer write hidden=[{hidden}]")
    widths = list(hidden)
    for width in [in_features, *widths, out_features]:
        if not isinstance(width, int) or isinstance(width, bool) or width < 1:
            raise ValueError(
                f"layer sizes must be positive integers; got in_features={in_features}, "
                f"hidden={widths}, out_features={out_features}"
            )
    if isinstance(activation, str):
        if activation not in _ACTIVATIONS:
            raise ValueError(
                f"unknown activation {activation!r}; use one of {', '.join(map(repr, _ACTIVATIONS))} "
                "or a callable returning an nn.Module"
            )
        make_activation: Callable[[], nn.Module] = _ACTIVATIONS[activation]
    elif callable(activation):
        make_activation = activation
    else:
        raise TypeError(f"activation must be a string or a callable, got {type(activation).__name__}")
    if placement not in _PLACEMENTS:
        raise ValueError(f"unknown placement {placement!r}; use 'before' or 'after' (the activation)")
    if init_std is not None and not init_std > 0:
        raise ValueError(f"init_std is a standard deviation and must be positive, got {init_std}; "
                         "use None for PyTorch's default initialization")
    _check_dropout(dropout)
    if norm is not None and not callable(norm) and norm not in _NORM_NAMES:
        norm_layer(norm, 1, 2)  # raises the error that explains what is accepted

    layers: List[nn.Module] = [nn.Flatten()] if flatten else []
    n_in = in_features
    for width in widths:
        layers.append(nn.Linear(n_in, width))
        act = make_activation()
        normalization = norm_layer(norm, width, 2)
        order = [normalization, act] if placement == "before" else [act, normalization]
        layers += [layer for layer in order if layer is not None]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        n_in = width
    layers.append(nn.Linear(n_in, out_features))
    net = nn.Sequential(*layers)
    if init_std is not None:
        for module in net.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, mean=0.0, std=init_std)
                nn.init.zeros_(module.bias)
    return net


class ParameterCount(NamedTuple):
    """Trainable and non-trainable numbers in a network, as Keras's ``model.summary()`` counts them."""

    trainable: int
    """Elements of parameters with ``requires_grad`` (weights, biases, :math:`\\gamma`, :math:`\\beta`)."""
    non_trainable: int
    """Elements of frozen parameters and floating-point buffers (running means and variances)."""

    @property
    def total(self) -> int:
        """Trainable plus non-trainable."""
        return self.trainable + self.non_trainable


def count_parameters(net: nn.Module) -> ParameterCount:
    """Count a network's trainable and non-trainable numbers.

    Trainable: the elements of every parameter with ``requires_grad``. Non-trainable: the elements
    of frozen parameters and of floating-point buffers, such as a batch norm's ``running_mean``
    and ``running_var``, which Keras lists as "Non-trainable params". Integer buffers are left
    out: PyTorch's ``num_batches_tracked`` counter has no Keras counterpart and holds no weight.
    A parameter or buffer shared by several layers is counted once.

    Parameters
    ----------
    net
        Any module.

    Returns
    -------
    ParameterCount
        A named tuple ``(trainable, non_trainable)`` with a ``total`` property.

    Examples
    --------
    >>> count_parameters(nn.BatchNorm1d(64))  # gamma, beta; running mean and variance
    ParameterCount(trainable=128, non_trainable=128)
    >>> count_parameters(lenet()).total
    44426
    """
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in net.parameters() if not p.requires_grad)
    buffers = sum(b.numel() for b in net.buffers() if torch.is_floating_point(b) or torch.is_complex(b))
    return ParameterCount(trainable=trainable, non_trainable=frozen + buffers)
