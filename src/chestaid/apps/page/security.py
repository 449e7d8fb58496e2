"""One ASGI middleware in front of the Gradio app: who is asking, what may be asked, and the headers of every
answer.

- Logins: a request with no valid login gets 401 (only the login screen and its assets answer without one). A
  valid API token (`Authorization: Bearer`) or the SSO header from a configured proxy logs the request in as
  that user (a Gradio session is made for it); a wrong token is 401.
- Same origin only: a request whose Origin is not the page's own gets 403 (no CORS headers are ever sent).
- No patient file leaves: any `/gradio_api/file=` URL under the upload folder is 403 for everyone (the page
  never needs an upload back; heat maps are sent inline). Monitoring, run history and MCP answer 404.
- Uploads: only PNG, JPEG and DICOM; a file name with another suffix is refused (415) before Gradio stores
  anything, and a stored file whose bytes are none of these is deleted and refused.
- Headers: CSP (nothing from another origin, no framing), X-Frame-Options, Referrer-Policy, nosniff,
  no-store on the API."""

from __future__ import annotations

import json
import logging
import re
import secrets
from pathlib import Path
from urllib.parse import urlsplit

from chestaid.apps.page.auth import Logins
from chestaid.apps.page.uploads import UploadFolder

log = logging.getLogger(__name__)
SUFFIXES = {"", ".png", ".jpg", ".jpeg", ".dcm", ".dicom"}
CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline' 'unsafe-eval'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data: blob:; font-src 'self' data:; media-src 'self' blob:; connect-src 'self'; "
       "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'")
HEADERS = [(b"content-security-policy", CSP.encode()), (b"x-frame-options", b"DENY"),
           (b"referrer-policy", b"no-referrer"), (b"x-content-type-options", b"nosniff"),
           (b"cross-origin-opener-policy", b"same-origin"), (b"permissions-policy", b"camera=(), microphone=()")]
PUBLIC = {"/", "/config", "/config/", "/login", "/login/", "/theme.css", "/favicon.ico", "/manifest.json",
          "/robots.txt", "/gradio_api/login_check", "/gradio_api/login_check/"}
PUBLIC_PREFIXES = ("/assets/", "/static/", "/svelte/", "/gradio_api/static/")
HIDDEN = ("/monitoring", "/gradio_api/monitoring", "/gradio_api/runs", "/gradio_api/mcp", "/gradio_api/vibe")
_FILENAME = re.compile(rb'filename="([^"\r\n]*)"', re.IGNORECASE)


