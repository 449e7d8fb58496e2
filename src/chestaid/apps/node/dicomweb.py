"""DICOMweb for the node: STOW-RS in (`chestaid node … --dicomweb-port P`) and out (a `--send-to https://…/dicom-web`
destination), both with the node's guarantees.

In: `POST /dicom-web/studies` (or `/dicom-web/studies/{StudyInstanceUID}`), `multipart/related;
type="application/dicom"`, one Part-10 instance per part. Each instance is made durable and recorded before the
response (the same `accept` as C-STORE: duplicates acknowledged once, a reused UID with other content kept as a
conflict); the response is PS3.18's: 200 when all were stored, 202 when some failed, 409 when none was, with the
ReferencedSOPSequence and FailedSOPSequence (a FailureReason per failed instance) in DICOM JSON. Off loopback it
needs TLS (the node's --tls-cert/--tls-key) and a bearer token of the page's users file (`chestaid users add`).
A request addressed to one study (`/studies/{StudyInstanceUID}`) is taken to carry that study whole: the study is
complete as soon as its images are read, without waiting for its quiet period (an image after it amends the result).

Out: results are POSTed to `{url}/studies` in the same form, from the durable outbox (retries, backoff, dead
letter); the destination's answer decides per instance.
"""

from __future__ import annotations

import http.client
import json
import logging
import threading
import urllib.error
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pydicom

from chestaid.apps.node.receiver import accept, described
from chestaid.apps.node.tls import server_handshake
from chestaid.apps.node.upload import SpooledParts, boundary_of, iter_chunked, iter_length
from chestaid.core.errors import ChestaidError, describe
from chestaid.store import DATABASE_ERRORS, Instance, Store

log = logging.getLogger("chestaid.node")
PROCESSING_FAILURE, OUT_OF_RESOURCES, NOT_THIS_STUDY = 0x0110, 0xA700, 0xA900
MAX_BODY = 1 << 30  # 1 GiB per request
REQUEST_TIMEOUT = 120.0  # seconds a request may take once the TLS handshake (tls.HANDSHAKE_TIMEOUT) is done
LOOPBACK = ("127.0.0.1", "::1", "localhost")


def _item(sop_class: str, sop_uid: str, reason: int | None = None) -> dict:
    item = {"00081150": {"vr": "UI", "Value": [sop_class]}, "00081155": {"vr": "UI", "Value": [sop_uid]}}
    if reason is not None:
        item["00081197"] = {"vr": "US", "Value": [reason]}
    return item


class _Server(ThreadingHTTPServer):
    """HTTP(S) whose TLS handshake runs in the connection's own thread, bounded in time: a silent peer holds
    its thread, never the accept loop."""

    ssl_context = None

    def finish_request(self, request, client_address) -> None:
        if self.ssl_context is not None:
            request = server_handshake(self.ssl_context, request, client_address)
            if request is None:
                return
        request.settimeout(REQUEST_TIMEOUT)
        super().finish_request(request, client_address)


