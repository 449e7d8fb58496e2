"""What every command of the CLI shares: the two consoles (results on stdout, problems on stderr) and the
one-line failure."""

from __future__ import annotations

import typer
from rich.console import Console

console = Console(soft_wrap=True)  # results (stdout); silenced by --quiet
err = Console(stderr=True, soft_wrap=True)  # warnings and notes (stderr); silenced by --quiet
errors = Console(stderr=True, soft_wrap=True)  # errors (stderr): always shown


def fail(message: str, code: int = 2) -> None:
    errors.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)
