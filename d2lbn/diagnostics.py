"""Diagnostics of a network's hidden layers, the ones a practitioner looks at while training.

Chapter 1 writes these out in full and uses them to compare a deep sigmoid network with and
without batch norm:

- :func:`snapshot` pushes one fixed batch through the network and records, for every hidden
  layer, the input of its activation function (the *pre-activations*), the activation's output,
  the gradient of the loss with respect to that output, and the gradient of the loss with
  respect to each layer's weight, all without disturbing training: parameters, their ``.grad``,
  batch-norm running statistics and the train/eval mode are left as they were;
- :func:`saturated_fraction` measures how many sigmoid outputs sit on the flat tails of the
  curve, where the derivative is nearly zero;
- :func:`update_ratios` gives, for each weight, :math:`\\log_{10}` of the size of the step SGD
  takes relative to the size of the weight, :math:`\\lVert \\eta\\, \\nabla_W \\ell \\rVert /
  \\lVert W \\rVert`, which is around :math:`-3` in a network that learns at a healthy pace.

A hidden layer is an activation module (:class:`torch.nn.Sigmoid`, :class:`torch.nn.Tanh`,
:class:`torch.nn.ReLU` by default), found in the order :meth:`torch.nn.Module.modules` lists
them; a weight is the ``weight`` of a :class:`torch.nn.Linear` or :class:`torch.nn.Conv2d`, in
the same order (the output layer included).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple, Type

import torch
from torch import Tensor, nn

__all__ = [
    "ACTIVATIONS",
    "Snapshot",
    "activation_layers",
    "weight_layers",
    "snapshot",
    "saturated_fraction",
    "update_ratios",
]

ACTIVATIONS: Tuple[Type[nn.Module], ...] = (nn.Sigmoid, nn.Tanh, nn.ReLU)
"""The activation modules :func:`snapshot` records by default."""

_WEIGHTED = (nn.Linear, nn.Conv2d)


@dataclass
class Snapshot:
    """What :func:`snapshot` recorded: one entry per hidden layer (or per weight), input first.

    Every tensor is detached and has the batch as its first dimension, except the weight
    gradients, which have the shape of their weight.
    """

    loss: float
    """The mean loss over the batch."""
    pre_activations: List[Tensor]
    """The input of each activation function (after the batch norm, when there is one)."""
    activations: List[Tensor]
    """The output of each activation function."""
    activation_grads: List[Tensor]
    """The gradient of the loss with respect to each activation's output."""
    weight_grads: List[Tensor]
    """The gradient of the loss with respect to the weight of each linear or convolution layer."""


def activation_layers(net: nn.Module, types: Sequence[Type[nn.Module]] = ACTIVATIONS) -> List[nn.Module]:
    """The activation modules of ``net`` of the given types, in the order of ``net.modules()``.

    Examples
    --------
    >>> from d2lbn.models import mlp
    >>> [type(m).__name__ for m in activation_layers(mlp(4, [3, 3], 2, norm="torch"))]
    ['Sigmoid', 'Sigmoid']
    """
    return [module for module in net.modules() if isinstance(module, tuple(types))]


def weight_layers(net: nn.Module) -> List[nn.Module]:
    """The linear and convolution layers of ``net``, in the order of ``net.modules()``.

    Examples
    --------
    >>> from d2lbn.models import mlp
    >>> [tuple(m.weight.shape) for m in weight_layers(mlp(4, [3, 3], 2))]
    [(3, 4), (3, 3), (2, 3)]
    """
    return [module for module in net.modules() if isinstance(module, _WEIGHTED)]


