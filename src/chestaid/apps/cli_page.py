"""The CLI's page commands: serve (the triage page and the node's worklist), users add, audit."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated

import typer

from chestaid.apps.cli_output import console, silence_dicom_value_warnings

BACKEND_HELP = ("auto (the fastest variant `chestaid export` recorded as passing parity on this CPU, else torch), "
                "torch, onnx, openvino, openvino-bf16 or openvino-int8")


def serve(run: Path,
          host: Annotated[str, typer.Option(help="off loopback, logins and TLS are required")] = "127.0.0.1",
          port: Annotated[int, typer.Option(min=1, max=65535)] = 7860,
          device: Annotated[str, typer.Option(help="cpu or cuda")] = "cpu",
          backend: Annotated[str, typer.Option(help=BACKEND_HELP)] = "auto",
          max_upload_mb: Annotated[int, typer.Option(min=1, help="largest upload accepted")] = 64,
          users: Annotated[Path | None, typer.Option(help="users file (chestaid users add NAME --users FILE)")]
          = None,
          trusted_header: Annotated[str | None, typer.Option(
              help="the SSO proxy's user header, e.g. X-Remote-User (with --trusted-proxy)")] = None,
          trusted_proxy: Annotated[list[str] | None, typer.Option(
              help="IP address of the SSO proxy; the header is ignored from any other (repeatable)")] = None,
          certfile: Annotated[Path | None, typer.Option(help="TLS certificate (PEM)")] = None,
          keyfile: Annotated[Path | None, typer.Option(help="TLS private key (PEM)")] = None,
          store: Annotated[Path | None, typer.Option(help="the DICOM node's store: adds the worklist")] = None,
          upload_dir: Annotated[Path | None, typer.Option(
              help="where the private upload folder is made (default: the system's temporary folder)")] = None,
          ) -> None:
    """The triage web page (and its HTTP API, e.g. gradio_client's /score); with --store, the node's worklist."""
    from chestaid.apps.page import ServeOptions
    from chestaid.apps.page import serve as run_serve
    from chestaid.apps.page.server import logins_of

    if store is not None:
        import chestaid

        chestaid.open_worklist(store).close()  # an error now, not after the model loaded
    options = ServeOptions(host=host, port=port, device=device, backend=backend, max_upload_mb=max_upload_mb,
                           users=users, trusted_header=trusted_header, trusted_proxies=tuple(trusted_proxy or ()),
                           certfile=certfile, keyfile=keyfile, store=store, upload_dir=upload_dir)
    logins_of(options)  # a refusal before anything loads
    silence_dicom_value_warnings()
    run_serve(run, options, announce=lambda url: console.print(f"serving {run} on {url} (Ctrl+C to stop)"))


def users_add(name: str, users: Annotated[Path, typer.Option(help="the users file (made 0600 if new)")],
              password: Annotated[str, typer.Option(prompt=True, hide_input=True, confirmation_prompt=True,
                                                    envvar="CHESTAID_PASSWORD",
                                                    help="asked for when not given")] = "") -> None:
    """Add (or replace) a page user: an argon2 hash of the password and a new API token, shown once."""
    from chestaid.apps.page.auth import add_user

    token = add_user(users, name, password)
    console.print(f"user {name} written to {users}")
    console.print(f"API token (shown once; send it as 'Authorization: Bearer TOKEN'): {token}", highlight=False)


AUDIT_COLUMNS = ("time", "user", "action", "SOPInstanceUID")


def audit(store: Path,
          json_out: Annotated[bool, typer.Option("--json", help="a JSON array (as worklist --json)")] = False,
          last: Annotated[int | None, typer.Option(min=1, help="only the last N rows")] = None) -> None:
    """The page's audit trail in a node store: time, user, action, SOPInstanceUID (no pixels, no names); a
    tab-separated table with a header row, or with --json one JSON array of objects."""
    import json

    import chestaid

    node = chestaid.open_worklist(store)
    try:
        rows = node.audit_rows(last or -1)
    finally:
        node.close()
    records = [{"time": datetime.fromtimestamp(r["at"], timezone.utc).isoformat(timespec="seconds"),
                "user": r["user"], "action": r["action"], "SOPInstanceUID": r["sop_uid"]} for r in rows]
    if json_out:
        typer.echo(json.dumps(records, indent=2))
        return
    typer.echo("\t".join(AUDIT_COLUMNS))
    for record in records:
        typer.echo("\t".join(record[c] for c in AUDIT_COLUMNS))
