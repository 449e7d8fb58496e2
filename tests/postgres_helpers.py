"""A real PostgreSQL (Debian's) for the tests: its own cluster in a temporary folder, on a free port, trust
authentication on 127.0.0.1 only; run as the `postgres` user when the tests run as root (PostgreSQL refuses root)."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from node_helpers import free_port, wait_port


def postgres_bin() -> Path | None:
    """Debian's newest PostgreSQL server programs, None when none is installed."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


class PostgresServer:
    """`PostgresServer()` makes and starts a cluster with one database; `url`; `stop()`/`start()` take it away and
    bring it back (same data); `remove()` ends it and deletes its folder."""

    def __init__(self, database: str = "chestaid") -> None:
        self.bin = postgres_bin()
        if self.bin is None:
            raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
        self.folder = Path(tempfile.mkdtemp(prefix="chestaid-pg-"))  # not under pytest's root-only folder
        self.data, self.port, self.database = self.folder / "data", free_port(), database
        self.as_postgres = os.geteuid() == 0
        if self.as_postgres:
            shutil.chown(self.folder, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "chestaid", "--auth=trust", "-E", "UTF8", "--no-sync")
        self.start()
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "chestaid", database)

    @property
    def url(self) -> str:
        return f"postgresql://chestaid@127.0.0.1:{self.port}/{self.database}"

    def new_database(self, name: str) -> str:
        """A new, empty database on the server; its URL."""
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "chestaid", name)
        return f"postgresql://chestaid@127.0.0.1:{self.port}/{name}"

    def _run(self, program: str, *args: str) -> subprocess.CompletedProcess:
        command = [str(self.bin / program), *args]
        if self.as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, check=True, capture_output=True, text=True, timeout=120)

    def start(self) -> None:
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.folder} "
                   "-c max_connections=200 -c shared_buffers=32MB")
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.folder / "server.log"), "-w",
                  "start")
        wait_port(self.port, 60)

    def stop(self, mode: str = "fast") -> None:
        """`fast`: a clean shutdown that ends every connection; `immediate`: as if the machine lost power."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def remove(self) -> None:
        try:
            self.stop("immediate")
        except subprocess.CalledProcessError:
            pass  # already stopped
        shutil.rmtree(self.folder, ignore_errors=True)
