"""How the page shows a picture (an inline PNG: nothing on disk, no URL to fetch) and who is asking."""

from __future__ import annotations

import base64
import html
import io

import gradio as gr
import numpy as np
from PIL import Image

DISPLAY_SIZE = 448


def picture_html(picture: np.ndarray | None, alt: str) -> str:
    """An image as an inline PNG (nothing on disk, nothing to download by URL); '' for none."""
    if picture is None:
        return ""
    if picture.shape[0] < DISPLAY_SIZE:  # small caches (demo runs) are enlarged for the eye only
        picture = np.asarray(Image.fromarray(picture).resize((DISPLAY_SIZE, DISPLAY_SIZE), Image.BILINEAR))
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}" style="max-width:100%;height:auto">'


def score_text(value: float | None) -> str:
    """A risk score as the page shows it: three decimals, and never "1.000" or "0.000", which read as certainty
    ("> 0.999", "< 0.001")."""
    if value is None:
        return ""
    if value >= 0.9995:
        return "> 0.999"
    if value < 0.0005:
        return "< 0.001"
    return f"{value:.3f}"


def colour_scale_html(caption: str) -> str:
    """The heat map's colour scale (matplotlib's jet, as `explain.gradcam.overlay` draws) with its meaning."""
    import matplotlib

    strip = (np.asarray(matplotlib.colormaps["jet"](np.linspace(0, 1, 256))[:, :3]) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(np.repeat(strip[None], 14, axis=0)).save(buffer, format="PNG")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return (f'<div class="heat-caption"><b>{html.escape(caption)}</b><br><span>low</span> '
            f'<img src="data:image/png;base64,{data}" alt="colour scale from low (blue) to high (red)" '
            'style="width:60%;height:14px;vertical-align:middle"> <span>high</span><br>'
            "<small>Where the model's evidence for this finding lies, relative within this image: qualitative, not "
            "an outline of a lesion.</small></div>")


def heat_map_html(picture: np.ndarray, finding: str) -> str:
    """A heat map with the finding it explains and its colour scale."""
    return picture_html(picture, f"heat map of {finding}") + colour_scale_html(f"Heat map of {finding}")


def user_of(request: gr.Request | None) -> str:
    return (getattr(request, "username", None) or "local") if request is not None else "local"