def snapshot(
    net: nn.Module,
    X: Tensor,
    y: Tensor,
    *,
    loss_fn: Optional[Callable[[Tensor, Tensor], Tensor]] = None,
    activation_types: Sequence[Type[nn.Module]] = ACTIVATIONS,
) -> Snapshot:
    """Record every hidden layer's pre-activations, activations and gradients on one batch.

    The batch goes forward and backward through ``net`` in the mode ``net`` is in (in training
    mode a batch norm normalizes with the statistics of ``X``, as during training). Nothing
    about the network changes: the gradients are returned, not accumulated into ``.grad``, and
    every buffer (a batch norm's running statistics and batch count) is put back as it was, and
    the random number generator of the CPU (and of the batch's CUDA device) too, so that the
    dropout masks drawn here do not shift later ones: taking snapshots during training does not
    change the training run.

    Parameters
    ----------
    net
        The network. Each activation module must be called once per forward pass.
    X, y
        The batch and its targets, on the network's device.
    loss_fn
        ``loss_fn(net(X), y)``, the mean loss; by default :class:`torch.nn.CrossEntropyLoss`.
    activation_types
        The module types that count as a hidden layer's activation.

    Returns
    -------
    Snapshot
        Detached tensors, one per hidden layer or per weight.

    Raises
    ------
    ValueError
        If ``net`` has no activation module of ``activation_types``, or one is called more than
        once per forward pass.

    Examples
    --------
    >>> from d2lbn.models import mlp
    >>> _ = torch.manual_seed(0)
    >>> net = mlp(784, [100, 100], 10, norm="torch")
    >>> X, y = torch.rand(32, 1, 28, 28), torch.randint(0, 10, (32,))
    >>> snap = snapshot(net, X, y)
    >>> [tuple(a.shape) for a in snap.activations], [tuple(g.shape) for g in snap.weight_grads]
    ([(32, 100), (32, 100)], [(100, 784), (100, 100), (10, 100)])
    >>> torch.allclose(snap.activations[0], torch.sigmoid(snap.pre_activations[0]))
    True
    >>> net[1].weight.grad is None, int(net[2].num_batches_tracked)
    (True, 0)
    """
    layers = activation_layers(net, activation_types)
    if not layers:
        names = ", ".join(t.__name__ for t in activation_types)
        raise ValueError(f"the network has no activation module ({names}); pass activation_types=")
    weights = [layer.weight for layer in weight_layers(net)]
    loss_fn = nn.CrossEntropyLoss() if loss_fn is None else loss_fn

    inputs: List[List[Tensor]] = [[] for _ in layers]
    outputs: List[List[Tensor]] = [[] for _ in layers]

    def recorder(index: int):
        def before(module: nn.Module, args: Tuple[Tensor, ...]) -> None:
            # An in-place activation (nn.ReLU(inplace=True)) overwrites its input: keep a copy.
            inputs[index].append(args[0].detach().clone() if getattr(module, "inplace", False) else args[0])

        def after(module: nn.Module, args: Tuple[Tensor, ...], output: Tensor) -> None:
            outputs[index].append(output)

        return before, after

    saved = [buffer.clone() for buffer in net.buffers()]
    handles = []
    for i, layer in enumerate(layers):
        before, after = recorder(i)
        handles += [layer.register_forward_pre_hook(before), layer.register_forward_hook(after)]
    cuda_devices = [X.device.index or 0] if X.device.type == "cuda" else []
    try:
        with torch.enable_grad(), torch.random.fork_rng(devices=cuda_devices):
            loss = loss_fn(net(X), y)
            calls = [len(out) for out in outputs]
            if any(count != 1 for count in calls):
                raise ValueError(
                    f"each activation module must be called once per forward pass; calls per layer: {calls}. "
                    "Give every layer its own activation module"
                )
            acts = [out[0] for out in outputs]
            grads = torch.autograd.grad(loss, acts + weights, allow_unused=True)
    finally:
        for handle in handles:
            handle.remove()
        with torch.no_grad():
            for buffer, value in zip(net.buffers(), saved):
                buffer.copy_(value)

    def detached(tensors: Sequence[Optional[Tensor]], like: Sequence[Tensor]) -> List[Tensor]:
        return [torch.zeros_like(ref) if t is None else t.detach() for t, ref in zip(tensors, like)]

    return Snapshot(
        loss=loss.item(),
        pre_activations=[inp[0].detach() for inp in inputs],
        activations=[a.detach() for a in acts],
        activation_grads=detached(grads[: len(acts)], acts),
        weight_grads=detached(grads[len(acts):], weights),
    )


def saturated_fraction(activations: Tensor, low: float = 0.02, high: float = 0.98) -> float:
    """The fraction of sigmoid outputs at or beyond ``low`` or ``high``: on the curve's flat tails.

    With the defaults, a sigmoid is saturated when :math:`|x| \\ge \\ln 49 \\approx 3.89`, where
    its derivative :math:`\\sigma(x)(1 - \\sigma(x))` is below 0.0196, under 8% of its maximum
    of 1/4.

    Parameters
    ----------
    activations
        Sigmoid outputs, any shape.
    low, high
        The thresholds, with ``0 <= low < high <= 1``.

    Returns
    -------
    float
        A number in [0, 1].

    Examples
    --------
    >>> saturated_fraction(torch.tensor([0.01, 0.5, 0.7, 0.99]))
    0.5
    """
    if not 0.0 <= low < high <= 1.0:
        raise ValueError(f"the thresholds must satisfy 0 <= low < high <= 1, got low={low}, high={high}")
    if activations.numel() == 0:
        raise ValueError("activations is empty")
    return ((activations <= low) | (activations >= high)).float().mean().item()


def update_ratios(net: nn.Module, lr: float) -> List[float]:
    """:math:`\\log_{10}(\\lVert \\eta\\, \\nabla_W \\ell \\rVert / \\lVert W \\rVert)` for each weight.

    The size of the step plain SGD takes on each linear or convolution weight, relative to the
    weight's size, from the gradients stored in ``.grad`` (call it after ``loss.backward()``;
    :func:`d2lbn.train.train` calls its ``on_step`` hook while they are still there). A ratio
    around :math:`10^{-3}` is the usual rule of thumb: much smaller and the layer barely
    learns, much larger and it changes too fast to settle.

    Parameters
    ----------
    net
        The network.
    lr
        The learning rate :math:`\\eta` of SGD.

    Returns
    -------
    list of float
        One value per weight, input first. A zero gradient gives ``-inf``, a zero weight with a
        nonzero gradient ``inf``.

    Raises
    ------
    ValueError
        If a weight has no gradient, or ``lr`` is not positive.

    Examples
    --------
    >>> layer = nn.Linear(2, 2)
    >>> with torch.no_grad():
    ...     _ = layer.weight.fill_(1.0)
    >>> layer.weight.grad = torch.full((2, 2), 0.5)
    >>> update_ratios(layer, lr=0.02)  # 0.02 * 0.5 / 1
    [-2.0]
    """
    if not lr > 0:
        raise ValueError(f"lr must be a positive learning rate, got {lr!r}")
    ratios = []
    for index, layer in enumerate(weight_layers(net)):
        grad = layer.weight.grad
        if grad is None:
            raise ValueError(
                f"weight {index} ({type(layer).__name__}) has no gradient; call loss.backward() first"
            )
        step = lr * grad.norm().item()
        size = layer.weight.norm().item()
        if step == 0:
            ratios.append(-math.inf)
        elif size == 0:
            ratios.append(math.inf)
        else:
            ratios.append(math.log10(step / size))
    return ratios
