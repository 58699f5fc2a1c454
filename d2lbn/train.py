"""Training loop, accuracy and reproducibility helpers for the chapters.

:func:`train` trains a classifier for a number of epochs and returns a :class:`History` of
per-epoch loss, accuracies and speed. It is written for small networks on small machines: the
loss and the number of correct predictions are summed on the device and read back once per
epoch, so the loop never waits for the device inside an epoch.

**What a notebook stores.** Inside a Jupyter (or Colab) kernel, :func:`train` shows two
outputs, each one a *display* that it updates in place through an IPython display handle:

1. a text progress bar (tqdm's own, with ``leave=False``), replaced at the end of training by the
   one-line :meth:`History.summary`;
2. one figure of loss and accuracies against the epoch, redrawn after every epoch.

A notebook executed top to bottom (``jupyter nbconvert --execute``, nbclient, JupyterLab) stores
only the final state of each display: the summary line and one PNG figure. That is what the
book (built from the stored outputs) shows, and it reads offline.

Two alternatives were tried and rejected. tqdm's notebook widget (what ``tqdm.auto`` picks in a
kernel) stores an ``application/vnd.jupyter.widget-view+json`` output and the widget state; the
book renders it as nothing at all, and loads the ipywidgets JavaScript from a CDN, which fails
offline. A text bar written to stderr stores every refresh as its own stream output, so the
book shows a wall of progress lines. Outside a kernel (a script, pytest), :func:`train` uses
``tqdm.auto`` (there, the terminal bar on stderr) and draws no figure.
"""

from __future__ import annotations

import base64
import io
import math
import random
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, List, NamedTuple, Optional, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["History", "EpochStats", "train", "evaluate_accuracy", "try_gpu", "set_seed", "in_notebook"]

Device = Union[str, torch.device, None]
Batches = Iterable[Tuple[Tensor, Tensor]]


class EpochStats(NamedTuple):
    """What :class:`History` records about one epoch."""

    train_loss: float
    """Mean training loss over the epoch's examples."""
    train_acc: float
    """Training accuracy over the epoch's batches, each measured as it was trained on."""
    test_acc: float
    """Test accuracy at the end of the epoch (NaN without a test set)."""
    examples_per_sec: float
    """Training examples per second of training time (evaluation excluded)."""
    seconds: float
    """Wall-clock seconds of the whole epoch, evaluation included."""


@dataclass(repr=False)
class History:
    """Per-epoch record of a training run; :func:`train` returns one.

    Each list has one entry per epoch. The training loss and accuracy are averaged over the
    epoch's batches as the network was being trained on them (as d2l reports them), so they
    lag behind the network at the end of the epoch; the test accuracy is measured at the end.

    Attributes
    ----------
    train_loss
        Mean training loss per example.
    train_acc
        Training accuracy.
    test_acc
        Test accuracy (NaN when training without a test set).
    examples_per_sec
        Training examples per second, timing the training steps only (not the evaluation, and
        not the time spent in ``on_step``).
    seconds
        Wall-clock seconds per epoch, evaluation included.
    num_examples
        Training examples per epoch.
    device
        Where the training ran ("cpu", "cuda:0").

    Examples
    --------
    >>> history = History(train_loss=[0.61, 0.25], train_acc=[0.78, 0.907], test_acc=[0.80, 0.869],
    ...                   examples_per_sec=[15800.0, 16200.0], seconds=[3.9, 3.8],
    ...                   num_examples=[60000, 60000])
    >>> history.summary()
    'loss 0.250, train acc 0.907, test acc 0.869, 15,998 examples/s on cpu'
    >>> history.final.test_acc, history.num_epochs
    (0.869, 2)
    >>> history
    History(2 epochs: loss 0.250, train acc 0.907, test acc 0.869, 15,998 examples/s on cpu)
    """

    train_loss: List[float] = field(default_factory=list)
    train_acc: List[float] = field(default_factory=list)
    test_acc: List[float] = field(default_factory=list)
    examples_per_sec: List[float] = field(default_factory=list)
    seconds: List[float] = field(default_factory=list)
    num_examples: List[int] = field(default_factory=list)
    device: str = "cpu"

    @property
    def num_epochs(self) -> int:
        """How many epochs are recorded."""
        return len(self.train_loss)

    @property
    def final(self) -> EpochStats:
        """The last epoch's numbers, as an :class:`EpochStats` (``history.final.test_acc``)."""
        if not self.train_loss:
            raise IndexError("this History has no epochs yet")
        return EpochStats(
            self.train_loss[-1],
            self.train_acc[-1],
            self.test_acc[-1] if self.test_acc else math.nan,
            self.examples_per_sec[-1] if self.examples_per_sec else math.nan,
            self.seconds[-1] if self.seconds else math.nan,
        )

    @property
    def overall_examples_per_sec(self) -> float:
        """Training examples per second over all epochs (total examples over total training time)."""
        if not self.num_examples or len(self.num_examples) != len(self.examples_per_sec):
            return float(np.mean(self.examples_per_sec)) if self.examples_per_sec else math.nan
        train_seconds = sum(n / rate for n, rate in zip(self.num_examples, self.examples_per_sec))
        return sum(self.num_examples) / train_seconds

    def append(self, stats: EpochStats, num_examples: int) -> None:
        """Record one more epoch."""
        self.train_loss.append(stats.train_loss)
        self.train_acc.append(stats.train_acc)
        self.test_acc.append(stats.test_acc)
        self.examples_per_sec.append(stats.examples_per_sec)
        self.seconds.append(stats.seconds)
        self.num_examples.append(num_examples)

    def __repr__(self) -> str:
        return f"History({self.num_epochs} epochs: {self.summary()})"

    def summary(self) -> str:
        """The final loss and accuracies and the overall speed, in one line.

        For example ``loss 0.250, train acc 0.907, test acc 0.869, 16,000 examples/s on cpu``;
        the test accuracy is left out when there was no test set.
        """
        if not self.train_loss:
            return "no epochs recorded"
        last = self.final
        parts = [f"loss {last.train_loss:.3f}", f"train acc {last.train_acc:.3f}"]
        if not math.isnan(last.test_acc):
            parts.append(f"test acc {last.test_acc:.3f}")
        rate = self.overall_examples_per_sec
        if not math.isnan(rate):
            parts.append(f"{rate:,.0f} examples/s on {self.device}")
        return ", ".join(parts)


