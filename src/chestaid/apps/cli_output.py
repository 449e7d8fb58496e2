"""What every command of the CLI shares: the two consoles (results on stdout, problems on stderr) and the
one-line failure."""

from __future__ import annotations

import functools
import logging
import traceback
import warnings
from collections.abc import Callable

import typer
from rich.console import Console

from chestaid.core.errors import ChestaidError

console = Console(soft_wrap=True)  # results (stdout); silenced by --quiet
err = Console(stderr=True, soft_wrap=True)  # warnings and notes (stderr); silenced by --quiet
errors = Console(stderr=True, soft_wrap=True)  # errors (stderr): always shown


def fail(message: str, code: int = 2) -> None:
    errors.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def error_line(error: ChestaidError) -> None:
    """The one red line of a library error; with --verbose (the chestaid logger at DEBUG) the traceback of its
    cause first."""
    if error.__cause__ is not None and logging.getLogger("chestaid").isEnabledFor(logging.DEBUG):
        errors.print("".join(traceback.format_exception(error.__cause__)).rstrip(), highlight=False, markup=False)
    errors.print(f"[bold red]error:[/] {error}", highlight=False)


def one_line_errors(command: Callable) -> Callable:
    """A command whose library errors end it with their one line and exit status 2, as `fail` does (also under
    Typer's test runner, which does not go through `main`)."""
    @functools.wraps(command)
    def run(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except ChestaidError as e:
            error_line(e)
            raise typer.Exit(2) from e

    return run


def silence_dicom_value_warnings() -> None:
    """For a serving process (the node, the page): pydicom's and highdicom's warnings about a file's odd values
    quote those values (patient data), which must not reach the log. Called once, before any thread starts; this
    process is the command's own."""
    warnings.filterwarnings("ignore", module=r"(highdicom|pydicom)(\.|$)")
