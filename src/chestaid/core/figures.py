"""Figures through matplotlib's object API: no pyplot, no backend switch, nothing global is touched."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

# matplotlib's text layout (mathtext's parser, the font cache) is not safe in two threads at once: a server
# drawing for two requests lays figures out and renders them one at a time
_DRAWING = threading.Lock()


def subplots(rows: int = 1, cols: int = 1, figsize: tuple[float, float] = (6, 4), squeeze: bool = True):
    """(figure, axes) as pyplot.subplots gives them, on a figure that no global state knows about."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(rows, cols, squeeze=squeeze)


def save(fig: Figure, path: str | Path, dpi: int = 100) -> Path:
    """Lay the figure out tightly and write it (the format follows the suffix)."""
    with _DRAWING:
        fig.tight_layout()
        fig.savefig(path, dpi=dpi)
    return Path(path)


def rgb(fig: Figure, dpi: int = 100) -> np.ndarray:
    """The figure laid out and rendered as an RGB array (for a page's image component: no pyplot, no backend
    switch, safe in a server's threads)."""
    from PIL import Image

    buffer = io.BytesIO()
    with _DRAWING:
        fig.tight_layout()
        fig.savefig(buffer, format="png", dpi=dpi)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
