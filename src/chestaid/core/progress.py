"""The one progress helper. A bar is drawn only while the `chestaid` logger is enabled for INFO (the CLI's
default; `--quiet` or a library caller's own logging settings silence it) and goes to stderr, never stdout."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

T = TypeVar("T")


def progress_bar() -> Progress:
    """A progress bar with count, rate-based ETA and elapsed time (works in CI logs too); disabled unless the
    `chestaid` logger shows INFO records."""
    shown = logging.getLogger("chestaid").isEnabledFor(logging.INFO)
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), transient=False, disable=not shown,
        console=Console(stderr=True),
    )


def track(items: Iterable[T], total: int | None, description: str) -> Iterator[T]:
    """Iterate over items while showing a progress bar."""
    with progress_bar() as bar:
        task = bar.add_task(description, total=total)
        for item in items:
            yield item
            bar.advance(task)
