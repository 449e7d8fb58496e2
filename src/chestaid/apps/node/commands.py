"""The node's commands as typer-compatible functions: `chestaid node RUN --store DIR` and `chestaid worklist DIR`
(registered by chestaid.apps.cli; `python -m chestaid.apps.node` runs them on their own)."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated, Optional

import typer

from chestaid.apps.cli_output import silence_dicom_value_warnings
from chestaid.apps.node.worklist import COLUMNS, STUDY_COLUMNS, rows_of, study_rows
from chestaid.core.errors import ChestaidError


def _split(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def _log_to_stderr() -> None:
    """One line per association and instance on stderr, unless the CLI already set up chestaid's logging."""
    node_log = logging.getLogger("chestaid.node")
    if not logging.getLogger("chestaid").handlers and not node_log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        node_log.addHandler(handler)
    node_log.setLevel(logging.INFO)


def node(run: Annotated[Path, typer.Argument(help="a trained run directory")],
         store: Annotated[Path, typer.Option("--store", help="the node's folder: received images, results, and "
                                                            "its database (the worklist and the outbox)")],
         port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port to listen on")] = 11112,
         ae_title: Annotated[str, typer.Option("--ae-title", help="this node's AE title")] = "CHESTAID",
         host: Annotated[str, typer.Option(help="address to listen on")] = "0.0.0.0",
         send_to: Annotated[Optional[str], typer.Option(
             "--send-to", help="where results go: AET@HOST:PORT, AET@HOST:PORT+tls over TLS, or a DICOMweb root "
                               "https://…/dicom-web (STOW-RS) (several: comma-separated)")] = None,
         allow: Annotated[Optional[str], typer.Option(
             help="calling AE titles accepted, comma-separated (default: any)")] = None,
         max_associations: Annotated[int, typer.Option(
             "--max-associations", min=1, help="concurrent associations; more are rejected as transient")] = 16,
         idle_timeout: Annotated[float, typer.Option(
             "--idle-timeout", min=1.0, help="seconds an association may stay silent before it is aborted")] = 300.0,
         study_quiet_period: Annotated[float, typer.Option(
             "--study-quiet-period", min=0.0, help="seconds without a new image after which a study is complete and "
                                                   "gets its study result (0: no study results; an SR per "
                                                   "image instead)")] = 60.0,
         triage_rules: Annotated[Optional[Path], typer.Option(
             "--triage-rules", help="the site's triage rules (YAML: version, findings: level [at a threshold or a "
                                    "sensitivity]); each study's level goes with its results")] = None,
         notify_email: Annotated[Optional[str], typer.Option(
             "--notify-email", help="critical findings: e-mail these contacts, the next one each time the last "
                                    "leaves it unacknowledged (comma-separated, in escalation order)")] = None,
         notify_smtp: Annotated[Optional[str], typer.Option(
             "--notify-smtp", help="the mail server, HOST:PORT (STARTTLS; a login from $CHESTAID_SMTP_USER and "
                                   "$CHESTAID_SMTP_PASSWORD)")] = None,
         notify_from: Annotated[str, typer.Option("--notify-from", help="the notices' sender address")]
         = "chestaid@localhost",
         notify_webhook: Annotated[Optional[str], typer.Option(
             "--notify-webhook", help="critical findings: POST a JSON body signed with HMAC-SHA256 under "
                                      "$CHESTAID_WEBHOOK_SECRET (header X-Chestaid-Signature)")] = None,
         escalate_after: Annotated[float, typer.Option(
             "--escalate-after", min=1.0, help="seconds a critical notification may stay unacknowledged before "
                                               "it goes to the next contact")] = 900.0,
         notify_patient_names: Annotated[bool, typer.Option(
             "--notify-patient-names", help="put the patient's name in notices (default: identifiers only)")]
         = False,
         page_url: Annotated[str, typer.Option("--page-url", help="the worklist page's address, for notices")] = "",
         per_image_results: Annotated[bool, typer.Option(
             "--per-image-results", help="also send an SR (and a FHIR report) per image beside the study results; "
                                         "they are always kept in the store")] = False,
         request_timeout: Annotated[float, typer.Option(
             "--request-timeout", min=1.0, help="seconds a connection may take to ask for an association before it "
                                                "is closed")] = 30.0,
         batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 16,
         heat_maps: Annotated[bool, typer.Option(help="a Secondary Capture heat map per scored image")] = True,
         send_tries: Annotated[int, typer.Option("--send-tries", min=1,
                                                 help="tries per result before its dead letter (a destination that "
                                                      "cannot be reached is retried until it answers)")] = 8,
         retry_delay: Annotated[float, typer.Option("--retry-delay", min=0.0,
                                                    help="seconds before the first retry; doubled each time")] = 2.0,
         max_retry_delay: Annotated[float, typer.Option("--max-retry-delay", min=0.0)] = 300.0,
         send_timeout: Annotated[float, typer.Option("--send-timeout", min=1.0,
                                                     help="seconds a destination may take to answer")] = 30.0,
         device: str = "cpu",
         tls_cert: Annotated[Optional[Path], typer.Option("--tls-cert", help="accept DICOM over TLS only, with "
                                                          "this certificate (PEM); also ours towards +tls peers")] = None,
         tls_key: Annotated[Optional[Path], typer.Option("--tls-key", help="its private key (PEM)")] = None,
         tls_ca: Annotated[Optional[Path], typer.Option("--tls-ca", help="CA certificates that sign the peers' "
                                                        "certificates (PEM)")] = None,
         tls_require_client_cert: Annotated[bool, typer.Option(
             "--tls-require-client-cert", help="refuse a sender without a certificate signed by --tls-ca")] = False,
         dicomweb_port: Annotated[Optional[int], typer.Option(
             "--dicomweb-port", min=0, max=65535, help="also receive by STOW-RS: POST /dicom-web/studies")] = None,
         dicomweb_users: Annotated[Optional[Path], typer.Option(
             "--dicomweb-users", help="the page's users file: STOW-RS needs one of its bearer tokens (required "
                                      "off loopback, with TLS)")] = None,
         fhir_url: Annotated[Optional[str], typer.Option(
             "--fhir-url", help="FHIR R4 server base(s): a DiagnosticReport per study (per scored image with "
                                "--per-image-results or without study results), exactly once (comma-separated)")]
         = None,
         metrics_port: Annotated[Optional[int], typer.Option(
             "--metrics-port", min=0, max=65535, help="Prometheus metrics on this port (GET /metrics)")] = None,
         health_port: Annotated[Optional[int], typer.Option(
             "--health-port", min=0, max=65535, help="GET /healthz (alive) and /readyz (ready) on this port, for "
                                                     "load balancers, systemd and Kubernetes probes")] = None,
         ready_max_pending_age: Annotated[Optional[float], typer.Option(
             "--ready-max-pending-age", min=1.0, help="/readyz is unready while a result has been pending longer "
                                                      "than this many seconds (default: never; intake goes on)")]
         = None,
         metrics_host: Annotated[str, typer.Option(
             "--metrics-host", help="address of the metrics and health endpoints")] = "127.0.0.1",
         database: Annotated[Optional[str], typer.Option(
             "--database", envvar="CHESTAID_DATABASE",
             help="postgresql://user@host/db: a store shared by several nodes (the --store folder on storage they "
                  "all mount); default: the folder's own SQLite database")] = None,
         node_name: Annotated[Optional[str], typer.Option(
             "--node-name", help="this node among those sharing a store (default: AE title@host:port)")] = None
         ) -> None:
    """A DICOM node: receive by C-STORE, score each image on arrival into the store's worklist, send a heat map per
    scored image and, once a study is complete, one SR per study to --send-to. Stops on Ctrl-C or SIGTERM; a restart
    resumes."""
    from chestaid.apps.node.node import Node, NodeConfig
    from chestaid.apps.node.notices import NoticeSettings
    from chestaid.apps.node.tls import TlsSettings

    _log_to_stderr()
    silence_dicom_value_warnings()
    if not (Path(run) / "model.safetensors").is_file():
        raise ChestaidError(f"{run}: not a trained run (no model.safetensors)")
    if Path(store).exists() and not Path(store).is_dir():
        raise ChestaidError(f"{store}: is a file; --store is a folder (a new one, or the node's existing store)")
    config = NodeConfig(run=Path(run), store=Path(store), port=port, ae_title=ae_title, host=host,
                        send_to=_split(send_to), allow=_split(allow), max_associations=max_associations,
                        idle_timeout=idle_timeout, request_timeout=request_timeout, batch_size=batch_size,
                        study_quiet_period=study_quiet_period or None, per_image_results=per_image_results,
                        triage_rules=triage_rules,
                        notify=NoticeSettings(tuple(_split(notify_email)), notify_smtp or "", notify_from,
                                              notify_webhook or "", escalate_after=escalate_after,
                                              patient_names=notify_patient_names, page_url=page_url),
                        heat_maps=heat_maps, send_tries=send_tries, retry_delay=retry_delay,
                        max_retry_delay=max_retry_delay, send_timeout=send_timeout, device=device,
                        tls=TlsSettings(tls_cert, tls_key, tls_ca, tls_require_client_cert).check(),
                        dicomweb_port=dicomweb_port, dicomweb_users=dicomweb_users, fhir_url=_split(fhir_url),
                        metrics_port=metrics_port, metrics_host=metrics_host,
                        health_port=health_port, health_host=metrics_host,
                        ready_max_pending_age=ready_max_pending_age, database=database, node_name=node_name)
    stop = threading.Event()
    try:
        running = Node(config).start()
    except OSError as e:  # Node names the listener; this is what no listener caught
        raise ChestaidError(f"cannot start the node on {host}:{port} ({e.strerror or e})") from e
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    finally:
        running.stop()


