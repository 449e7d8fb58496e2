"""The CLI's commands on a node's store beyond the worklist: clinicians' verdicts in and out (each calls the API)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from chestaid.apps.cli_output import console, err


def verdicts_import(store: Annotated[Path, typer.Argument(help="a node's --store folder")],
                    csv: Annotated[Path, typer.Argument(help="SOPInstanceUID or AccessionNumber, one column per "
                                                         "finding: present/absent/can't tell or 1/0/-1")],
                    user: Annotated[str, typer.Option(help="who gave these verdicts (audited)")] = "import") -> None:
    """Append verdicts (e.g. labels extracted from radiology reports) to the store; a changed verdict keeps its
    history."""
    import chestaid

    done = chestaid.import_verdicts(store, csv, user)
    console.print(f"{done.verdicts} verdict(s) for {done.instances} instance(s) added to {store}")
    for row, reason in done.skipped[:10]:
        err.print(f"[yellow]passed over:[/] {csv} row {row}: {reason}")
    if len(done.skipped) > 10:
        err.print(f"… and {len(done.skipped) - 10} more row(s) passed over")


def verdicts_export(store: Annotated[Path, typer.Argument(help="a node's --store folder")],
                    out: Annotated[Path, typer.Option("--out", help="the table to write (for prepare --table)")],
                    findings: Annotated[Optional[str], typer.Option(help="A,B,… (default: every finding with a "
                                                                    "verdict)")] = None) -> None:
    """The latest verdicts as a table: path, patient_id, one 0/1 column per finding (instances with a present or
    absent verdict on each). It holds patient IDs: keep it where the images are."""
    import chestaid

    written, rows, left_out = chestaid.export_verdicts(store, out, findings.split(",") if findings else None)
    console.print(f"wrote {written}: {rows} instance(s)" + (f"; {left_out} with verdicts left out (can't tell, or "
                                                             "no verdict on a finding)" if left_out else ""))
