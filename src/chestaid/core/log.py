"""Output of the command line: the library only logs to the `chestaid` logger (and its children); the CLI,
and nothing else, attaches a handler here. Library callers configure `logging` as they like."""

from __future__ import annotations

import logging
import sys

LOGGER = "chestaid"


class _Stderr(logging.StreamHandler):
    """A handler on whatever sys.stderr is when a record is written (not the stream of the moment it was made)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def configure(quiet: bool = False, verbose: bool = False) -> logging.Logger:
    """One stderr handler on the `chestaid` logger: errors only (quiet), INFO (default) or DEBUG (verbose).
    Calling it again replaces the handler it added before."""
    logger = logging.getLogger(LOGGER)
    for handler in [h for h in logger.handlers if getattr(h, "_chestaid_cli", False)]:
        logger.removeHandler(handler)
    handler = _Stderr()
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s" if verbose else "%(message)s"))
    handler._chestaid_cli = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(logging.ERROR if quiet else logging.DEBUG if verbose else logging.INFO)
    return logger
