"""The `chestaid` command line: parses arguments and calls the library; errors are one line, no traceback.

Commands live in cli_data (synth, weights, prepare, stats), cli_runs (train … compare), cli_demo and cli_page; the DICOM node's in
apps.node.commands (node, worklist). `--quiet` shows only errors, `--verbose` the library's debug records."""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer

from chestaid.apps import cli_data, cli_demo, cli_page, cli_runs, cli_store
from chestaid.apps.cli_output import console, err, error_line, errors, one_line_errors
from chestaid.apps.node import commands as node_commands
from chestaid.core.errors import ChestaidError
from chestaid.core.log import configure

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Chest X-ray classifiers that support triage (they do not diagnose).")
synth_app = typer.Typer(no_args_is_help=True, help="Write synthetic data in the real NIH or Kaggle layout.")
app.add_typer(synth_app, name="synth")
weights_app = typer.Typer(no_args_is_help=True, help="Bring published weights in: a whole run, or a backbone.")
app.add_typer(weights_app, name="weights")
gate_app = typer.Typer(no_args_is_help=True, help="The input gate: refuse images unlike those it was fitted on.")
app.add_typer(gate_app, name="gate")

synth_app.command("nih")(one_line_errors(cli_data.synth_nih_cmd))
synth_app.command("pneumonia")(one_line_errors(cli_data.synth_pneumonia_cmd))
weights_app.command("import-xrv")(one_line_errors(cli_data.import_xrv_cmd))
weights_app.command("import", help="The same as import-xrv (CheXNet-style state dicts too).")(
    one_line_errors(cli_data.import_xrv_cmd))
gate_app.command("fit")(one_line_errors(cli_data.gate_fit_cmd))
for command in (cli_data.prepare, cli_data.stats, cli_runs.train, cli_runs.evaluate, cli_runs.calibrate,
                cli_runs.thresholds, cli_runs.predict, cli_runs.export, cli_runs.explain, cli_page.serve,
                cli_demo.demo, cli_runs.compare, cli_page.audit):
    app.command()(one_line_errors(command))
users_app = typer.Typer(no_args_is_help=True, help="The page's users file (argon2 password hashes, API tokens).")
app.add_typer(users_app, name="users")
users_app.command("add")(one_line_errors(cli_page.users_add))
verdicts_app = typer.Typer(no_args_is_help=True, help="Clinicians' verdicts on the node's instances, in and out.")
app.add_typer(verdicts_app, name="verdicts")
verdicts_app.command("import")(one_line_errors(cli_store.verdicts_import))
verdicts_app.command("export")(one_line_errors(cli_store.verdicts_export))
app.command("monitor")(one_line_errors(cli_store.monitor))
app.command("node")(one_line_errors(node_commands.node))
app.command("worklist")(one_line_errors(node_commands.worklist))
study_app = typer.Typer(no_args_is_help=True, help="The node's studies.")
app.add_typer(study_app, name="study")
study_app.command("complete")(one_line_errors(node_commands.study_complete))
triage_app = typer.Typer(no_args_is_help=True, help="Triage: the likely-normal tier's evidence.")
app.add_typer(triage_app, name="triage")
triage_app.command("report")(one_line_errors(cli_store.triage_report))


@app.callback()
def output(quiet: Annotated[bool, typer.Option("--quiet", "-q", help="print nothing but errors")] = False,
           verbose: Annotated[bool, typer.Option("--verbose", "-v", help="also the library's debug records")]
           = False) -> None:
    """Chest X-ray classifiers that support triage (they do not diagnose)."""
    configure(quiet=quiet, verbose=verbose)
    warnings_log = logging.getLogger("py.warnings")  # Python warnings (e.g. Pillow's on odd files) as log lines
    warnings_log.handlers = logging.getLogger("chestaid").handlers
    warnings_log.setLevel(logging.ERROR if quiet else logging.WARNING)
    logging.captureWarnings(True)
    console.quiet = err.quiet = quiet  # results and warnings; errors always show (cli_output.fail)


def set_without_equals(argv: list[str]) -> str:
    """The one-line hint for `--set key value` (Typer would only say "unexpected extra argument"), or ""."""
    for i, item in enumerate(argv[:-1]):
        if item == "--set" and "=" not in argv[i + 1]:
            value = argv[i + 2] if i + 2 < len(argv) and not argv[i + 2].startswith("-") else "VALUE"
            return f"--set takes key=value in one word: --set {argv[i + 1]}={value}"
    return ""


def main() -> None:
    """Entry point: library errors become one red line and exit code 2 (with --verbose, the cause's traceback
    follows it)."""
    hint = set_without_equals(sys.argv[1:])
    if hint:
        errors.print(f"[bold red]error:[/] {hint}", highlight=False)
        sys.exit(2)
    try:
        app()
    except ChestaidError as e:  # raised outside a command (none is, today)
        error_line(e)
        sys.exit(2)
    except KeyboardInterrupt:
        errors.print("interrupted; run the same command again to resume")
        sys.exit(130)


if __name__ == "__main__":
    main()
