"""Figures through matplotlib's object API: no pyplot, no backend switch, nothing global is touched."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure


def subplots(rows: int = 1, cols: int = 1, figsize: tuple[float, float] = (6, 4), squeeze: bool = True):
    """(figure, axes) as pyplot.subplots gives them, on a figure that no global state knows about."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(rows, cols, squeeze=squeeze)


def save(fig: Figure, path: str | Path, dpi: int = 100) -> Path:
    """Lay the figure out tightly and write it (the format follows the suffix)."""
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    return Path(path)
