"""HL7 v2 over MLLP out (a `--send-to mllp://HOST:PORT` destination): each message framed (VT … FS CR) on one TCP
connection per batch, its acknowledgement read before the next. MSA-1 decides: AA (or CA) sent; AE (an application
error: the RIS could not take it now) retried with backoff through the outbox until it is taken; AR (rejected: resending
the same message cannot help) a dead letter at once, its reason kept. A RIS that cannot be reached, or that closes
the connection or answers nothing before the timeout, is down: the message stays pending and is sent again, never
lost (its control ID lets the RIS recognise a resend)."""

from __future__ import annotations

import logging
import socket

log = logging.getLogger("chestaid.node")
START, END = b"\x0b", b"\x1c\x0d"


def frame(message: bytes) -> bytes:
    return START + message + END


def read_frame(connection: socket.socket, limit: int = 1 << 20) -> bytes:
    """One MLLP frame's content; raises OSError when the peer closes first or sends more than `limit` bytes."""
    data = b""
    while END not in data:
        chunk = connection.recv(65536)
        if not chunk:
            raise ConnectionError("the RIS closed the connection without an acknowledgement")
        data += chunk
        if len(data) > limit:
            raise ConnectionError("the RIS's acknowledgement is larger than 1 MiB")
    start = data.find(START)
    return data[start + 1 if start >= 0 else 0:data.find(END)]


def ack_of(reply: bytes) -> tuple[str, str]:
    """(MSA-1 acknowledgement code, the ERR-3 error codes) of an ACK; ("", why) when it is not one. Free text (MSA-3,
    ERR-8) is never kept: a RIS may quote the message back, patient name included."""
    segments = reply.decode("utf-8", "replace").replace("\n", "\r").split("\r")
    msa = next((s.split("|") for s in segments if s.startswith("MSA|")), None)
    if msa is None or len(msa) < 2:
        return "", "an answer without an MSA segment"
    codes = [fields[3].split("^")[0][:20] for fields in (s.split("|") for s in segments if s.startswith("ERR|"))
             if len(fields) > 3 and fields[3]]
    return msa[1].strip().upper()[:2], ("error codes " + ", ".join(codes)) if codes else ""


def send_mllp(sender, destination, rows: list) -> None:
    """Each row's message to the RIS over one connection, its acknowledgement recorded (outputs.TRANSPORTS)."""
    try:
        connection = socket.create_connection((destination.host, destination.port), timeout=10)
    except OSError as e:
        for row in rows:
            sender.record_failure(row, f"MLLP to {destination}: cannot connect ({e.strerror or e})", down=True)
        return
    with connection:
        connection.settimeout(sender.timeout)
        for k, row in enumerate(rows):
            try:
                message = (sender.store.root / row["path"]).read_bytes()
            except OSError as e:  # the store lost it: a failed try of this row, not a RIS that is down
                sender.record_failure(row, f"MLLP: the message file cannot be read ({type(e).__name__})")
                continue
            try:
                connection.sendall(frame(message))
                code, text = ack_of(read_frame(connection))
            except OSError as e:  # closed, reset or silent: down, the rest of the batch too
                for rest in rows[k:]:
                    sender.record_failure(rest, f"MLLP to {destination}: no acknowledgement ({e})", down=True)
                return
            if code in ("AA", "CA"):
                sender.store.sent(row["id"])
            elif code in ("AR", "CR"):
                sender.record_failure(row, f"MLLP: {destination} rejected the message ({code}: {text})", dead=True)
            else:  # AE: the RIS could not take it now — retried with backoff until it does, never a dead letter
                sender.record_failure(row, f"MLLP: {destination} answered {code or 'no valid ACK'}"
                                           + (f" ({text})" if text else ""), down=True)
