"""Logins: a users file of argon2 password hashes and API tokens, and a trusted single-sign-on header.

The users file (JSON, mode 0600; `chestaid users add NAME --users FILE` writes it):
    {"users": {"NAME": {"password": "$argon2id$…", "token_sha256": "…"}}}
The API token is shown once when the user is added; only its SHA-256 is kept. A client sends it as
`Authorization: Bearer TOKEN`. A header such as `X-Remote-User`, set by the hospital's SSO proxy, is trusted only
from the configured proxy addresses; from any other address it is ignored."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from chestaid.core.errors import ChestaidError

log = logging.getLogger(__name__)
NAME = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")
MIN_PASSWORD = 10
MAX_FAILURES, LOCKOUT_S = 5, 60.0
_hasher = PasswordHasher()
_DUMMY = _hasher.hash("not a password of anyone")


def _sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {"users": {}}
    except (OSError, ValueError) as e:
        raise ChestaidError(f"{path}: not a readable users file ({e})") from e
    if not isinstance(data, dict) or not isinstance(data.get("users"), dict):
        raise ChestaidError(f"{path}: not a chestaid users file (no \"users\" object)")
    return data


def add_user(path: str | Path, name: str, password: str) -> str:
    """Add or replace `name` with an argon2 hash of `password`; returns the new API token (shown once)."""
    path = Path(path)
    if not NAME.match(name):
        raise ChestaidError(f"user name {name!r}: use 1-64 letters, digits, '.', '_', '@' or '-'")
    if len(password) < MIN_PASSWORD:
        raise ChestaidError(f"password too short: at least {MIN_PASSWORD} characters")
    data = _read(path)
    token = secrets.token_urlsafe(32)
    data["users"][name] = {"password": _hasher.hash(password), "token_sha256": _sha(token)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)
    os.chmod(path, 0o600)
    return token


class Users:
    """The users file, read once at start; password checks with a short lockout after repeated failures."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ChestaidError(f"{self.path}: no users file (chestaid users add NAME --users {self.path})")
        self.users = _read(self.path)["users"]
        if not self.users:
            raise ChestaidError(f"{self.path}: the users file has no users")
        self._failures: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def verify(self, name: str, password: str) -> bool:
        """Gradio's login check: True for a known user with the right password (not while locked out)."""
        now = time.time()
        with self._lock:
            recent = [t for t in self._failures.get(name, []) if now - t < LOCKOUT_S]
            self._failures[name] = recent
        if len(recent) >= MAX_FAILURES:
            log.warning("login refused: %d failed attempts in %.0f s for this user name", len(recent), LOCKOUT_S)
            return False
        entry = self.users.get(name)
        try:
            ok = _hasher.verify(entry["password"] if entry else _DUMMY, password) and entry is not None
        except (VerificationError, InvalidHashError):
            ok = False
        if not ok:
            with self._lock:
                self._failures.setdefault(name, []).append(now)
            log.warning("login refused (wrong user name or password)")
        return ok

    def user_for_token(self, token: str) -> str | None:
        digest = _sha(token)
        found = None
        for name, entry in self.users.items():  # compare against every entry: the time does not tell which
            if hmac.compare_digest(digest, str(entry.get("token_sha256", ""))):
                found = name
        return found


@dataclass
class Logins:
    """How the page knows who is asking: the users file, the SSO header and the proxies it may come from."""

    users: Users | None = None
    header: str | None = None
    proxies: frozenset[str] = field(default_factory=frozenset)

    @property
    def required(self) -> bool:
        return self.users is not None or self.header is not None

    def from_proxy(self, client: str | None, headers: dict[str, str]) -> str | None:
        """The SSO user, only when the request comes from a configured proxy address."""
        if not self.header or client not in self.proxies:
            return None
        value = headers.get(self.header.lower(), "").strip()
        return value if NAME.match(value) else None

    def password_check(self, name: str, password: str) -> bool:
        return self.users is not None and self.users.verify(name.strip(), password)
