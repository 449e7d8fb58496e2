"""The one progress helper: a rich progress bar on a terminal, quiet log lines elsewhere."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

T = TypeVar("T")


def progress_bar() -> Progress:
    """A progress bar with count, rate-based ETA and elapsed time (works in CI logs too)."""
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), transient=False,
    )


def track(items: Iterable[T], total: int | None, description: str) -> Iterator[T]:
    """Iterate over items while showing a progress bar."""
    with progress_bar() as bar:
        task = bar.add_task(description, total=total)
        for item in items:
            yield item
            bar.advance(task)
