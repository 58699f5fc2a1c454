"""The book's figure style, and the plots the chapters share.

Every figure of the book is drawn in one style, :data:`STYLE`: sized for the book's text column
(about 700 pixels wide), PNG at 110 dpi, a light grid, and the Okabe-Ito colors
(:data:`PALETTE`), which stay distinct for color-blind readers and in grayscale prints (the
helpers vary the line style too). A notebook calls :func:`set_style` once; the helpers here
apply the style to the figures they create even when it was not called, and leave the global
settings alone.

Each helper gives its figure a title, labels its axes and adds a legend when there is more than
one series, and returns what it drew on (an ``Axes``, or an array of them) for further tweaks.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Iterator, Mapping, Optional, Sequence, Tuple, Union

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import torch
from cycler import cycler
from matplotlib.axes import Axes
from matplotlib.ticker import LogFormatterSciNotation, NullLocator

from d2lbn.train import History

__all__ = [
    "PALETTE",
    "STYLE",
    "set_style",
    "plot_history",
    "plot_lines",
    "label_log_axis",
    "plot_percentiles",
    "plot_histograms",
    "show_images",
]

# Numbers the helpers accept: a NumPy array, a list, or a tensor (moved to the CPU).
ArrayLike = Union[np.ndarray, Sequence[float], torch.Tensor]

PALETTE: Tuple[str, ...] = (
    "#0072B2",  # blue
    "#D55E00",  # vermilion
    "#009E73",  # bluish green
    "#E69F00",  # orange
    "#CC79A7",  # reddish purple
    "#56B4E9",  # sky blue
    "#000000",  # black
    "#F0E442",  # yellow (last: faint on white)
)
"""The Okabe-Ito colors, in the order lines take them."""

STYLE: dict = {
    # 6.4 x 3.6 inches at 110 dpi: 704 x 396 pixels, the width of the book's text column.
    "figure.figsize": (6.4, 3.6),
    "figure.dpi": 110,
    "savefig.dpi": 110,
    "savefig.bbox": "tight",
    "figure.constrained_layout.use": True,
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "legend.frameon": False,
    "axes.grid": True,
    "grid.alpha": 0.35,
    "grid.linewidth": 0.6,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.prop_cycle": cycler(color=list(PALETTE)),
    "lines.linewidth": 1.8,
    "image.cmap": "viridis",
}
"""The book's matplotlib settings (``rcParams``), applied by :func:`set_style`."""

# The three series of a training history: color and line style, told apart without color too.
_HISTORY_SERIES = (
    ("train_loss", "train loss", PALETTE[0], "-"),
    ("train_acc", "train acc", PALETTE[1], "--"),
    ("test_acc", "test acc", PALETTE[2], "-."),
)

_style_set = False


def set_style() -> None:
    """Apply the book's figure style to every later figure, and make inline figures PNG.

    It updates ``matplotlib.rcParams`` with :data:`STYLE`. In a Jupyter kernel it also selects
    PNG for inline figures: an SVG of a plot with many points can weigh megabytes, a PNG stays
    small. Call it once, near the top of a notebook; settings changed after it are kept by the
    helpers of this module.

    Examples
    --------
    In a notebook's first code cell::

        import d2lbn.plot
        d2lbn.plot.set_style()
    """
    global _style_set
    matplotlib.rcParams.update(STYLE)
    _inline_png()
    _style_set = True


def _inline_png() -> None:
    """Select PNG for a Jupyter kernel's inline figures; do nothing outside a kernel."""
    if "IPython" not in sys.modules:
        return
    from IPython import get_ipython

    shell = get_ipython()
    if shell is None or getattr(shell, "kernel", None) is None:
        return
    try:
        from matplotlib_inline.backend_inline import set_matplotlib_formats
    except ImportError:  # an old or unusual kernel: keep its default
        return
    set_matplotlib_formats("png")


@contextlib.contextmanager
def _styled() -> Iterator[None]:
    """The book's style for the figures made inside, unless :func:`set_style` already applied it."""
    if _style_set:
        yield
    else:
        with matplotlib.rc_context(STYLE):
            yield


def _new_axes(ax: Optional[Axes]) -> Axes:
    if ax is not None:
        return ax
    _, ax = plt.subplots()
    return ax


