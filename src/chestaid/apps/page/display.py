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


def user_of(request: gr.Request | None) -> str:
    return (getattr(request, "username", None) or "local") if request is not None else "local"
