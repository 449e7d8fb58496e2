"""Start `chestaid serve` in a subprocess for a test and wait until the page answers; a users file and a
self-signed certificate for the tests that need logins and TLS."""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

PASSWORD = "correct horse battery"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_command(run: Path, port: int, *args: str) -> list[str]:
    return [sys.executable, "-m", "chestaid.apps.cli", "serve", str(run), "--port", str(port), *args]


@contextmanager
def serving(command: list[str], port: int, timeout: float = 120, https: bool = False) -> Iterator[str]:
    """Run `command` (a serve command bound to `port`) and yield the page's URL once it answers."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    url = f"{'https' if https else 'http'}://127.0.0.1:{port}/"
    context = ssl._create_unverified_context() if https else None
    deadline = time.time() + timeout
    try:
        while True:
            try:
                urllib.request.urlopen(url, timeout=2, context=context)
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail(proc.stdout.read())
                if time.time() > deadline:
                    pytest.fail(f"{' '.join(command)}: no page after {timeout} s")
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def users_file(folder: Path, name: str = "alice") -> tuple[Path, str]:
    """A users file with one user (password PASSWORD); (its path, the user's API token)."""
    from chestaid.apps.page.auth import add_user

    path = folder / "users.json"
    return path, add_user(path, name, PASSWORD)


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate and key for 127.0.0.1 (openssl), valid for a day."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key