def looks_like_image(path: Path) -> bool:
    """PNG, JPEG or DICOM by their first bytes (DICOM also without the 128-byte preamble)."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    if head.startswith((b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")) or head[128:132] == b"DICM":
        return True
    return path.suffix.lower() in (".dcm", ".dicom", "") and head[:2] in (b"\x02\x00", b"\x08\x00")


async def _send_plain(send, status: int, text: str, extra: list | None = None) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"), *HEADERS, *(extra or [])]})
    await send({"type": "http.response.body", "body": text.encode()})


class Guard:
    """The middleware. `gradio` (the mounted Gradio App, for its session tokens) is set once mounted."""

    def __init__(self, app, logins: Logins, uploads: UploadFolder, tls: bool = False) -> None:
        self.app, self.logins, self.uploads, self.tls = app, logins, uploads, tls
        self.gradio = None
        self._sessions: dict[str, str] = {}  # user -> the Gradio session token made for a token/SSO login

    def _cookie_name(self) -> str:
        return f"access-token-{self.gradio.cookie_id}"

    def _cookie_user(self, headers: dict[str, str]) -> str | None:
        if self.gradio is None:
            return None
        from http.cookies import SimpleCookie

        jar = SimpleCookie()
        try:
            jar.load(headers.get("cookie", ""))
        except Exception:  # noqa: BLE001 - a malformed cookie is no login
            return None
        for name in (self._cookie_name(), f"access-token-unsecure-{self.gradio.cookie_id}"):
            if name in jar and jar[name].value in self.gradio.tokens:
                return self.gradio.tokens[jar[name].value]
        return None

    def _session_for(self, user: str) -> str:
        token = self._sessions.get(user)
        if token is None or self.gradio.tokens.get(token) != user:
            token = secrets.token_urlsafe(24)
            self.gradio.tokens[token] = user
            self._sessions[user] = token
        return token

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path: str = scope.get("path", "")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if any(path == h or path.startswith(h + "/") for h in HIDDEN):
            return await _send_plain(send, 404, "Not found")
        origin = headers.get("origin")
        if origin and origin != "null" and urlsplit(origin).netloc != headers.get("host", ""):
            log.warning("refused a cross-origin request to %s", path)
            return await _send_plain(send, 403, "Cross-origin requests are not allowed")
        if origin == "null":
            return await _send_plain(send, 403, "Cross-origin requests are not allowed")
        if self.logins.required:
            refusal = self._login(scope, headers, path)
            if refusal:
                return await _send_plain(send, 401, refusal, [(b"www-authenticate", b"Bearer")])
        if "/file=" in path and self.uploads.holds(path.split("/file=", 1)[1]):
            return await _send_plain(send, 403, "File not allowed")
        if path.rstrip("/").endswith("/gradio_api/upload") and scope.get("method") == "POST":
            return await self._upload(scope, receive, send)
        await self.app(scope, receive, self._with_headers(send, path))

    def _login(self, scope, headers: dict[str, str], path: str) -> str | None:
        """None when the request may go on (logged in, or asking for the login screen); else why not."""
        user = None
        auth = headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            user = self.logins.users.user_for_token(auth[7:].strip()) if self.logins.users else None
            if user is None:
                log.warning("refused a request with an unknown API token")
                return "Unknown API token"
        if user is None:
            client = (scope.get("client") or (None,))[0]
            user = self.logins.from_proxy(client, headers)
        if user is not None and self.gradio is not None:
            cookie = f"{self._cookie_name()}={self._session_for(user)}".encode()
            scope["headers"] = [(k, v) for k, v in scope["headers"] if k.lower() not in (b"cookie", b"authorization")]
            scope["headers"].append((b"cookie", cookie))
            return None
        if self._cookie_user(headers) is not None or path in PUBLIC or path.startswith(PUBLIC_PREFIXES):
            return None
        return "Login required"

    def _with_headers(self, send, path: str):
        api = path.startswith("/gradio_api/") or "/file=" in path

        async def wrapped(message) -> None:
            if message["type"] == "http.response.start":
                drop = {h for h, _ in HEADERS} | {b"access-control-allow-origin", b"access-control-allow-credentials"}
                message["headers"] = [(k, v) for k, v in message.get("headers", []) if k.lower() not in drop]
                message["headers"] += HEADERS + ([(b"cache-control", b"no-store")] if api else []) + (
                    [(b"strict-transport-security", b"max-age=31536000")] if self.tls else [])
            await send(message)
        return wrapped

    async def _upload(self, scope, receive, send) -> None:
        """Refuse other file types by name before Gradio stores them, and by content after."""
        if not headers_of(scope).get("content-type", "").lower().startswith("multipart/form-data"):
            return await _send_plain(send, 415, "Uploads are multipart form data")
        buffered, head = [], b""
        while len(head) < 4096:
            message = await receive()
            buffered.append(message)
            head += message.get("body", b"")
            if message["type"] != "http.request" or not message.get("more_body"):
                break
        for name in _FILENAME.findall(head):
            if Path(name.decode("utf-8", "replace")).suffix.lower() not in SUFFIXES:
                log.warning("refused an upload that is not PNG, JPEG or DICOM (by its name)")
                return await _send_plain(send, 415, "Only PNG, JPEG and DICOM files are accepted")

        async def replay():
            return buffered.pop(0) if buffered else await receive()

        start, body = {}, b""

        async def capture(message) -> None:
            nonlocal start, body
            if message["type"] == "http.response.start":
                start = message
            else:
                body += message.get("body", b"")

        with self.uploads.uploading():  # the file may be one another request holds: claimed before it can go
            await self.app(scope, replay, capture)
            stored = []
            if start.get("status") == 200:
                try:
                    stored = [Path(p) for p in json.loads(body)]
                except (ValueError, TypeError):
                    stored = []
                self.uploads.claim(stored)
        if any(not looks_like_image(p) for p in stored):
            for p in stored:
                self.uploads.release(p)
            log.warning("refused an upload that is not PNG, JPEG or DICOM (by its content)")
            return await _send_plain(send, 415, "Only PNG, JPEG and DICOM files are accepted")
        out = self._with_headers(send, "/gradio_api/upload")
        await out({**start, "headers": [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
                   + [(b"content-length", str(len(body)).encode())]})
        await out({"type": "http.response.body", "body": body})


def headers_of(scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
