"""The package's version, read once from its installed metadata (pyproject.toml is the only place it is set)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("chestaid")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