def _numpy(values: ArrayLike) -> np.ndarray:
    """A float NumPy array from a list, an array or a tensor (on any device, with or without grad)."""
    if hasattr(values, "detach"):
        values = values.detach().cpu()
    return np.asarray(values, dtype=float)


def _legend(ax: Axes) -> None:
    handles, _ = ax.get_legend_handles_labels()
    if len(handles) > 1:
        ax.legend()


def plot_history(
    history: History,
    ax: Optional[Axes] = None,
    title: Optional[str] = None,
    *,
    label: Optional[str] = None,
    color: Optional[str] = None,
    num_epochs: Optional[int] = None,
) -> Axes:
    """Plot the training loss, training accuracy and test accuracy against the epoch.

    Parameters
    ----------
    history
        A :class:`d2lbn.train.History`, as :func:`d2lbn.train.train` returns it.
    ax
        Axes to draw on; a new figure when ``None``.
    title
        The title; by default "Training loss and accuracy" (followed by ``label`` if given).
    label
        A name put before each legend entry ("BN train loss"), to compare several histories on
        one ``ax``.
    color
        One color for the three curves (told apart by line style), to compare histories; by
        default each curve has its own color.
    num_epochs
        Fix the horizontal axis to epochs 1 to ``num_epochs`` (the live plot of a training run
        uses it, so that the axis does not move as epochs come in).

    Returns
    -------
    matplotlib.axes.Axes
        The axes drawn on.

    Examples
    --------
    >>> from d2lbn.train import History
    >>> history = History(train_loss=[0.9, 0.5], train_acc=[0.7, 0.8], test_acc=[0.72, 0.79])
    >>> ax = plot_history(history, title="A short run")
    >>> ax.get_title(), ax.get_xlabel(), [t.get_text() for t in ax.get_legend().get_texts()]
    ('A short run', 'epoch', ['train loss', 'train acc', 'test acc'])
    >>> plt.close("all")
    """
    with _styled():
        ax = _new_axes(ax)
        epochs = np.arange(1, len(history.train_loss) + 1)
        prefix = f"{label} " if label else ""
        for field, name, default_color, linestyle in _HISTORY_SERIES:
            values = _numpy(getattr(history, field))
            if len(values) == 0 or np.isnan(values).all():
                continue  # no test set, or nothing recorded yet
            ax.plot(
                epochs[: len(values)],
                values,
                color=color or default_color,
                linestyle=linestyle,
                marker="o" if len(values) < 2 else None,
                label=prefix + name,
            )
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss / accuracy")
        ax.set_title(title if title is not None else "Training loss and accuracy" + (f" ({label})" if label else ""))
        if num_epochs is not None:
            ax.set_xlim(0.8, max(num_epochs, 1) + 0.2)
        ax.xaxis.get_major_locator().set_params(integer=True)
        _legend(ax)
    return ax


def plot_lines(
    x: ArrayLike,
    series: Mapping[str, ArrayLike],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    ax: Optional[Axes] = None,
    xscale: str = "linear",
    yscale: str = "linear",
) -> Axes:
    """Plot several named series against the same ``x``: one line and one legend entry each.

    For curves such as test accuracy against training steps with and without batch norm, or the
    final accuracy against the learning rate (``xscale="log"``). A series shorter than ``x``
    is drawn against the first values of ``x``.

    Parameters
    ----------
    x
        The horizontal coordinates.
    series
        Legend label -> values.
    title, xlabel, ylabel
        The texts of the figure; required, since every figure of the book has them.
    ax
        Axes to draw on; a new figure when ``None``.
    xscale, yscale
        ``"linear"`` or ``"log"`` (any matplotlib scale).

    Returns
    -------
    matplotlib.axes.Axes
        The axes drawn on.

    Examples
    --------
    >>> ax = plot_lines([1, 2, 3], {"BN": [0.5, 0.8, 0.9], "no BN": [0.2, 0.4, 0.6]},
    ...                 title="Test accuracy", xlabel="step", ylabel="accuracy")
    >>> [line.get_label() for line in ax.get_lines()]
    ['BN', 'no BN']
    >>> plt.close("all")
    """
    if not series:
        raise ValueError("series is empty; pass a mapping such as {'BN': accuracies, 'no BN': accuracies}")
    x = _numpy(x)
    with _styled():
        ax = _new_axes(ax)
        for i, (name, values) in enumerate(series.items()):
            values = _numpy(values)
            if values.ndim != 1 or len(values) > len(x):
                raise ValueError(
                    f"series {name!r} has shape {values.shape}; each series must be 1-D and no longer "
                    f"than x ({len(x)} values)"
                )
            ax.plot(x[: len(values)], values, linestyle=("-", "--", "-.", ":")[i % 4], label=name)
        ax.set(title=title, xlabel=xlabel, ylabel=ylabel, xscale=xscale, yscale=yscale)
        _legend(ax)
    return ax


