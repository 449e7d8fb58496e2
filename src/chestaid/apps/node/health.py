"""Health endpoints for load balancers, systemd and Kubernetes probes (`chestaid node … --health-port P`):

GET /healthz   alive: the worker and sender threads run and the DICOM listener answers a C-ECHO within a few seconds
               (a node whose associations hang is not alive: restart it). 200 or 503.
GET /readyz    ready to be sent images: the model is loaded, the store's folder takes a durable write, its
               database answers and takes a write lock within a few seconds; and, only with
               `--ready-max-pending-age` (a node that cannot deliver still receives and scores: taking it out of a
               load balancer would stop intake), no result pending longer than that. The oldest pending result's
               age is always in the answer. 200 or 503.

Both answer JSON: {"ok": bool, "checks": {name: {"ok": bool, "detail": text}}}; no patient data, no paths.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from chestaid.core.errors import describe
from chestaid.store import DATABASE_ERRORS

log = logging.getLogger("chestaid.node")
PROBE_TIMEOUT = 5.0  # seconds each check may take


def _check(ok: bool, detail: str) -> dict:
    return {"ok": bool(ok), "detail": detail}


class Health:
    """The checks over a started `Node`, and the HTTP server answering them."""

    def __init__(self, node, max_pending_age: float | None = None) -> None:
        self.node, self.max_pending_age = node, max_pending_age
        self.server = None

    # -- checks ------------------------------------------------------------------------------------------------

    def alive(self) -> dict:
        node = self.node
        checks = {"worker": _check(node.worker is not None and node.worker.is_alive(), "scoring thread running"),
                  "sender": _check(node.sender is not None and node.sender.is_alive(), "outbox thread running"),
                  "dicom": self._echo()}
        return {"ok": all(c["ok"] for c in checks.values()), "checks": checks}

    def ready(self) -> dict:
        node = self.node
        checks = {"model": _check(node.worker is not None, "model loaded" if node.worker else "no model loaded"),
                  "store": self._store_writable(), "database": self._database(), "outbox": self._outbox()}
        return {"ok": all(c["ok"] for c in checks.values()), "checks": checks}

    def _echo(self) -> dict:
        receiver = self.node.receiver
        if receiver is None or receiver.server is None:
            return _check(False, "not listening")
        host = receiver.host if receiver.host not in ("0.0.0.0", "", "::") else "127.0.0.1"
        if receiver.ssl_context is not None:  # a C-ECHO would need a client certificate: does the port accept?
            import socket

            try:
                socket.create_connection((host, receiver.port), timeout=PROBE_TIMEOUT).close()
            except OSError as e:
                return _check(False, f"no TCP connection to port {receiver.port} within {PROBE_TIMEOUT:g} s ({e})")
            return _check(True, "listening over TLS (a TCP connection accepted; C-ECHO needs a client certificate)")
        from pynetdicom import AE
        from pynetdicom.sop_class import Verification

        ae = AE(ae_title="CHESTAID-HEALTH")
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = PROBE_TIMEOUT
        ae.add_requested_context(Verification)
        assoc = ae.associate(host, receiver.port, ae_title=receiver.ae.ae_title)
        if assoc.is_rejected:
            return _check(True, "association rejected (busy or not allowed), but answered")
        if not assoc.is_established:
            return _check(False, f"no answer to an association on port {receiver.port} within {PROBE_TIMEOUT:g} s")
        try:
            status = assoc.send_c_echo()
        finally:
            assoc.release()
        if getattr(status, "Status", None) != 0x0000:
            return _check(False, f"C-ECHO not answered within {PROBE_TIMEOUT:g} s")
        return _check(True, "C-ECHO answered")

    def _store_writable(self) -> dict:
        probe = self.node.store.root / f".health-{uuid.uuid4().hex}.tmp"
        try:
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, b"ok")
                os.fsync(fd)
            finally:
                os.close(fd)
            probe.unlink()
        except OSError as e:
            return _check(False, f"the store's folder takes no durable write ({describe(e)})")
        return _check(True, "the store's folder takes durable writes")

    def _database(self) -> dict:
        store = self.node.store
        try:
            store.probe(PROBE_TIMEOUT)
        except (OSError, *DATABASE_ERRORS) as e:
            return _check(False, f"the database ({store.database_kind}) does not answer or takes no writes within "
                                 f"{PROBE_TIMEOUT:g} s ({describe(e)})")
        return _check(True, f"the database ({store.database_kind}) answers and takes writes")

    def _outbox(self) -> dict:
        try:
            oldest = self.node.store.oldest_pending()
        except (OSError, *DATABASE_ERRORS) as e:
            return _check(False, f"the outbox cannot be read ({describe(e)})")
        age = time.time() - oldest if oldest is not None else 0.0
        if self.max_pending_age is not None and age > self.max_pending_age:
            return _check(False, f"a result has been pending for {age:.0f} s (limit {self.max_pending_age:g} s)")
        return _check(True, "no result pending" if oldest is None else f"oldest pending result {age:.0f} s old")

    # -- HTTP --------------------------------------------------------------------------------------------------

    def serve(self, port: int, host: str = "127.0.0.1") -> int:
        health = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # probes every few seconds: not logged
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                path = self.path.split("?")[0]
                if path not in ("/healthz", "/readyz"):
                    answer, status = {"ok": False, "detail": "GET /healthz or /readyz"}, 404
                else:
                    try:
                        answer = health.alive() if path == "/healthz" else health.ready()
                    except Exception as e:  # noqa: BLE001 - a probe answers, whatever broke
                        answer = {"ok": False, "detail": describe(e)}
                    status = 200 if answer["ok"] else 503
                data = json.dumps(answer, indent=1).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, name="chestaid-node-health", daemon=True).start()
        return self.server.server_address[1]

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
