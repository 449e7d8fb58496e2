"""`chestaid serve`: the page behind its guard, on uvicorn, with logins and TLS required off loopback.

Gradio's settings are given to Blocks/mount_gradio_app, never through the environment, except one: Gradio
reads its upload folder only from GRADIO_TEMP_DIR, so the serving process sets it to the page's private
folder before the app is built (the `chestaid serve` process serves nothing else)."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from chestaid.apps.page.auth import Logins, Users
from chestaid.apps.page.uploads import UploadFolder
from chestaid.core.errors import ChestaidError

log = logging.getLogger(__name__)
QUEUE_MAX = 64


@dataclass
class ServeOptions:
    """Everything `chestaid serve` takes besides the run."""

    host: str = "127.0.0.1"
    port: int = 7860
    device: str = "cpu"
    backend: str = "auto"
    max_upload_mb: int = 64
    users: Path | None = None
    trusted_header: str | None = None
    trusted_proxies: tuple[str, ...] = ()
    certfile: Path | None = None
    keyfile: Path | None = None
    store: Path | None = None
    upload_dir: Path | None = None
    concurrency: int = 2


def loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def logins_of(o: ServeOptions) -> Logins:
    """The logins asked for, or the one-line reason they cannot be used; off loopback they are required."""
    if (o.trusted_header is None) != (not o.trusted_proxies):
        raise ChestaidError("--trusted-header and --trusted-proxy go together: the header is trusted only from "
                            "the proxy's address")
    for address in o.trusted_proxies:
        try:
            ipaddress.ip_address(address)
        except ValueError as exc:
            raise ChestaidError(f"--trusted-proxy {address!r}: give the proxy's IP address") from exc
    logins = Logins(Users(o.users) if o.users else None, o.trusted_header, frozenset(o.trusted_proxies))
    if (o.certfile is None) != (o.keyfile is None):
        raise ChestaidError("--certfile and --keyfile go together")
    for f in (o.certfile, o.keyfile):
        if f is not None and not Path(f).is_file():
            raise ChestaidError(f"{f}: no such file")
    if not loopback(o.host):
        missing = [what for what, ok in (("logins (--users FILE or --trusted-header/--trusted-proxy)",
                                           logins.required), ("TLS (--certfile and --keyfile)", o.certfile))
                   if not ok]
        if missing:
            raise ChestaidError(f"refusing to serve on {o.host}: off loopback the page needs "
                                f"{' and '.join(missing)}; patient images must not cross a network unencrypted "
                                "or reach anyone who has not logged in")
    return logins


def make_app(run: str | Path, o: ServeOptions, uploads: UploadFolder):
    """The FastAPI app: the guard in front of the mounted Gradio page."""
    import gradio as gr
    from fastapi import FastAPI
    from fastapi.middleware.cors import CORSMiddleware
    from gradio.routes import App as GradioApp

    from chestaid.apps.page.app import THEME, build_app
    from chestaid.apps.page.security import Guard

    logins = logins_of(o)
    demo = build_app(run, o.device, o.backend, uploads=uploads, store=o.store)
    demo.queue(max_size=QUEUE_MAX, default_concurrency_limit=o.concurrency)
    @contextlib.asynccontextmanager
    async def lifespan(_app):
        yield
        uploads.close()  # at shutdown (uvicorn then re-raises SIGTERM, so a `finally` would not run)

    api = FastAPI(openapi_url=None, docs_url=None, redoc_url=None, lifespan=lifespan)
    api.add_middleware(CORSMiddleware, allow_origins=[])  # present, so Gradio adds no CORS of its own
    gr.mount_gradio_app(api, demo, path="", auth=logins.password_check if logins.required else None,
                        auth_message="chestaid: log in with your hospital account", show_error=False,
                        max_file_size=f"{o.max_upload_mb}mb", enable_monitoring=False, run_history=False,
                        ssr_mode=False, pwa=False, mcp_server=False, theme=THEME, allowed_paths=[])
    guard = Guard(api, logins, uploads, tls=o.certfile is not None)
    guard.gradio = next(r.app for r in api.routes if isinstance(getattr(r, "app", None), GradioApp))
    return guard, demo


def listening_socket(host: str, port: int):
    """A socket bound to host:port and listening (a busy or forbidden port is a one-line error, before the model
    loads); connections wait in its backlog until the page answers."""
    import socket

    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        return socket.create_server((host, port), family=family, backlog=128)
    except OSError as e:
        raise ChestaidError(f"cannot listen on {host}:{port} for the page (--port): {e.strerror or e}") from e


def serve(run: str | Path, options: ServeOptions | None = None, announce=None) -> None:
    """Start the page (bound to 127.0.0.1 unless told otherwise) until stopped; the upload folder is removed
    at the end whatever happens. `announce(url)` is called once the page listens and its model is loaded."""
    import uvicorn

    o = options or ServeOptions()
    logins_of(o)  # refuse before anything is loaded or written
    sock = listening_socket(o.host, o.port)
    uploads = UploadFolder(o.upload_dir).start()
    os.environ["GRADIO_TEMP_DIR"] = str(uploads.path)
    try:
        app, _ = make_app(run, o, uploads)
        port = sock.getsockname()[1]
        url = f"{'https' if o.certfile else 'http'}://{o.host}:{port}"
        log.info("serving %s on %s (logins %s)", Path(run).name, url,
                 "required" if logins_of(o).required else "off: loopback only")
        if announce is not None:
            announce(url)
        config = uvicorn.Config(app, log_level="warning", access_log=False,
                                ssl_certfile=str(o.certfile) if o.certfile else None,
                                ssl_keyfile=str(o.keyfile) if o.keyfile else None, server_header=False,
                                timeout_graceful_shutdown=5)
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
        uploads.close()