class _PlainLogFormatter(LogFormatterSciNotation):
    """matplotlib's choice of which log ticks to label, written 0.3 or 20 rather than 3 x 10^-1."""

    def __call__(self, x: float, pos: Optional[int] = None) -> str:
        label = super().__call__(x, pos)
        plain = f"{x:g}"
        return plain if label and "e" not in plain else label  # below 1e-4 and from 1e6 up: powers


def label_log_axis(ax: Axes, axis: str = "x", ticks: Optional[ArrayLike] = None) -> Axes:
    """Write the tick labels of a log axis as plain numbers: 0.25, 2, 30 instead of powers of ten.

    matplotlib labels a log axis at powers of ten, and, when the axis spans less than a couple of
    decades, at some ticks in between, written ``3 x 10^-1``. This keeps its choice of ticks and
    writes them as plain numbers (values below ``1e-4`` or from ``1e6`` up keep the power-of-ten
    form). With ``ticks``, the axis is labelled exactly there instead, for example at the
    learning rates or batch sizes a sweep tried, and its minor ticks are removed.

    Parameters
    ----------
    ax
        The axes; the chosen axis must already be on a log scale.
    axis
        ``"x"`` or ``"y"``.
    ticks
        Values to put the ticks at, or ``None`` to keep matplotlib's.

    Returns
    -------
    matplotlib.axes.Axes
        ``ax``.

    Examples
    --------
    >>> ax = plot_lines([0.01, 0.1, 1, 10], {"BN": [0.6, 0.7, 0.7, 0.5]}, xscale="log",
    ...                 title="Test accuracy", xlabel="learning rate", ylabel="accuracy")
    >>> [t.get_text() for t in label_log_axis(ax, "x", ticks=[0.01, 0.03, 0.1, 1, 10]).get_xticklabels()]
    ['0.01', '0.03', '0.1', '1', '10']
    >>> plt.close("all")
    """
    if axis not in ("x", "y"):
        raise ValueError(f"axis must be 'x' or 'y', got {axis!r}")
    target = ax.xaxis if axis == "x" else ax.yaxis
    if target.get_scale() != "log":
        raise ValueError(
            f"the {axis} axis has a {target.get_scale()} scale, not log; call ax.set_{axis}scale('log') first"
        )
    if ticks is None:
        target.set_major_formatter(_PlainLogFormatter())
        target.set_minor_formatter(_PlainLogFormatter(labelOnlyBase=False))
    else:
        values = _numpy(ticks).ravel()
        if values.size == 0 or (values <= 0).any():
            raise ValueError(f"ticks must be positive numbers on a log axis, got {values.tolist()}")
        target.set_ticks(values, [f"{v:g}" for v in values])
        target.set_minor_locator(NullLocator())
    return ax