class StowServer:
    """The STOW-RS endpoint: `start()` serves in a thread, `stop()` ends it."""

    def __init__(self, store: Store, host: str, port: int, on_stored=None, users: Path | None = None,
                 ssl_context=None) -> None:
        if host not in LOOPBACK and (ssl_context is None or users is None):
            raise ChestaidError(f"--dicomweb-port on {host} needs TLS (--tls-cert, --tls-key) and --dicomweb-users "
                                "(bearer tokens of `chestaid users add`); on 127.0.0.1 neither is required")
        from chestaid.apps.page.auth import Users

        self.store, self.on_stored = store, on_stored
        self.users = Users(users) if users is not None else None
        self.server = _Server((host, port), self._handler())
        self.server.daemon_threads = True
        self.server.ssl_context = ssl_context
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name="chestaid-stow", daemon=True)

    def start(self) -> "StowServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():  # shutdown() waits for a serve_forever that never started
            self.server.shutdown()
        self.server.server_close()

    def store_parts(self, parts: list[tuple[str, Path]], study: str | None, peer: str) -> tuple[list, list]:
        """Each part (its content type, the file it was spooled to) made durable (or refused): (referenced items,
        failed items)."""
        referenced, failed = [], []
        for kind, path in parts:
            try:
                ds = pydicom.dcmread(path)
                sop_uid, sop_class = str(ds.SOPInstanceUID), str(ds.SOPClassUID)
            except Exception as e:  # noqa: BLE001 - one unreadable part is one failure, the rest go on
                log.info("STOW-RS from %s: a part (%s) is not a DICOM instance (%s)", peer, kind, describe(e))
                failed.append(_item("", "", PROCESSING_FAILURE))
                continue
            if kind != "application/dicom" or (study and str(ds.get("StudyInstanceUID", "")) != study):
                failed.append(_item(sop_class, sop_uid, NOT_THIS_STUDY if kind == "application/dicom"
                                    else PROCESSING_FAILURE))
                continue
            instance = described(ds, Instance(sop_uid=sop_uid, sop_class=sop_class, calling_ae=f"DICOMweb {peer}"[:64],
                                              transfer_syntax=str(ds.file_meta.get("TransferSyntaxUID", ""))))
            del ds  # one instance's pixels in memory at a time
            try:
                outcome = accept(self.store, instance, path.read_bytes, f"DICOMweb {peer}")
            except Exception as e:  # noqa: BLE001 - not durable: never reported as stored
                log.error("instance %s from DICOMweb %s not stored: %s", sop_uid, peer, describe(e))
                failed.append(_item(sop_class, sop_uid, OUT_OF_RESOURCES))
                continue
            referenced.append(_item(sop_class, sop_uid))
            if outcome == "stored" and self.on_stored is not None:
                self.on_stored()
        if study and referenced:  # a request addressed to one study carries that study: complete once it is read
            try:
                self.store.force_study(study)
            except DATABASE_ERRORS as e:  # stored all the same: the quiet period completes it
                log.error("study %s: not completed at once (%s); its quiet period will", study, describe(e))
        return referenced, failed

    def _handler(self):
        node = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # requests are logged by the node, without query strings
                pass

            def _answer(self, status: int, body: dict | None = None) -> None:
                data = json.dumps(body or {}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/dicom+json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _refuse(self, status: int, reason: str) -> None:
                """An error answer with its reason: PS3.18's Warning header and a text body, and a log line."""
                log.info("STOW-RS from %s refused (%d): %s", self.client_address[0], status, reason)
                data = (reason + "\n").encode()
                self.send_response(status)
                self.send_header("Warning", f'299 chestaid "{reason}"')
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                peer = self.client_address[0]
                route = self.path.split("?")[0].rstrip("/").split("/")
                if route[:3] != ["", "dicom-web", "studies"] or len(route) > 4:
                    return self._refuse(404, "STOW-RS is POST /dicom-web/studies[/{StudyInstanceUID}]")
                if node.users is not None:
                    token = self.headers.get("Authorization", "").removeprefix("Bearer ").strip()
                    if not token or node.users.user_for_token(token) is None:
                        return self._refuse(401, "a valid bearer token is required")
                kind = self.headers.get("Content-Type", "")
                if not kind.startswith("multipart/related") or "application/dicom" not in kind:
                    return self._refuse(415, f"Content-Type must be multipart/related; type=\"application/dicom\", "
                                             f"got {kind[:80]!r}")
                chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
                try:
                    length = int(self.headers.get("Content-Length") or 0)
                    boundary = boundary_of(kind)
                except ValueError as e:
                    return self._refuse(400, f"bad request headers ({describe(e)})")
                if not chunked and not 0 < length <= MAX_BODY:
                    return self._refuse(413 if length else 411, f"the body must be 1 to {MAX_BODY} bytes with a "
                                        "Content-Length, or chunked")
                with SpooledParts(node.store.root / "incoming", boundary) as spool:
                    try:
                        body = iter_chunked(self.rfile, MAX_BODY) if chunked else iter_length(self.rfile, length)
                        for block in body:
                            spool.feed(block)
                        parts = spool.parts()
                    except OSError as e:  # the node's disk, not the sender's body: a transient failure
                        self.close_connection = True
                        log.error("STOW-RS from %s: upload not spooled: %s", peer, describe(e))
                        return self._refuse(503, f"the node cannot store the upload now ({describe(e)}); retry later")
                    except Exception as e:  # noqa: BLE001 - a malformed body is the sender's error, one line
                        self.close_connection = True
                        return self._refuse(400, f"malformed multipart body ({describe(e)})")
                    referenced, failed = node.store_parts(parts, route[3] if len(route) == 4 else None, peer)
                log.info("STOW-RS from %s: %d stored or acknowledged, %d failed", peer, len(referenced), len(failed))
                body = {"00081199": {"vr": "SQ", "Value": referenced}} if referenced else {}
                if failed:
                    body["00081198"] = {"vr": "SQ", "Value": failed}
                self._answer(200 if not failed else 202 if referenced else 409, body)

        return Handler


def stow(url: str, files: list[Path], timeout: float, token: str | None = None,
         context=None) -> tuple[set[str], dict[str, str]]:
    """POST `files` (Part-10) to `{url}/studies` in one request: (SOPInstanceUIDs the server took, {uid: why}
    for those it did not). Raises OSError when the server cannot be reached or answers no STOW-RS response."""
    boundary = uuid.uuid4().hex
    body = b"".join(b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n" + Path(f).read_bytes()
                    + b"\r\n" for f in files) + b"--" + boundary.encode() + b"--\r\n"
    headers = {"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
               "Accept": "application/dicom+json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url.rstrip("/") + "/studies", data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            status, answer = response.status, response.read()
    except urllib.error.HTTPError as e:
        status, answer = e.code, e.read()
        if status not in (202, 409):
            raise OSError(f"HTTP {status} from {url}") from e
    except http.client.HTTPException as e:  # a broken answer: not delivered, as far as we can tell
        raise OSError(f"no valid HTTP answer from {url} ({type(e).__name__})") from e
    try:
        found = json.loads(answer or b"{}")
        took = {item["00081155"]["Value"][0] for item in found.get("00081199", {}).get("Value", [])}
        refused = {item["00081155"]["Value"][0]:
                   f"FailureReason 0x{item.get('00081197', {}).get('Value', [0])[0]:04X}"
                   for item in found.get("00081198", {}).get("Value", []) if item.get("00081155")}
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as e:
        raise ValueError(f"{url} answered no STOW-RS response ({type(e).__name__})") from e
    if status == 200 and not took:
        took = {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in files}  # no body: all taken
    return took, refused
