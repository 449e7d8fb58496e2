"""The error types chestaid raises for problems a user can fix (shown as one line, no traceback)."""

from __future__ import annotations

from pathlib import Path


class ChestaidError(Exception):
    """A problem with the user's input or files, reported as a single readable line."""


def describe(error: BaseException) -> str:
    """An exception as one short line: its type and its message, whitespace collapsed, at most 160 characters."""
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:160]}" if text else type(error).__name__


class ImageDecodeError(ChestaidError):
    """A file could not be read as an image; names the file and the reason."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")
