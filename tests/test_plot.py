"""Tests of d2lbn.plot under the Agg backend: style, and titles, labels and legends of each helper."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from d2lbn import plot  # noqa: E402
from d2lbn.plot import (  # noqa: E402
    label_log_axis,
    PALETTE,
    STYLE,
    plot_histograms,
    plot_history,
    plot_lines,
    plot_percentiles,
    set_style,
    show_images,
)
from d2lbn.train import History  # noqa: E402


@pytest.fixture(autouse=True)
def clean_matplotlib(monkeypatch):
    """Each test starts with matplotlib's defaults and no style set, and closes its figures."""
    monkeypatch.setattr(plot, "_style_set", False)
    with matplotlib.rc_context():
        matplotlib.rcdefaults()
        yield
    plt.close("all")


def legend_texts(ax) -> list[str]:
    legend = ax.get_legend()
    return [] if legend is None else [t.get_text() for t in legend.get_texts()]


def history(epochs: int = 4, test: bool = True) -> History:
    h = History()
    for e in range(epochs):
        h.train_loss.append(1.0 / (e + 1))
        h.train_acc.append(0.6 + 0.05 * e)
        h.test_acc.append(0.58 + 0.05 * e if test else math.nan)
    return h


# -------------------------------------------------------------------------------------- style


def test_set_style_applies_the_book_style():
    set_style()
    for key, value in STYLE.items():
        if key == "axes.prop_cycle":
            assert matplotlib.rcParams[key].by_key()["color"] == list(PALETTE)
        else:
            assert matplotlib.rcParams[key] == (list(value) if isinstance(value, tuple) else value), key


def test_helpers_apply_the_style_without_set_style_and_leave_rcparams_alone():
    before = dict(matplotlib.rcParams)
    ax = plot_history(history())
    fig = ax.figure
    assert fig.dpi == STYLE["figure.dpi"]
    assert tuple(fig.get_size_inches()) == pytest.approx(STYLE["figure.figsize"])
    assert ax.xaxis.get_gridlines()[0].get_visible()  # the grid is on
    assert not ax.spines["top"].get_visible()
    assert dict(matplotlib.rcParams) == before


def test_settings_changed_after_set_style_are_kept_by_the_helpers():
    set_style()
    matplotlib.rcParams["figure.figsize"] = (4.0, 2.0)
    ax = plot_history(history())
    assert tuple(ax.figure.get_size_inches()) == pytest.approx((4.0, 2.0))


def test_set_style_selects_png_for_inline_figures_in_a_kernel(monkeypatch):
    import IPython
    import matplotlib_inline.backend_inline

    class Kernel:
        kernel = object()

    chosen = []
    monkeypatch.setattr(IPython, "get_ipython", lambda: Kernel())
    monkeypatch.setattr(matplotlib_inline.backend_inline, "set_matplotlib_formats", lambda *f: chosen.append(f))
    set_style()
    assert chosen == [("png",)]
    chosen.clear()
    monkeypatch.setattr(IPython, "get_ipython", lambda: None)  # a plain interpreter: nothing to set
    set_style()
    assert chosen == []


# ------------------------------------------------------------------------------- plot_history


def test_plot_history_draws_three_labelled_series():
    h = history()
    ax = plot_history(h, title="LeNet with BN")
    assert ax.get_title() == "LeNet with BN"
    assert ax.get_xlabel() == "epoch" and ax.get_ylabel() == "loss / accuracy"
    assert legend_texts(ax) == ["train loss", "train acc", "test acc"]
    lines = ax.get_lines()
    assert list(lines[0].get_xdata()) == [1, 2, 3, 4]
    assert list(lines[2].get_ydata()) == h.test_acc
    assert len({line.get_color() for line in lines}) == 3
    assert len({line.get_linestyle() for line in lines}) == 3


def test_plot_history_defaults_and_no_test_set():
    ax = plot_history(history(test=False))
    assert ax.get_title() == "Training loss and accuracy"
    assert legend_texts(ax) == ["train loss", "train acc"]


def test_plot_history_compares_runs_on_one_axes():
    _, ax = plt.subplots()
    returned = plot_history(history(), ax=ax, label="BN", color=PALETTE[0])
    plot_history(history(), ax=ax, label="no BN", color=PALETTE[1], title="BN against no BN")
    assert returned is ax
    assert ax.get_title() == "BN against no BN"
    assert legend_texts(ax)[:3] == ["BN train loss", "BN train acc", "BN test acc"]
    assert legend_texts(ax)[3:] == ["no BN train loss", "no BN train acc", "no BN test acc"]