def plot_percentiles(
    steps: ArrayLike,
    values: ArrayLike,
    percentiles: Sequence[float] = (15, 50, 85),
    ax: Optional[Axes] = None,
    label: Optional[str] = None,
    color: Optional[str] = None,
    *,
    title: Optional[str] = None,
    xlabel: str = "training step",
    ylabel: str = "value",
) -> Axes:
    """Draw how a distribution evolves: its median as a line, a band between two percentiles.

    This is the paper's Figure 1(b, c), which follows the input of one sigmoid of the last
    hidden layer over training through its 15th, 50th and 85th percentiles. ``values`` holds the
    raw samples, and the percentiles are computed here (over the examples of a fixed batch, for
    instance); to compare two runs, call it twice on one ``ax`` with different labels.

    Parameters
    ----------
    steps
        The T training steps at which the samples were taken, shape ``(T,)``.
    values
        The samples, shape ``(T, n)``: n values recorded at each of the T steps. A tensor is
        moved to the CPU.
    percentiles
        Three increasing percentiles in [0, 100]: the lower edge of the band, the line, the
        upper edge.
    ax
        Axes to draw on; a new figure when ``None``.
    label
        The run's name in the legend ("BN"); the entries read "BN: 50th percentile" and
        "BN: 15th-85th".
    color
        The color of the line and the band; by default the next color of the axes.
    title
        The title; by default "15th, 50th and 85th percentiles" (with the chosen percentiles).
        An ``ax`` that already has a title keeps it.
    xlabel, ylabel
        Axis labels.

    Returns
    -------
    matplotlib.axes.Axes
        The axes drawn on.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> values = rng.normal(size=(50, 200)) * np.linspace(1, 3, 50)[:, None]
    >>> ax = plot_percentiles(np.arange(50) * 100, values, label="no BN")
    >>> ax.get_title(), [t.get_text() for t in ax.get_legend().get_texts()]
    ('15th, 50th and 85th percentiles', ['no BN: 50th percentile', 'no BN: 15th-85th'])
    >>> plt.close("all")
    """
    steps, values = _numpy(steps), _numpy(values)
    if values.ndim != 2:
        raise ValueError(
            f"values must have shape (T, n): n samples at each of T steps; got shape {values.shape}. "
            "For a single series of T numbers, use plot_lines"
        )
    if steps.shape != (values.shape[0],):
        raise ValueError(f"steps must have shape (T,) = ({values.shape[0]},) to match values, got {steps.shape}")
    percentiles = tuple(float(p) for p in percentiles)
    if len(percentiles) != 3 or not 0 <= percentiles[0] < percentiles[1] < percentiles[2] <= 100:
        raise ValueError(
            f"percentiles must be three increasing numbers in [0, 100] (low, line, high), got {percentiles}"
        )
    low, mid, high = np.percentile(values, percentiles, axis=1)
    lo_name, mid_name, hi_name = (_ordinal(p) for p in percentiles)
    prefix = f"{label}: " if label else ""
    with _styled():
        ax = _new_axes(ax)
        (line,) = ax.plot(steps, mid, color=color, label=f"{prefix}{mid_name} percentile")
        ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.2, linewidth=0,
                        label=f"{prefix}{lo_name}-{hi_name}")
        for edge in (low, high):
            ax.plot(steps, edge, color=line.get_color(), linewidth=0.8, alpha=0.7)
        if title is not None or not ax.get_title():
            ax.set_title(title if title is not None else f"{lo_name}, {mid_name} and {hi_name} percentiles")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        _legend(ax)
    return ax


