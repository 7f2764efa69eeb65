"""The one plotting setup: matplotlib's Agg backend (files only, no display), one style,
constrained layout (titles, suptitle, labels and legends get their own room), one save, and
label placement that keeps point labels apart. Needs matplotlib (extra `report`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

STYLE = {"font.size": 9, "axes.titlesize": 10, "axes.grid": True, "grid.alpha": 0.3,
         "legend.fontsize": 8, "figure.dpi": 90, "savefig.dpi": 90}


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    plt.rcParams.update(STYLE)
    return plt


def figure(nrows: int = 1, ncols: int = 1, figsize: tuple[float, float] = (7, 4.5),
           **kwargs: Any) -> tuple[Any, Any]:
    """(figure, axes as a 2-D array) with constrained layout: a suptitle never lands on the
    panel titles, and long tick labels get their room."""
    plt = pyplot()
    return plt.subplots(nrows, ncols, figsize=figsize, squeeze=False, layout="constrained",
                        **kwargs)


def save(fig: Any, path: Path, dpi: int | None = None) -> None:
    fig.savefig(path, dpi=dpi or STYLE["savefig.dpi"])
    pyplot().close(fig)


def label_points(ax: Any, points: Sequence[tuple[float, float, str]], fontsize: float = 7,
                 gap_px: float = 1.5) -> None:
    """Label each (x, y, text) point to its right, moving labels up or down until no two
    overlap (in pixels), with a thin leader line from a moved label back to its point: a
    cluster of points (e.g. many rows at KL ~ 0) stays readable."""
    fig = ax.figure
    fig.canvas.draw()  # fixes the axes' transform so data -> pixels is final
    height = fontsize * fig.dpi / 72 * 1.25  # one text line, pixels
    placed: list[tuple[float, float, float]] = []  # (x0, x1, y) of labels already drawn
    order = sorted(points, key=lambda p: ax.transData.transform((p[0], p[1]))[1])
    for x, y, text in order:
        px, py = ax.transData.transform((x, y))
        x0, x1 = px + 5, px + 5 + 0.55 * fontsize * fig.dpi / 72 * len(text)
        ty = py
        # Nudge upward past every placed label this one would overlap horizontally.
        for _ in range(len(placed) + 1):
            clash = [p for p in placed if p[0] < x1 and x0 < p[1] and abs(p[2] - ty) < height + gap_px]
            if not clash:
                break
            ty = max(p[2] for p in clash) + height + gap_px
        placed.append((x0, x1, ty))
        moved = abs(ty - py) > 1
        ax.annotate(text, (x, y), xytext=(5, (ty - py) * 72 / fig.dpi), textcoords="offset points",
                    fontsize=fontsize, va="center",
                    arrowprops={"arrowstyle": "-", "lw": 0.5, "color": "gray",
                                "shrinkA": 0, "shrinkB": 2} if moved else None)