def test_plot_history_fixed_epoch_axis_and_a_single_epoch():
    ax = plot_history(history(epochs=1), num_epochs=10)
    assert ax.get_xlim() == pytest.approx((0.8, 10.2))
    assert ax.get_lines()[0].get_marker() == "o"  # a single point stays visible


# --------------------------------------------------------------------------------- plot_lines


def test_plot_lines_labels_each_series():
    ax = plot_lines(
        [0.01, 0.1, 1.0],
        {"BN": [0.8, 0.85, 0.87], "no BN": torch.tensor([0.5, 0.6])},
        title="Final test accuracy", xlabel="learning rate", ylabel="accuracy", xscale="log",
    )  # fmt: skip
    assert (ax.get_title(), ax.get_xlabel(), ax.get_ylabel()) == ("Final test accuracy", "learning rate", "accuracy")
    assert ax.get_xscale() == "log"
    assert legend_texts(ax) == ["BN", "no BN"]
    assert list(ax.get_lines()[1].get_xdata()) == [0.01, 0.1]


def test_plot_lines_errors():
    with pytest.raises(ValueError, match=r"series is empty; pass a mapping such as \{'BN': accuracies"):
        plot_lines([1], {}, title="t", xlabel="x", ylabel="y")
    with pytest.raises(ValueError, match="no longer than x"):
        plot_lines([1, 2], {"a": [1, 2, 3]}, title="t", xlabel="x", ylabel="y")


def drawn_labels(ax, axis: str, minor: bool) -> list[str]:
    ax.figure.canvas.draw()
    getter = ax.get_xticklabels if axis == "x" else ax.get_yticklabels
    return [t.get_text() for t in getter(minor=minor) if t.get_text()]


def test_label_log_axis_writes_plain_numbers_where_matplotlib_writes_powers():
    fig, ax = plt.subplots()
    ax.plot([1, 2], [0.25, 6])
    ax.set_yscale("log")
    assert any("times" in text for text in drawn_labels(ax, "y", minor=True))  # 3 x 10^-1 and the like
    label_log_axis(ax, "y")
    assert drawn_labels(ax, "y", minor=False) == ["0.1", "1", "10"]
    assert drawn_labels(ax, "y", minor=True) == ["0.2", "0.3", "0.4", "0.6", "2", "3", "4", "6"]
    ax.set_ylim(1e-6, 1)  # far from 1: powers of ten again
    assert all(text.startswith("$") for text in drawn_labels(ax, "y", minor=False)[:2])
    plt.close(fig)


def test_label_log_axis_at_given_ticks_drops_the_minor_ones():
    ax = plot_lines([0.1, 1, 3, 30], {"BN": [0.5, 0.7, 0.7, 0.4]}, title="t", xlabel="x", ylabel="y", xscale="log")
    label_log_axis(ax, "x", ticks=torch.tensor([0.1, 0.3, 1, 3, 30]))
    assert drawn_labels(ax, "x", minor=False) == ["0.1", "0.3", "1", "3", "30"]
    assert list(ax.get_xticks(minor=True)) == []
    plt.close("all")


def test_label_log_axis_errors():
    fig, ax = plt.subplots()
    with pytest.raises(ValueError, match=r"linear scale, not log; call ax.set_xscale\('log'\) first"):
        label_log_axis(ax)
    ax.set_xscale("log")
    with pytest.raises(ValueError, match="axis must be 'x' or 'y'"):
        label_log_axis(ax, "z")
    with pytest.raises(ValueError, match="positive"):
        label_log_axis(ax, ticks=[0, 1])
    plt.close(fig)


# --------------------------------------------------------------------------- plot_percentiles


def test_plot_percentiles_computes_the_percentiles_of_each_step():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(30, 101)) + np.arange(30)[:, None]
    steps = np.arange(30) * 10
    ax = plot_percentiles(steps, torch.tensor(values), label="BN")
    median_line = ax.get_lines()[0]
    np.testing.assert_allclose(median_line.get_ydata(), np.median(values, axis=1))
    np.testing.assert_allclose(ax.get_lines()[1].get_ydata(), np.percentile(values, 15, axis=1))
    np.testing.assert_allclose(ax.get_lines()[2].get_ydata(), np.percentile(values, 85, axis=1))
    assert ax.get_title() == "15th, 50th and 85th percentiles"
    assert ax.get_xlabel() == "training step" and ax.get_ylabel() == "value"
    assert legend_texts(ax) == ["BN: 50th percentile", "BN: 15th-85th"]
    assert len(ax.collections) == 1  # the band


