"""Draw the book's logo and favicon: a lopsided distribution and its normalized bell curve.

The wide, off-centre grey curve stands for a layer's raw activations; the blue bell centred on
zero is what batch normalization turns them into. `logo-dark.svg` is the same drawing in
lighter strokes for the theme's dark mode. Run from anywhere, with the project's environment
(`.venv/bin/python book/_static/make_logo.py`); it rewrites `logo.svg`, `logo-dark.svg` and
`favicon.png` next to itself. The outputs are committed, so the book build does not run this.
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
# Stroke, fill, raw-curve and axis colours for a light and a dark page background.
LIGHT = {"blue": "#2f6db5", "fill": "#9cc2ec", "grey": "#8a8f98", "axis": "#333a44"}
DARK = {"blue": "#7fb2ee", "fill": "#2f5f96", "grey": "#a9aeb6", "axis": "#d5d9df"}

# Identical bytes on every run: fixed ids in the SVG, no creation date in the metadata.
plt.rcParams["svg.hashsalt"] = "d2lbn"
plt.rcParams["svg.fonttype"] = "none"


def gaussian(x: np.ndarray, mean: float, std: float) -> np.ndarray:
    return np.exp(-0.5 * ((x - mean) / std) ** 2) / (std * np.sqrt(2 * np.pi))


def draw_logo(path: Path, colors: dict) -> None:
    x = np.linspace(-4.0, 8.0, 700)
    normal = gaussian(x, 0.0, 1.0)
    # A skewed, shifted "raw activation" density: a mixture of two wider bumps.
    raw = 0.65 * gaussian(x, 2.2, 1.3) + 0.35 * gaussian(x, 3.8, 0.8)

    fig, ax = plt.subplots(figsize=(4.0, 2.6))
    blue = colors["blue"]
    ax.plot(x, raw, color=colors["grey"], lw=3.0, ls=(0, (3, 2)), solid_capstyle="round")
    ax.fill_between(x, normal, color=colors["fill"], alpha=0.9, lw=0)
    ax.plot(x, normal, color=blue, lw=4.0, solid_capstyle="round")
    # The mean of the normalized curve at zero and one standard deviation either side.
    ax.plot([0, 0], [0, gaussian(np.array(0.0), 0, 1)], color=blue, lw=2.5)
    for s in (-1.0, 1.0):
        ax.plot([s, s], [0, gaussian(np.array(s), 0, 1)], color=blue, lw=1.6, ls=(0, (2, 2)))
    ax.axhline(0, color=colors["axis"], lw=3.0)
    ax.set_xlim(-3.4, 6.6)
    ax.set_ylim(-0.02, 0.44)
    ax.axis("off")
    fig.subplots_adjust(0, 0, 1, 1)
    fig.savefig(path, transparent=True, metadata={"Date": None})
    plt.close(fig)


def draw_favicon(path: Path) -> None:
    x = np.linspace(-3.2, 3.2, 300)
    normal = gaussian(x, 0.0, 1.0)
    fig, ax = plt.subplots(figsize=(1.0, 1.0), dpi=64)
    ax.fill_between(x, normal, color=LIGHT["fill"], lw=0)
    ax.plot(x, normal, color=LIGHT["blue"], lw=4.5, solid_capstyle="round")
    ax.axhline(0, color=LIGHT["axis"], lw=4.5)
    ax.set_xlim(-3.2, 3.2)
    ax.set_ylim(-0.03, 0.43)
    ax.axis("off")
    fig.subplots_adjust(0, 0, 1, 1)
    fig.savefig(path, transparent=True, metadata={"Software": None})
    plt.close(fig)


if __name__ == "__main__":
    draw_logo(HERE / "logo.svg", LIGHT)
    draw_logo(HERE / "logo-dark.svg", DARK)
    draw_favicon(HERE / "favicon.png")
    print(f"wrote logo.svg, logo-dark.svg and favicon.png in {HERE}")
