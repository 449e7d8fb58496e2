"""The outbox sender: C-STORE SCU of the result objects, with retries, exponential backoff and a dead letter.

A result is `pending` until its destination answers a success (or warning) status; a refused or aborted
association, a timeout or a failure status counts as one try, the next after base × 2^tries seconds (at most
`max_delay`); after `tries` failures it is `dead`, keeping the last error. A destination that cannot be reached
at all (connection refused, no route, no answer to the TCP connection) is down, not refusing: its results stay
pending however long it is down, retried every `max_delay` s, with a warning when it has been down for `tries`
tries (the metrics show the oldest pending result's age). A resend of the same object carries the same
SOPInstanceUID, so the destination keeps one copy.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time

from pynetdicom import AE
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from chestaid.apps.node.outputs import TRANSPORTS, Destination
from chestaid.apps.node.tls import TlsSettings, client_context
from chestaid.store import DATABASE_ERRORS, Store
from chestaid.core.errors import describe

log = logging.getLogger("chestaid.node")

OK_STATUSES = {0x0000, 0xB000, 0xB006, 0xB007}  # success, or a warning: the object was stored


def _reachable(destination: Destination) -> bool:
    """Whether the destination accepts a TCP connection (pynetdicom reports a refused connection as an abort)."""
    try:
        with socket.create_connection((destination.host, destination.port), timeout=5):
            return True
    except OSError:
        return False


def _unreachable(error: BaseException) -> bool:
    """Whether an HTTP client's error means the server could not be reached at all (not an answer, not TLS)."""
    import urllib.error

    import errno

    unreachable = {errno.ECONNREFUSED, errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EHOSTDOWN}
    seen = error.reason if isinstance(error, urllib.error.URLError) and not isinstance(
        error, urllib.error.HTTPError) else None  # urllib wraps what failed while connecting (and while sending)
    return isinstance(seen, socket.gaierror) or (isinstance(seen, OSError) and seen.errno in unreachable) or (
        isinstance(seen, TimeoutError) and "timed out" in str(seen))


def _tls_problem(destination: Destination, tls: TlsSettings) -> str:
    """Why a TLS handshake with the destination fails ("" when it succeeds, or the destination is plain)."""
    if not destination.tls:
        return ""
    try:
        with socket.create_connection((destination.host, destination.port), timeout=5) as raw:
            with client_context(tls).wrap_socket(raw, server_hostname=destination.host):
                return ""
    except ssl.SSLCertVerificationError as e:
        return f"TLS: the destination's certificate was refused ({e.verify_message})"
    except (ssl.SSLError, OSError) as e:
        return f"TLS handshake failed ({getattr(e, 'reason', None) or type(e).__name__})"