def test_plot_percentiles_overlays_two_runs_and_keeps_the_title():
    values = np.random.default_rng(1).normal(size=(5, 20))
    ax = plot_percentiles(range(5), values, label="no BN", title="Input to a last-layer sigmoid",
                          ylabel="sigmoid input")
    plot_percentiles(range(5), values * 0.1, ax=ax, label="BN", percentiles=(10, 50, 90), color="k")
    assert ax.get_title() == "Input to a last-layer sigmoid" and ax.get_ylabel() == "value"
    assert legend_texts(ax) == ["no BN: 50th percentile", "no BN: 15th-85th", "BN: 50th percentile", "BN: 10th-90th"]
    assert len({line.get_color() for line in ax.get_lines()}) == 2


def test_plot_percentiles_without_a_label_still_has_a_legend():
    ax = plot_percentiles([0, 1], np.ones((2, 3)), percentiles=(1, 2, 3))
    assert legend_texts(ax) == ["2nd percentile", "1st-3rd"]


def test_plot_percentiles_errors():
    with pytest.raises(ValueError, match=r"shape \(T, n\).*plot_lines"):
        plot_percentiles(range(3), np.ones(3))
    with pytest.raises(ValueError, match="steps must have shape"):
        plot_percentiles(range(4), np.ones((3, 5)))
    with pytest.raises(ValueError, match="three increasing"):
        plot_percentiles(range(3), np.ones((3, 5)), percentiles=(85, 50, 15))


# --------------------------------------------------------------------------- plot_histograms


def test_plot_histograms_one_panel_per_layer():
    rng = np.random.default_rng(0)
    layers = {f"layer {i}": torch.tensor(rng.normal(size=(10, 8))) for i in range(1, 6)}
    axes = plot_histograms(layers, title="Pre-activations", xlabel="sigmoid input")
    assert len(axes) == 5
    assert [ax.get_title() for ax in axes] == list(layers)
    assert all(ax.get_xlabel() == "sigmoid input" for ax in axes)
    assert [ax.get_ylabel() for ax in axes] == ["count", "", "", "", "count"]  # four per row
    fig = axes[0].figure
    assert fig.get_suptitle() == "Pre-activations"
    assert sum(ax.get_visible() for ax in fig.axes) == 5  # the eighth cell is hidden
    assert sum(patch.get_height() for patch in axes[0].patches) == 80


def test_plot_histograms_errors():
    with pytest.raises(ValueError, match=r"values is empty; pass a mapping such as \{'layer 1': activations\}"):
        plot_histograms({}, title="t")
    with pytest.raises(ValueError, match="ncols must be at least 1, got 0"):
        plot_histograms({"a": [1.0]}, title="t", ncols=0)


# ------------------------------------------------------------------------------- show_images


@pytest.mark.parametrize("shape", [(6, 1, 28, 28), (6, 28, 28)])
def test_show_images_grid_with_titles(shape):
    images = torch.rand(shape)
    axes = show_images(images, 2, 4, titles=[f"class {i}" for i in range(6)], suptitle="Fashion-MNIST")
    assert len(axes) == 8
    assert [ax.get_title() for ax in axes[:6]] == [f"class {i}" for i in range(6)]
    assert [len(ax.images) for ax in axes] == [1] * 6 + [0] * 2
    assert axes[0].images[0].get_array().shape == (28, 28)
    assert axes[0].images[0].get_cmap().name == "gray"
    assert axes[0].figure.get_suptitle() == "Fashion-MNIST"
    assert tuple(axes[0].figure.get_size_inches()) == pytest.approx((6.0, 3.4))


def test_show_images_is_no_wider_than_the_book_figures():
    axes = show_images(torch.rand(18, 28, 28), 2, 9)
    width, height = axes[0].figure.get_size_inches()
    assert width == pytest.approx(STYLE["figure.figsize"][0]) and height == pytest.approx(2 * width / 9)


def test_show_images_more_images_than_cells_color_and_lists():
    axes = show_images(np.random.rand(10, 3, 8, 8), 1, 3)
    assert len(axes) == 3 and axes[2].images[0].get_array().shape == (8, 8, 3)
    axes = show_images([np.zeros((5, 5)), np.ones((5, 5))], 1, 2, titles=["a", "b"], scale=1.0)
    assert [ax.get_title() for ax in axes] == ["a", "b"]


def test_show_images_errors():
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        show_images(np.zeros((28, 28)), 1, 1)
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        show_images(np.zeros((2, 5, 8, 8)), 1, 2)
    with pytest.raises(ValueError, match="only 1 titles"):
        show_images(np.zeros((2, 8, 8)), 1, 2, titles=["a"])
    with pytest.raises(ValueError, match="at least one row"):
        show_images(np.zeros((2, 8, 8)), 0, 2)
