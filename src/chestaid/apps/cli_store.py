"""The CLI's commands on a node's store beyond the worklist: clinicians' verdicts in and out, and monitoring (each
calls the API)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from chestaid.apps.cli_output import console, err


def verdicts_import(store: Annotated[Path, typer.Argument(help="a node's --store folder")],
                    csv: Annotated[Path, typer.Argument(help="SOPInstanceUID or AccessionNumber, one column per "
                                                         "finding: present/absent/can't tell or 1/0/-1; optionally "
                                                         "'priority appropriate': yes/no")],
                    user: Annotated[str, typer.Option(help="who gave these verdicts (audited)")] = "import") -> None:
    """Append verdicts (e.g. labels extracted from radiology reports) to the store; a changed verdict keeps its
    history, the same verdict from the same file is not added twice. Exit 0 when some row matched a scored
    instance, 1 when none did, 2 when the file is refused (a column that is no finding: nothing imported)."""
    import chestaid

    done = chestaid.import_verdicts(store, csv, user)
    console.print(f"{done.verdicts} verdict(s) for {done.instances} instance(s) added to {store}"
                  + (f"; {done.unchanged} already there from this file" if done.unchanged else ""))
    for row, reason in done.skipped[:10]:
        err.print(f"[yellow]passed over:[/] {escape(str(csv))} row {row}: {escape(reason)}")
    if len(done.skipped) > 10:
        err.print(f"… and {len(done.skipped) - 10} more row(s) passed over")
    if not done.instances:
        err.print(f"[red]nothing matched:[/] no row of {escape(str(csv))} names an instance of {escape(str(store))}")
        sys.exit(1)


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


def monitor(store: Annotated[Path, typer.Argument(help="a node's --store folder")],
            window: Annotated[str, typer.Option(help="instances per window (200) or a duration (12h, 1d, 1w)")] = "200",
            level: Annotated[float, typer.Option(help="the chance of any false alarm in a window (Holm)")] = 0.01,
            as_json: Annotated[bool, typer.Option("--json", help="print the windows and alarms as JSON")] = False,
            html: Annotated[Optional[Path], typer.Option(help="also write a page of the windows here")] = None,
            run: Annotated[Optional[Path], typer.Option(help="the run whose reference to use (default: the one "
                                                        "each instance was scored by)")] = None,
            fail_on_alarm: Annotated[bool, typer.Option(
                "--fail-on-alarm", help="exit 1 when a model's latest window has an alarm, 3 when nothing could be "
                                        "monitored (cron, systemd)")]
            = False) -> None:
    """Is what the node sees, and what it says, still like the run's validation data? Drift without labels
    (gate distances and refusals, score distributions and flag rates, the patient and unit mix), performance
    where verdicts exist. With --fail-on-alarm: exit 0 all monitored and quiet, 1 an alarm in a model's latest
    window, 3 nothing monitored (an empty store, or no model with a reference); 2 is an error."""
    import chestaid

    result = chestaid.monitor(store, window, level, run, html)
    if as_json:
        typer.echo(json.dumps(result, indent=2, default=float))
    else:
        for k, w in enumerate(result["windows"]):
            console.print(f"{escape(w['model'])} window {k}: {w['n']} instance(s), "
                          + (f"[red]ALARM[/]: {escape(', '.join(w['alarms']))}" if w["alarms"] else "no alarm"))
        for skipped in result["not_monitored"]:
            err.print(f"[yellow]not monitored:[/] {skipped['instances']} instance(s) of {escape(skipped['model'])}: "
                      f"{escape(skipped['why'])}")
        if result["status"] != "monitored":
            err.print(f"[yellow]nothing monitored:[/] {escape(result['status_detail'])}")
    if fail_on_alarm and result["latest_alarms"]:
        sys.exit(1)
    if fail_on_alarm and result["status"] != "monitored":
        sys.exit(3)


def triage_report(store: Annotated[Path, typer.Argument(help="a node's --store folder")],
                  rules: Annotated[Path, typer.Option("--rules", help="the site's triage rules file (with a "
                                                                      "likely_normal section)")],
                  as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a table")] = False) -> None:
    """What the likely-normal tier, in shadow, would have lowered per day and overall, the abnormal studies among
    them, the rule-out's sensitivity with exact (Clopper–Pearson) intervals, and whether it may go live."""
    import json

    import chestaid

    found = chestaid.triage_report(store, rules)
    if as_json:
        typer.echo(json.dumps(found, indent=2))
        return
    typer.echo(f"likely-normal tier of {found['rules']}: rule-out {found['rule_out']}, target sensitivity "
               f"{found['target_sensitivity']} (one-sided 95% lower bound; "
               f"{found['abnormal_needed_if_none_lowered']} abnormal studies needed with none lowered)")
    typer.echo("day\tstudies\twould lower\tabnormal\tabnormal lowered\tsensitivity (95% CI)\tlower bound")
    for day, row in [*found["days"].items(), ("overall", found["overall"])]:
        s = row["sensitivity"]
        said = "–" if s["estimate"] is None else f"{s['estimate']:.3f} ({s['ci_low']:.3f}–{s['ci_high']:.3f})"
        bound = "–" if s["lower_bound_95"] is None else f"{s['lower_bound_95']:.3f}"
        typer.echo(f"{day}\t{row['studies']}\t{row['would_lower']}\t{row['abnormal']}\t{row['abnormal_lowered']}\t"
                   f"{said}\t{bound}")
    typer.echo(("live: allowed — " if found["live_allowed"] else "live: not yet — ") + found["why"])