# ------------------------------------------------------------------------------ helpers


def try_gpu(i: int = 0) -> torch.device:
    """The best device available: CUDA GPU ``i``, else Apple's MPS, else the CPU.

    Parameters
    ----------
    i
        Which CUDA GPU to use when there are several; with ``i`` or fewer CUDA GPUs the
        fallbacks (MPS, then the CPU) are used.

    Examples
    --------
    >>> try_gpu().type in ("cuda", "mps", "cpu")
    True
    """
    if torch.cuda.is_available() and torch.cuda.device_count() > i:
        return torch.device(f"cuda:{i}")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def set_seed(seed: int) -> None:
    """Seed Python's :mod:`random`, NumPy's global generator and PyTorch (CPU and every GPU).

    After ``set_seed(s)``, building a network and training it on the CPU repeats exactly,
    provided the data comes in the same order: d2lbn's loaders draw their orders from their own
    seeded generators, not from the global ones, so build them again too (an iterator that has
    already served epochs goes on with new orders). On a
    GPU some kernels (cuDNN convolutions, atomic additions) are nondeterministic, so results
    agree closely but not always to the last bit; ``torch.use_deterministic_algorithms(True)``
    trades speed for exact repeats there.

    Raises
    ------
    TypeError
        If ``seed`` is not an integer (a float or a bool).

    Examples
    --------
    >>> set_seed(0); a = torch.rand(2)
    >>> set_seed(0); b = torch.rand(2)
    >>> torch.equal(a, b)
    True
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an integer, got {type(seed).__name__}")
    seed = int(seed)  # random.seed refuses NumPy integers
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # seeds every CUDA device too
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def in_notebook() -> bool:
    """Whether the code runs in a Jupyter or Colab kernel (where displays can be updated).

    A plain Python interpreter, pytest and the terminal IPython shell are not notebooks.

    Examples
    --------
    >>> in_notebook()
    False
    """
    if "IPython" not in sys.modules:  # every kernel has imported IPython
        return False
    from IPython import get_ipython

    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def _in_ipython() -> bool:
    """Whether an IPython shell runs (a kernel, or the terminal IPython)."""
    if "IPython" not in sys.modules:
        return False
    from IPython import get_ipython

    return get_ipython() is not None


def _num_correct(y_hat: Tensor, y: Tensor) -> Tensor:
    """Number of correct predictions, as a 0-d tensor on the device (no synchronization).

    Several outputs per example are class scores: the prediction is the argmax (against integer
    labels of shape ``(N,)`` or ``(N, 1)``, or against the argmax of one-hot or probability
    targets of the scores' shape). A single output per example is a logit: the prediction is
    ``y_hat > 0``, against labels ``y > 0.5``.
    """
    if y_hat.dim() > 1 and y_hat.shape[1] > 1:
        pred = y_hat.argmax(dim=1)
        if y.shape == y_hat.shape:  # one-hot or probability targets
            y = y.argmax(dim=1)
        elif y.numel() == pred.numel():  # class indices, (N,) or (N, 1)
            y = y.reshape(pred.shape)
        else:
            raise ValueError(
                f"labels of shape {tuple(y.shape)} do not fit class scores of shape {tuple(y_hat.shape)}: "
                "give class indices of shape (N,) or one-hot targets of the scores' shape"
            )
        return (pred == y).sum()
    return ((y_hat.reshape(-1) > 0) == (y.reshape(-1) > 0.5)).sum()


def _device_of(net: nn.Module) -> torch.device:
    for tensor in net.parameters():
        return tensor.device
    for tensor in net.buffers():
        return tensor.device
    return torch.device("cpu")


def _mode_of(net: nn.Module) -> List[Tuple[nn.Module, bool]]:
    return [(module, module.training) for module in net.modules()]


def _restore_mode(modes: List[Tuple[nn.Module, bool]]) -> None:
    for module, training in modes:
        module.training = training


def evaluate_accuracy(net: nn.Module, data_iter: Batches, device: Device = None) -> float:
    """Accuracy of ``net`` over the batches of ``data_iter``, in evaluation mode.

    The network is put in evaluation mode (batch norm uses its running statistics, dropout is
    off) and every module gets back the mode it had, so it can be called in the middle of
    training (from ``on_step``, say). Predictions are counted on the device and read back once.

    Parameters
    ----------
    net
        A classifier: ``(N, C)`` class scores, or ``(N,)`` / ``(N, 1)`` logits of a binary one.
    data_iter
        Batches ``(X, y)``: a list, a DataLoader, a :class:`d2lbn.data.TensorBatches`.
    device
        Where to compute; by default the device of the network's parameters.

    Returns
    -------
    float
        The fraction of examples predicted correctly.

    Examples
    --------
    >>> net = nn.Linear(2, 2)
    >>> with torch.no_grad():
    ...     _ = net.weight.copy_(torch.eye(2)), net.bias.zero_()
    >>> batches = [(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1])),
    ...            (torch.tensor([[2.0, 1.0]]), torch.tensor([1]))]
    >>> evaluate_accuracy(net, batches)
    0.6666666666666666
    """
    device = _device_of(net) if device is None else torch.device(device)
    modes = _mode_of(net)
    net.eval()
    correct = torch.zeros((), dtype=torch.int64, device=device)
    total = 0
    try:
        with torch.no_grad():
            for X, y in data_iter:
                X, y = X.to(device), y.to(device)
                correct += _num_correct(net(X), y)
                total += y.shape[0]
    finally:
        _restore_mode(modes)
    if total == 0:
        raise ValueError("evaluate_accuracy got no examples: data_iter yielded no batches (is it empty or exhausted?)")
    return correct.item() / total


# ------------------------------------------------------------------- notebook displays


class _DisplayLine:
    """A file-like object that shows what tqdm writes as one updatable line of notebook output."""

    encoding = "utf-8"  # lets tqdm draw its Unicode bar

    def __init__(self) -> None:
        from IPython.display import display

        self._handle = display({"text/plain": ""}, raw=True, display_id=True)
        self._last = ""

    def write(self, text: str) -> int:
        line = text.split("\r")[-1].rstrip("\n")
        if line.strip() and line != self._last:  # tqdm clears the line with blanks on close; keep the bar
            self._last = line
            self._handle.update({"text/plain": line}, raw=True)
        return len(text)

    def flush(self) -> None:
        pass

    def show(self, line: str) -> None:
        self._last = line
        self._handle.update({"text/plain": line}, raw=True)


class _LivePlot:
    """One figure of the history, redrawn after each epoch in a single notebook display."""

    def __init__(self, num_epochs: int) -> None:
        self.num_epochs = num_epochs
        self._handle: Any = None

    def update(self, history: History) -> None:
        from IPython.display import display
        from matplotlib.figure import Figure

        from d2lbn import plot

        # A Figure made without pyplot is never shown by the inline backend on its own, so the
        # cell ends with this one display of it and no duplicate.
        with plot._styled():
            fig = Figure()
            ax = fig.add_subplot()
            plot.plot_history(history, ax=ax, num_epochs=self.num_epochs)
            buffer = io.BytesIO()
            fig.savefig(buffer, format="png", dpi=fig.dpi, bbox_inches="tight")
        data = {
            "image/png": base64.b64encode(buffer.getvalue()).decode("ascii"),
            "text/plain": f"<Figure: training loss and accuracy, {history.num_epochs} of {self.num_epochs} epochs>",
        }
        if self._handle is None:
            self._handle = display(data, raw=True, display_id=True)
        else:
            self._handle.update(data, raw=True)


class _NoProgress:
    """Stands in for a progress bar when ``progress=False``."""

    def update(self, n: int = 1) -> None:
        pass

    def set_description_str(self, text: str, refresh: bool = True) -> None:
        pass

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(total: int, notebook: bool) -> Tuple[Any, Optional[_DisplayLine]]:
    if notebook:
        from tqdm.std import tqdm as text_tqdm

        line = _DisplayLine()
        # The terminal bar, written into one display: every refresh replaces the previous one.
        return text_tqdm(total=total, unit="batch", file=line, leave=False, mininterval=0.5), line
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="batch", leave=True, dynamic_ncols=True), None


# ---------------------------------------------------------------------------- training


def train(
    net: nn.Module,
    train_iter: Batches,
    test_iter: Optional[Batches],
    num_epochs: int,
    lr: Optional[float],
    device: Device = None,
    *,
    optimizer: Optional[torch.optim.Optimizer] = None,
    loss_fn: Optional[Callable[[Tensor, Tensor], Tensor]] = None,
    progress: bool = True,
    live_plot: Optional[bool] = None,
    on_step: Optional[Callable[[int, nn.Module, Tensor], Any]] = None,
) -> History:
    """Train a classifier with mini-batch SGD and record loss, accuracies and speed per epoch.

    Each epoch puts the network in training mode, takes one optimizer step per batch of
    ``train_iter``, then measures the accuracy on ``test_iter`` in evaluation mode. The network
    is used as given: moved to ``device`` but not re-initialized (the model factories of
    :mod:`d2lbn.models` initialize their weights).

    Parameters
    ----------
    net
        The network; it is moved to ``device`` in place.
    train_iter
        Training batches ``(X, y)``, iterated once per epoch. Anything with a length works: a
        :class:`d2lbn.data.TensorBatches`, a DataLoader, a list of tensor pairs.
    test_iter
        Test batches, for the test accuracy after each epoch; ``None`` for none.
    num_epochs
        Passes over ``train_iter``.
    lr
        Learning rate of the default optimizer, ``torch.optim.SGD(net.parameters(), lr)``;
        ignored (pass ``None``) when ``optimizer`` is given.
    device
        Where to train; by default :func:`try_gpu`.
    optimizer
        An optimizer over ``net``'s parameters, such as ``torch.optim.Adam(net.parameters())``.
    loss_fn
        ``loss_fn(y_hat, y)``, the mean loss over the batch; by default
        :class:`torch.nn.CrossEntropyLoss`. For one output per example, use
        :class:`torch.nn.BCEWithLogitsLoss` with float labels of the same shape.
    progress
        Show a progress bar. In a notebook it is tqdm's text bar in one line of output that
        ends as the :meth:`History.summary` line (not tqdm's widget, which the book cannot show
        offline; see the notes at the top of this module); elsewhere it is tqdm's bar on stderr.
    live_plot
        Redraw a figure of the history after each epoch. ``None`` (default): only in a Jupyter
        or Colab kernel, see :func:`in_notebook`. The notebook keeps one final figure. ``True``
        forces it in any IPython shell; a plain interpreter only gets a warning.
    on_step
        Called as ``on_step(step, net, loss)`` after every optimizer step, with ``step``
        counting from 1 over the whole run and ``loss`` the batch's mean loss as a 0-d tensor on
        the device (``loss.item()`` reads it, at the cost of waiting for the device). Chapters
        record diagnostics or the test accuracy against steps with it; it must leave the
        network in the mode it found it (:func:`evaluate_accuracy` does). Its time is not
        counted in ``examples_per_sec``.

    Returns
    -------
    History
        Per-epoch training loss and accuracy, test accuracy, examples/s and seconds.

    Raises
    ------
    TypeError
        If ``train_iter`` has no length (wrap a generator in ``list``).
    ValueError
        If ``train_iter`` or ``test_iter`` yields no batches, or ``num_epochs`` or ``lr`` is not
        positive.
    FloatingPointError
        If the training loss becomes NaN or infinite: the learning rate is too high.

    Examples
    --------
    >>> set_seed(0)
    >>> X = torch.randn(64, 2); y = (X[:, 0] > 0).long()
    >>> batches = [(X[i:i + 16], y[i:i + 16]) for i in range(0, 64, 16)]
    >>> history = train(nn.Linear(2, 2), batches, batches, num_epochs=3, lr=0.5, device="cpu",
    ...                 progress=False)
    >>> history.num_epochs, history.train_loss[-1] < history.train_loss[0]
    (3, True)
    """
    if isinstance(num_epochs, bool) or not isinstance(num_epochs, int) or num_epochs < 1:
        raise ValueError(f"num_epochs must be a positive integer, got {num_epochs!r}")
    try:
        num_batches = len(train_iter)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(
            f"train_iter must have a length, so that progress can be shown; got a {type(train_iter).__name__}. "
            "Use a list of (X, y) batches, a DataLoader or d2lbn.data.TensorBatches "
            "(wrap a generator in list(...))"
        ) from None
    if num_batches == 0:
        raise ValueError("train_iter has no batches; check the dataset size and batch size")
    if hasattr(test_iter, "__len__") and len(test_iter) == 0:  # type: ignore[arg-type]
        raise ValueError("test_iter has no batches; check the test set's size and batch size")
    if optimizer is None:
        if lr is None or not lr > 0:
            raise ValueError(f"lr must be a positive learning rate (or pass an optimizer), got {lr!r}")
    device = try_gpu() if device is None else torch.device(device)
    net.to(device)
    if optimizer is None:
        optimizer = torch.optim.SGD(net.parameters(), lr=lr)
    if loss_fn is None:
        loss_fn = nn.CrossEntropyLoss()

    notebook = in_notebook()
    if live_plot is None:
        live_plot = notebook
    elif live_plot and not notebook and not _in_ipython():
        warnings.warn(
            "live_plot=True draws through IPython's display, and this is a plain Python interpreter: "
            "no live plot. Plot the returned history with d2lbn.plot.plot_history instead",
            stacklevel=2,
        )
        live_plot = False
    plotter = _LivePlot(num_epochs) if live_plot else None
    if progress:
        bar, line = _progress_bar(num_epochs * num_batches, notebook)
    else:
        bar, line = _NoProgress(), None
    history = History(device=str(device))
    step = 0
    try:
        for epoch in range(1, num_epochs + 1):
            bar.set_description_str(f"epoch {epoch}/{num_epochs}", refresh=False)
            net.train()
            epoch_start = time.perf_counter()
            hook_seconds = 0.0
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), dtype=torch.int64, device=device)
            count = 0
            for X, y in train_iter:
                X, y = X.to(device), y.to(device)
                y_hat = net(X)
                loss = loss_fn(y_hat, y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss = loss.detach()
                with torch.no_grad():
                    loss_sum += loss * y.shape[0]
                    correct += _num_correct(y_hat, y)
                count += y.shape[0]
                step += 1
                if on_step is not None:
                    hook_start = time.perf_counter()
                    on_step(step, net, loss)
                    hook_seconds += time.perf_counter() - hook_start
                bar.update(1)
            if count == 0:
                raise ValueError(
                    f"train_iter yielded no batches in epoch {epoch} although its length is {num_batches}; "
                    "is it a one-shot iterator? Pass a list or a re-iterable object"
                )
            mean_loss = loss_sum.item() / count  # the one synchronization of the epoch
            train_seconds = time.perf_counter() - epoch_start - hook_seconds
            if not math.isfinite(mean_loss):
                current_lr = optimizer.param_groups[0].get("lr", lr)
                raise FloatingPointError(
                    f"the training loss became {mean_loss} in epoch {epoch}: training diverged. "
                    f"Lower the learning rate (it is {current_lr}), for example by a factor of 10"
                )
            train_acc = correct.item() / count
            test_acc = math.nan if test_iter is None else evaluate_accuracy(net, test_iter, device)
            stats = EpochStats(
                train_loss=mean_loss,
                train_acc=train_acc,
                test_acc=test_acc,
                examples_per_sec=count / max(train_seconds, 1e-9),
                seconds=time.perf_counter() - epoch_start,
            )
            history.append(stats, count)
            postfix = f"loss {mean_loss:.3f}, train acc {train_acc:.3f}"
            if test_iter is not None:
                postfix += f", test acc {test_acc:.3f}"
            bar.set_postfix_str(postfix, refresh=True)
            if plotter is not None:
                plotter.update(history)
    finally:
        bar.close()
    if line is not None:
        line.show(history.summary())
    return history