class Sender:
    """A thread that empties the outbox; `wake()` when results were queued, `stop()` to end."""

    def __init__(self, store: Store, ae_title: str = "CHESTAID", tries: int = 8, base_delay: float = 2.0,
                 max_delay: float = 300.0, timeout: float = 30.0, tls: TlsSettings | None = None) -> None:
        self.store, self.ae_title, self.tries = store, ae_title, max(1, tries)
        self.tls = tls or TlsSettings()
        self.base_delay, self.max_delay, self.timeout = base_delay, max_delay, timeout
        self._wake, self._stop = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._loop, name="chestaid-node-sender", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 30) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                due = self._pass()
            except DATABASE_ERRORS as e:  # a shared database away: what was claimed is tried again
                log.error("sender: cannot reach the store's database (%s); retrying in 5 s", describe(e))
                self._stop.wait(5)
                continue
            if due is not False:
                self._wake.wait(1.0 if due is None else min(1.0, max(0.05, due - time.time())))
                self._wake.clear()

    def _pass(self) -> float | None | bool:
        """Send one batch of due results: False when there was one, else when the next is due (None: none)."""
        rows = self.store.claim_due(horizon=self.max_delay)
        if not rows:
            return self.store.next_due()
        groups: dict[str, list] = {}
        for row in rows:
            groups.setdefault(row["destination"], []).append(row)
        for destination, group in groups.items():
            if not self.store.claims_held():  # cut off from the other nodes long enough that they may send these
                log.warning("sender: no beat recorded for a while; not sending what another node may have taken")
                return None
            try:
                self.send(Destination.parse(destination), group)
            except DATABASE_ERRORS:
                raise
            except Exception as e:  # noqa: BLE001 - one bad destination must not stop the sender
                for row in group:
                    self.record_failure(row, describe(e))
        return False

    def _retry_at(self, attempts: int, down: bool = False) -> float | None:
        if attempts + 1 >= self.tries and not down:
            return None
        return time.time() + min(self.max_delay, self.base_delay * 2 ** min(attempts, 60))

    def record_failure(self, row, error: str, down: bool = False, dead: bool = False) -> None:
        """One failed try; `down`: the destination could not be reached at all (never a dead letter, and never
        counted among the tries of a destination that answers); `dead`: it refused the result for good (a dead
        letter at once)."""
        tried = row["down_tries"] if down else row["attempts"]
        retry_at = None if dead else self._retry_at(tried, down)
        self.store.failed(row["id"], error, retry_at, down)
        if down and tried + 1 == self.tries:
            log.warning("result %s to %s: destination down for %d tries (%s); kept pending, retried every %.0f s "
                        "until it answers", row["result_uid"], row["destination"], self.tries, error,
                        self.max_delay)
        elif retry_at is None:
            log.warning("result %s (%s of %s) to %s: dead letter after %d tries: %s", row["result_uid"],
                        row["kind"], row["source_uid"], row["destination"], row["attempts"] + 1, error)
        else:
            log.info("result %s to %s: try %d failed (%s); next in %.1f s", row["result_uid"], row["destination"],
                     row["attempts"] + 1, error, retry_at - time.time())

    def send(self, destination: Destination, rows: list) -> None:
        """One batch of results to one destination, by its transport (outputs.TRANSPORTS)."""
        TRANSPORTS[destination.transport].send(self, destination, rows)

    def send_dimse(self, destination: Destination, rows: list) -> None:
        """One association for a batch of results (C-STORE)."""
        ae = AE(ae_title=self.ae_title)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout
        ae.connection_timeout = min(self.timeout, 10.0)  # a destination that drops SYNs is down in 10 s, not 2 min
        for sop_class in sorted({row["sop_class"] for row in rows}):
            ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        tls_args = (client_context(self.tls), destination.host) if destination.tls else None
        try:
            assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title,
                                 tls_args=tls_args)
        except OSError as e:  # a name that does not resolve: down until it does
            for row in rows:
                self.record_failure(row, f"cannot connect to {destination} ({describe(e)})", down=True)
            return
        if not assoc.is_established:
            why = ("association rejected" if assoc.is_rejected else
                   (_tls_problem(destination, self.tls) or "association aborted") if _reachable(destination)
                   else "cannot connect")
            for row in rows:
                self.record_failure(row, f"{why} by {destination}", down=why == "cannot connect")
            return
        sent = 0
        try:
            for row in rows:
                if not assoc.is_established:
                    break  # the rest stay due: they were not tried
                try:
                    status = assoc.send_c_store(str(self.store.root / row["path"]))
                except Exception as e:  # noqa: BLE001
                    self.record_failure(row, f"C-STORE failed ({describe(e)})")
                    continue
                code = getattr(status, "Status", None)
                if code in OK_STATUSES:
                    self.store.sent(row["id"])
                    sent += 1
                elif code is None:
                    self.record_failure(row, f"no C-STORE response from {destination} (association aborted or timed out)")
                else:
                    self.record_failure(row, f"C-STORE status 0x{code:04X} from {destination}")
        finally:
            if assoc.is_established:
                assoc.release()
        log.info("association to %s: %d of %d results sent", destination, sent, len(rows))

    def send_fhir(self, destination: Destination, rows: list) -> None:
        """Each report bundle POSTed to the FHIR server (a transaction)."""
        from chestaid.apps.node.fhir import post_bundle

        context = client_context(self.tls) if destination.tls else None
        for row in rows:
            try:
                post_bundle(destination.url, (self.store.root / row["path"]).read_bytes(), self.timeout, context)
            except (OSError, ValueError) as e:
                self.record_failure(row, f"FHIR bundle to {destination.url} failed ({describe(e)})", down=_unreachable(e))
                continue
            self.store.sent(row["id"])

    def send_stow(self, destination: Destination, rows: list) -> None:
        """One STOW-RS request for a batch of results."""
        from chestaid.apps.node.dicomweb import stow

        context = client_context(self.tls) if destination.tls else None
        try:
            took, refused = stow(destination.url, [self.store.root / r["path"] for r in rows], self.timeout,
                                 context=context)
        except (OSError, ValueError) as e:
            for row in rows:
                self.record_failure(row, f"STOW-RS to {destination} failed ({describe(e)})", down=_unreachable(e))
            return
        for row in rows:
            if row["result_uid"] in took:
                self.store.sent(row["id"])
            else:
                self.record_failure(row, f"STOW-RS: {refused.get(row['result_uid'], 'not in the response')} from {destination}")
        log.info("STOW-RS to %s: %d of %d results taken", destination, len(took & {r['result_uid'] for r in rows}),
                 len(rows))
