"""DICOM over TLS (PS3.15's secure transport; BCP 195: TLS 1.2 or later) for the node's receiver and sender.

The receiver wraps every association in TLS when given a certificate and key; with `require_client_cert` a peer
must present a certificate signed by the CA file (mutual authentication), and a plain TCP association is
refused. A destination written `AET@HOST:PORT+tls` is reached over TLS, its certificate checked against the
CA file (and the system's). A failed handshake is one line in the log naming the peer and OpenSSL's reason.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from pathlib import Path

from chestaid.core.errors import ChestaidError

log = logging.getLogger("chestaid.node")
HANDSHAKE_TIMEOUT = 10.0  # seconds a peer may take to complete the handshake (it holds the accept loop)


@dataclass(frozen=True)
class TlsSettings:
    cert: Path | None = None
    key: Path | None = None
    ca: Path | None = None
    require_client_cert: bool = False

    @property
    def serving(self) -> bool:
        return self.cert is not None

    def check(self) -> "TlsSettings":
        if (self.cert is None) != (self.key is None):
            raise ChestaidError("--tls-cert and --tls-key go together")
        if self.require_client_cert and (self.ca is None or self.cert is None):
            raise ChestaidError("--tls-require-client-cert needs --tls-cert, --tls-key and --tls-ca (the CA that "
                                "signs the peers' certificates)")
        for name, path in (("--tls-cert", self.cert), ("--tls-key", self.key), ("--tls-ca", self.ca)):
            if path is not None and not Path(path).is_file():
                raise ChestaidError(f"{name} {path}: no such file")
        return self


def _load(context: ssl.SSLContext, settings: TlsSettings) -> ssl.SSLContext:
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        if settings.cert is not None:
            context.load_cert_chain(str(settings.cert), str(settings.key))
        if settings.ca is not None:
            context.load_verify_locations(str(settings.ca))
    except (ssl.SSLError, OSError) as e:
        raise ChestaidError(f"TLS: cannot load {settings.cert or settings.ca} ({e})") from e
    return context


def server_context(settings: TlsSettings) -> ssl.SSLContext:
    context = _load(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), settings)
    context.verify_mode = (ssl.CERT_REQUIRED if settings.require_client_cert else
                           ssl.CERT_OPTIONAL if settings.ca is not None else ssl.CERT_NONE)
    return context


def client_context(settings: TlsSettings) -> ssl.SSLContext:
    context = _load(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), settings)
    if settings.ca is None:
        context.load_default_certs()
    return context


def server_handshake(context: ssl.SSLContext, client, address):
    """`client` (an accepted socket) wrapped in TLS, the handshake bounded by HANDSHAKE_TIMEOUT; None, with one
    log line naming the peer and OpenSSL's reason, when it fails (the socket is closed)."""
    client.settimeout(HANDSHAKE_TIMEOUT)
    try:
        return context.wrap_socket(client, server_side=True)
    except OSError as e:  # ssl.SSLError included
        log.warning("TLS handshake with %s:%s failed: %s", address[0], address[1],
                    getattr(e, "reason", None) or type(e).__name__)
        client.close()
        return None


def log_handshake_failures(server) -> None:
    """Make the pynetdicom server's TLS handshake bounded in time and a failed one a log line (pynetdicom drops
    it silently; socketserver would otherwise print nothing or a traceback)."""
    def get_request():
        client, address = server.socket.accept()
        wrapped = server_handshake(server.ssl_context, client, address)
        if wrapped is None:
            raise OSError("TLS handshake failed")  # socketserver skips the request
        wrapped.settimeout(None)
        return wrapped, address

    server.get_request = get_request
