"""Draw the lesson diagrams into assets/ (``make figures``).

    python assets/make_figures.py

Four pictures of the forward pass, used by notebooks/01_forward_pass.ipynb:
    one_to_one.png   one input, one output:      y = w x + b
    n_to_one.png     n inputs, one output:       y = b + x_1 w_1 + ... + x_n w_n
    n_to_m.png       n inputs, m outputs:        y_j = b_j + sum_i x_i w_{i,j}
    multilayer.png   a network with two hidden layers and the shape of each weight matrix

The subscripts follow the course's layout, weight shaped (in_features, out_features): w_{i,j}
connects input i to output j. The output is byte-for-byte the same on every run (no timestamps or
version strings in the files), so regenerating does not churn git.
"""

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no window
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Circle  # noqa: E402

ASSETS = Path(__file__).resolve().parent
RADIUS = 0.3
COLORS = {"input": "#dbeafe", "hidden": "#fef3c7", "output": "#dcfce7", "edge": "#334155"}


def node(ax, xy, label, kind):
    ax.add_patch(Circle(xy, RADIUS, facecolor=COLORS[kind], edgecolor=COLORS["edge"], lw=1.5, zorder=3))
    ax.text(*xy, label, ha="center", va="center", fontsize=13, zorder=4)


def edge(ax, start, end, label=None, where=0.5, offset=0.14):
    """An arrow between two node centres, stopping at the circles; an optional weight label."""
    (x0, y0), (x1, y1) = start, end
    length = ((x1 - x0) ** 2 + (y1 - y0) ** 2) ** 0.5
    ux, uy = (x1 - x0) / length, (y1 - y0) / length
    ax.annotate("", xy=(x1 - ux * RADIUS, y1 - uy * RADIUS), xytext=(x0 + ux * RADIUS, y0 + uy * RADIUS),
                arrowprops={"arrowstyle": "-|>", "color": COLORS["edge"], "lw": 1.1,
                            "shrinkA": 0, "shrinkB": 0}, zorder=2)
    if label:
        lx, ly = x0 + (x1 - x0) * where, y0 + (y1 - y0) * where
        ax.text(lx - uy * offset, ly + ux * offset, label, ha="center", va="center", fontsize=11,
                color="#1e3a8a", zorder=5,
                bbox={"boxstyle": "round,pad=0.1", "facecolor": "white", "edgecolor": "none"})


def column(x, n, spread=1.0):
    """``n`` node positions stacked vertically around height 0."""
    return [(x, (n - 1) / 2 * spread - i * spread) for i in range(n)]


def canvas(width, height, xlim, ylim, title):
    fig, ax = plt.subplots(figsize=(width, height))
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(title, fontsize=13)
    return fig, ax


def one_to_one():
    fig, ax = canvas(4.0, 1.8, (-0.6, 3.6), (-0.8, 0.8), r"$y = w\,x + b$")
    node(ax, (0, 0), r"$x$", "input")
    node(ax, (3, 0), r"$y$", "output")
    edge(ax, (0, 0), (3, 0), r"$w$")
    ax.text(3, -0.6, r"$+\,b$", ha="center", va="center", fontsize=12)
    return fig


def n_to_one():
    inputs = [(0, 1.5), (0, 0.5), (0, -1.5)]
    fig, ax = canvas(4.0, 3.6, (-0.6, 3.8), (-2.1, 2.1),
                     r"$\hat y = b + x_1 w_1 + x_2 w_2 + \cdots + x_n w_n$")
    for (xy, name) in zip(inputs, ("1", "2", "n")):
        node(ax, xy, f"$x_{name}$", "input")
        edge(ax, xy, (3, 0), f"$w_{name}$", where=0.45)
    ax.text(0, -0.5, r"$\vdots$", ha="center", va="center", fontsize=14)
    node(ax, (3, 0), r"$\hat y$", "output")
    ax.text(3, -0.6, r"$+\,b$", ha="center", va="center", fontsize=12)
    return fig


def n_to_m():
    inputs = [(0, 1.5), (0, 0.5), (0, -1.5)]
    outputs = [(3.4, 1.0), (3.4, -1.0)]
    fig, ax = canvas(4.4, 3.6, (-0.6, 4.3), (-2.1, 2.1),
                     r"$\hat y_j = b_j + \sum_i x_i\, w_{i,j}$")
    in_names, out_names = ("1", "2", "n"), ("1", "m")
    for xy, name in zip(inputs, in_names):
        node(ax, xy, f"$x_{name}$", "input")
    ax.text(0, -0.5, r"$\vdots$", ha="center", va="center", fontsize=14)
    for xy, name in zip(outputs, out_names):
        node(ax, xy, rf"$\hat y_{name}$", "output")
    ax.text(3.4, 0.05, r"$\vdots$", ha="center", va="center", fontsize=14)
    # Label only the edges that stay readable: w_{i,j} goes from input i to output j.
    labelled = {(0, 0): r"$w_{1,1}$", (2, 1): r"$w_{n,m}$", (0, 1): r"$w_{1,m}$"}
    for i, start in enumerate(inputs):
        for j, end in enumerate(outputs):
            edge(ax, start, end, labelled.get((i, j)), where=0.3 if (i, j) == (0, 1) else 0.45)
    return fig


def multilayer():
    sizes = (4, 5, 3, 2)
    names = ("input\n(4)", "hidden 1\n(5)", "hidden 2\n(3)", "output\n(2)")
    kinds = ("input", "hidden", "hidden", "output")
    xs = (0, 2.6, 5.2, 7.8)
    columns = [column(x, n, spread=0.85) for x, n in zip(xs, sizes)]
    fig, ax = canvas(7.0, 3.9, (-0.6, 8.4), (-2.9, 2.4), "A fully connected network: 4 → 5 → 3 → 2")
    for left, right in zip(columns, columns[1:]):
        for start in left:
            for end in right:
                edge(ax, start, end)
    for col, kind in zip(columns, kinds):
        for xy in col:
            node(ax, xy, "", kind)
    for x, name in zip(xs, names):
        ax.text(x, -2.55, name, ha="center", va="center", fontsize=10)
    for k, (x0, x1) in enumerate(zip(xs, xs[1:])):
        n_in, n_out = sizes[k], sizes[k + 1]
        ax.text((x0 + x1) / 2, 2.15, rf"$W_{k + 1}$: ({n_in}, {n_out})", ha="center", va="center",
                fontsize=10, color="#1e3a8a")
    return fig


FIGURES = {
    "one_to_one.png": one_to_one,
    "n_to_one.png": n_to_one,
    "n_to_m.png": n_to_m,
    "multilayer.png": multilayer,
}


def main() -> None:
    plt.rcParams.update({"font.family": "DejaVu Sans", "mathtext.fontset": "dejavusans"})
    for name, draw in FIGURES.items():
        fig = draw()
        # metadata=None for Software: no matplotlib version in the file, so reruns are identical.
        fig.savefig(ASSETS / name, dpi=100, bbox_inches="tight", metadata={"Software": None})
        plt.close(fig)
        print(f"wrote assets/{name}")


if __name__ == "__main__":
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()  # --help
    main()