def _ordinal(p: float) -> str:
    """15 -> '15th', 50 -> '50th', 1 -> '1st', 2.5 -> '2.5th'."""
    if p != int(p):
        return f"{p:g}th"
    n = int(p)
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def plot_histograms(
    values: Mapping[str, ArrayLike],
    *,
    title: str,
    xlabel: str = "value",
    bins: int = 50,
    ncols: Optional[int] = None,
    sharex: bool = False,
) -> np.ndarray:
    """One histogram per named set of values, side by side: activations or gradients per layer.

    Parameters
    ----------
    values
        Name (a layer's, say) -> values of any shape; they are flattened.
    title
        The figure's title; each panel is titled by its name.
    xlabel
        The label under each panel.
    bins
        Bins per histogram.
    ncols
        Panels per row; by default all in one row, up to four.
    sharex
        Give every panel the same horizontal range.

    Returns
    -------
    numpy.ndarray
        The axes, one per name, in the order of ``values`` (the figure is ``axes[0].figure``).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> axes = plot_histograms({"layer 1": rng.normal(size=500), "layer 2": rng.normal(size=500) * 3},
    ...                        title="Pre-activations")
    >>> [ax.get_title() for ax in axes], axes[0].figure.get_suptitle()
    (['layer 1', 'layer 2'], 'Pre-activations')
    >>> plt.close("all")
    """
    if not values:
        raise ValueError("values is empty; pass a mapping such as {'layer 1': activations}")
    count = len(values)
    ncols = min(count, 4) if ncols is None else ncols
    if ncols < 1:
        raise ValueError(f"ncols must be at least 1, got {ncols}")
    nrows = -(-count // ncols)
    with _styled():
        width = matplotlib.rcParams["figure.figsize"][0]
        fig, axes = plt.subplots(
            nrows, ncols, figsize=(width, 2.4 * nrows + 0.4), sharex=sharex, squeeze=False
        )
        axes = axes.ravel()
        for i, (ax, (name, data)) in enumerate(zip(axes, values.items())):
            ax.hist(_numpy(data).ravel(), bins=bins, color=PALETTE[i % len(PALETTE)], alpha=0.85)
            ax.set_title(name)
            ax.set_xlabel(xlabel)
            if i % ncols == 0:
                ax.set_ylabel("count")
        for ax in axes[count:]:
            ax.set_visible(False)
        fig.suptitle(title)
    return axes[:count]


def show_images(
    images: ArrayLike,
    num_rows: int,
    num_cols: int,
    titles: Optional[Sequence[str]] = None,
    scale: float = 1.5,
    *,
    suptitle: Optional[str] = None,
    cmap: str = "gray",
) -> np.ndarray:
    """Show images in a grid of ``num_rows`` by ``num_cols``, each with its title.

    Parameters
    ----------
    images
        A tensor or array of shape ``(N, H, W)``, ``(N, 1, H, W)`` (grayscale) or
        ``(N, 3, H, W)`` (color), or a sequence of ``(H, W)`` images. The first
        ``num_rows * num_cols`` are shown; a grid with more cells than images leaves the rest
        blank.
    num_rows, num_cols
        The grid.
    titles
        One title per image (Fashion-MNIST class names from :func:`d2lbn.data.text_labels`, for
        instance).
    scale
        Inches per image, reduced when needed so that the grid is no wider than the book's
        figures (``rcParams["figure.figsize"]``), where it would be shrunk, titles included.
    suptitle
        A title for the whole grid.
    cmap
        The colormap of grayscale images (``"gray"``: white garments on black, as stored).

    Returns
    -------
    numpy.ndarray
        The grid's axes, flattened (the figure is ``axes[0].figure``).

    Examples
    --------
    >>> images = np.zeros((6, 1, 28, 28))
    >>> axes = show_images(images, 2, 3, titles=[f"image {i}" for i in range(6)], suptitle="Samples")
    >>> len(axes), axes[4].get_title()
    (6, 'image 4')
    >>> plt.close("all")
    """
    if num_rows < 1 or num_cols < 1:
        raise ValueError(f"the grid needs at least one row and one column, got {num_rows} x {num_cols}")
    if isinstance(images, (list, tuple)):
        images = np.stack([_numpy(image) for image in images])
    array = _numpy(images)
    if array.ndim == 4:
        if array.shape[1] == 1:
            array = array[:, 0]
        elif array.shape[1] in (3, 4):
            array = array.transpose(0, 2, 3, 1)
        else:
            raise ValueError(f"expected (N, 1, H, W) or (N, 3, H, W) images, got shape {array.shape}")
    elif array.ndim != 3:
        raise ValueError(f"expected images of shape (N, H, W), (N, 1, H, W) or (N, 3, H, W), got {array.shape}")
    count = min(len(array), num_rows * num_cols)
    if titles is not None and len(titles) < count:
        raise ValueError(f"{count} images are shown but only {len(titles)} titles were given")
    with _styled():
        # No wider than the book's figures: a wider image is shrunk to the text column, titles too.
        scale = min(scale, matplotlib.rcParams["figure.figsize"][0] / num_cols)
        fig, axes = plt.subplots(
            num_rows, num_cols, figsize=(num_cols * scale, num_rows * scale + (0.4 if suptitle else 0)),
            squeeze=False,
        )
        axes = axes.ravel()
        for i, ax in enumerate(axes):
            ax.set_axis_off()
            if i < count:
                ax.imshow(array[i], cmap=cmap if array[i].ndim == 2 else None)
                if titles is not None:
                    ax.set_title(str(titles[i]), fontsize="small")
        if suptitle:
            fig.suptitle(suptitle)
    return axes