def worklist(store: Annotated[Path, typer.Argument(help="a node's --store folder")],
             as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a table")] = False,
             status: Annotated[Optional[str], typer.Option(
                 help="only this state: queued, scored, 'not read', refused, unreadable or ignored")] = None,
             quiet_period: Annotated[float, typer.Option(
                 "--quiet-period", min=0.0, help="seconds without a new image after which a study is complete")]
             = 60.0,
             instances: Annotated[bool, typer.Option(
                 "--instances", help="one row per instance instead of per study (implied by --status)")] = False,
             studies: Annotated[bool, typer.Option("--studies", hidden=True, help="(the default)")] = False
             ) -> None:
    """The node's worklist, highest risk first: every study with its highest risk, flags, current study result and
    (with --json) its images; or, with --instances, every instance with its state, reason and results."""
    by_instance = instances or status is not None
    rows, columns = ((rows_of(store, status, quiet_period), COLUMNS) if by_instance
                     else (study_rows(store), STUDY_COLUMNS))
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    typer.echo("\t".join(columns))
    for row in rows:
        typer.echo("\t".join("" if row[c] is None else str(row[c]) for c in columns))


def study_complete(store: Annotated[Path, typer.Argument(help="a node's --store folder")],
                   study_uid: Annotated[str, typer.Argument(help="the StudyInstanceUID to complete now")]) -> None:
    """Complete a study now, whatever the quiet period: the running node makes its study result within a second
    (a later image still makes the next version)."""
    import chestaid

    opened = chestaid.open_worklist(store)
    try:
        if not opened.force_study(study_uid):
            raise ChestaidError(f"{store}: no instance of study {study_uid}")
    finally:
        opened.close()
    typer.echo(f"study {study_uid}: completion forced")
