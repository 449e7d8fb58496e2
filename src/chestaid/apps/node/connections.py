"""Connections that hold a thread without making progress are closed, and never take a sender's place.

pynetdicom gives every TCP connection a thread at once and counts every such thread against the association
limit; its DUL thread then blocks inside a PDU until the whole PDU has come. So a peer that connects and dribbles
a byte a second, or connects and says nothing, holds a thread, and enough of them make the node reject real senders
("too many associations"). Here:

- `NodeAE` counts against `--max-associations` only connections that have asked for an association (state Sta2,
  "awaiting A-ASSOCIATE-RQ", is not counted);
- `Watchdog` closes a connection that has not sent a whole A-ASSOCIATE-RQ within the ACSE timeout, and an
  association whose DUL has received no whole PDU for the idle timeout (the node's `--idle-timeout`) while none of
  our handlers is working for it (a C-STORE being made durable is never cut), with one log line each. The node
  bounds its PDUs (`MAX_PDU`), so "no whole PDU" means no progress, not one large PDU arriving slowly. Closing the socket ends the blocked read; pynetdicom then ends the association as a closed transport.
"""

from __future__ import annotations

import logging
import socket
import threading
import time

from pynetdicom import AE

log = logging.getLogger("chestaid.node")
AWAITING_REQUEST = "Sta2"  # PS3.8 9.2: transport connection open, awaiting A-ASSOCIATE-RQ
NOT_ASKED = ("Sta1", AWAITING_REQUEST)  # Sta1: an acceptor whose connection has not been taken up yet (or is gone)
LISTEN_BACKLOG = 512  # pending TCP connections the kernel keeps while the accept loop catches up


class NodeAE(AE):
    """pynetdicom's AE whose association limit ignores connections that have not yet asked for an association."""

    @property
    def active_associations(self):
        return [a for a in super().active_associations if not (a.is_acceptor and _state(a) in NOT_ASKED)]


def _state(assoc) -> str:
    try:
        return assoc.dul.state_machine.current_state
    except AttributeError:
        return ""


def _peer(assoc) -> str:
    try:
        return f"{assoc.requestor.address}:{assoc.requestor.port}"
    except AttributeError:
        return "a peer"


class Watchdog:
    """A daemon thread closing the stuck connections of `server` (pynetdicom's AssociationServer) every
    `period` s."""

    def __init__(self, server, request_timeout: float, idle_timeout: float, period: float = 1.0,
                 busy=lambda assoc: False) -> None:
        self.server, self.period, self.busy = server, period, busy  # busy(assoc): inside a handler of ours
        self.request_timeout, self.idle_timeout = request_timeout, idle_timeout
        self._first_seen: dict[threading.Thread, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="chestaid-node-watchdog", daemon=True)

    def start(self) -> "Watchdog":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.period):
            try:
                self.check()
            except Exception as e:  # noqa: BLE001 - the watchdog never dies of one odd connection
                log.warning("connection watchdog: %s", e)

    def check(self, now: float | None = None) -> int:
        """Close what is stuck now; returns how many were closed."""
        now = time.monotonic() if now is None else now
        threads = [t for t in threading.enumerate() if "AcceptorThread" in t.name and t._server is self.server]
        alive = set(threads)
        self._first_seen = {k: v for k, v in self._first_seen.items() if k in alive}
        closed = 0
        for assoc in threads:
            first = self._first_seen.setdefault(assoc, now)
            state = _state(assoc)
            if state in NOT_ASKED and now - first > self.request_timeout:
                why = f"no A-ASSOCIATE-RQ within {self.request_timeout:g} s of connecting"
            elif (state not in ("", *NOT_ASKED) and not self.busy(assoc)
                  and _idle_expired(assoc, self.idle_timeout)):
                why = f"no whole PDU for {self.idle_timeout:g} s"
            else:
                continue
            if _close(assoc):
                closed += 1
                log.info("connection from %s closed: %s", _peer(assoc), why)
        return closed


def _idle_expired(assoc, idle_timeout: float) -> bool:
    timer = getattr(assoc.dul, "_idle_timer", None)
    remaining = getattr(timer, "remaining", None)
    return remaining is not None and remaining < -max(5.0, 0.1 * idle_timeout)  # pynetdicom's own abort comes first


def _close(assoc) -> bool:
    sock = getattr(getattr(assoc.dul, "socket", None), "socket", None)
    if sock is None:
        return False
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        return False
    return True
