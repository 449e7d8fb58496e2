"""Kept for old imports: the page now lives in chestaid.apps.page."""

from chestaid.apps.page.app import build_app
from chestaid.apps.page.notes import run_notes as _run_notes
from chestaid.apps.page.server import serve

__all__ = ["_run_notes", "build_app", "serve"]
