"""The store's database: embedded SQLite in the store's folder (the default, one node), or PostgreSQL shared by
several node processes (chestaid.store.postgres). Which one a folder uses is decided once, when it is made: a
PostgreSQL store's folder holds `database.url` (never a password), so the page, `monitor` and `worklist` open the
same database from the folder alone.

Both engines give the store the same two things: `transaction()` (a connection whose `execute` takes `?`
arguments, writes serialised) and `query()`; `lock_rows` is what a claim adds to its SELECT (PostgreSQL's
`FOR UPDATE SKIP LOCKED`: two nodes never claim one row)."""

from __future__ import annotations

import sqlite3
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from chestaid.core.errors import ChestaidError
from chestaid.core.fileio import atomic_write
from chestaid.store.postgres import DatabaseError, PostgresEngine, without_password
from chestaid.store.schema import ADDED, SCHEMA_VERSION, TABLES

DB_NAME = "chestaid-node.sqlite"
URL_FILE = "database.url"
ID_FILE = "store.id"  # a PostgreSQL store's id, also held by its database (the folder and the database agree)
DATABASE_ERRORS: tuple[type[BaseException], ...] = (sqlite3.Error, DatabaseError)


class SqliteEngine:
    """The store's embedded database (WAL, synchronous=FULL): one writer at a time, readers beside it."""

    name = "SQLite"
    shared = False  # one node's store (the page and the CLI read beside it)
    lock_rows = ""  # BEGIN IMMEDIATE already makes claims one at a time
    now_sql = "((julianday('now') - 2440587.5) * 86400.0)"  # seconds since 1970, the database's clock

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.RLock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        found = self._db.execute("PRAGMA user_version").fetchone()[0]
        if found > SCHEMA_VERSION:
            self._db.close()
            raise ChestaidError(f"{path.parent}: made by a newer chestaid (store schema {found}; this one reads up "
                                f"to {SCHEMA_VERSION}): upgrade chestaid to open it")
        self._db.executescript(TABLES)
        for table, added in ADDED.items():
            have = {r["name"] for r in self._db.execute(f"PRAGMA table_info({table})")}
            for column, kind in added.items():  # stores made before these columns existed: migrated
                if column not in have:
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
        if found < SCHEMA_VERSION:
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def where(self) -> str:
        return f"SQLite {self.path.name}"

    @contextmanager
    def transaction(self, side: bool = False) -> Iterator[sqlite3.Connection]:
        """A write transaction (`side`: the same connection; a beat has no other node to wait for here)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def query(self, sql: str, args: tuple = ()) -> list:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def probe(self, timeout: float) -> None:
        """Raise unless a fresh connection reads the store and takes its write lock within `timeout` s."""
        db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=rw", uri=True, timeout=timeout,
                             isolation_level=None)
        try:
            db.execute("BEGIN IMMEDIATE")
            db.execute("SELECT 1 FROM instances LIMIT 1").fetchall()
            db.execute("ROLLBACK")
        finally:
            db.close()

    def close(self) -> None:
        with self._lock:
            self._db.close()


def open_engine(root: Path, database: str | None, create: bool):
    """The engine of the store in `root`: `database` (a postgresql:// URL) makes or joins a shared store; without
    it, the folder's own choice (its recorded URL, or its SQLite file; a new folder gets SQLite)."""
    sqlite_path, url_file = root / DB_NAME, root / URL_FILE
    recorded = url_file.read_text().strip() if url_file.is_file() else None
    if database is None and recorded is None:
        if not create and not sqlite_path.is_file():
            raise ChestaidError(f"{root}: not a chestaid node store (no {DB_NAME} or {URL_FILE})")
        root.mkdir(parents=True, exist_ok=True)
        return SqliteEngine(sqlite_path)
    if database is not None:
        if not database.startswith(("postgresql://", "postgres://")):
            raise ChestaidError(f"--database {without_password(database)!r}: a postgresql://user@host/db URL")
        if sqlite_path.is_file():
            raise ChestaidError(f"{root}: this store's database is SQLite ({DB_NAME}); a store keeps one database: "
                                "give the PostgreSQL nodes a new folder")
        if recorded is not None and recorded != without_password(database):
            raise ChestaidError(f"{root}: this store's database is {recorded}, not {without_password(database)}")
        if recorded is None and not create:
            raise ChestaidError(f"{root}: not a chestaid node store (no {URL_FILE})")
    engine = PostgresEngine(database or recorded)
    try:
        _same_store(root, engine, joining=recorded is None)
    except BaseException:
        engine.close()
        raise
    return engine


def _same_store(root: Path, engine: PostgresEngine, joining: bool) -> None:
    """The folder and the database are one store's (their ids agree): a node whose shared storage is not mounted
    never joins the database with an empty folder (it would take the others' work and find none of their files)."""
    held, id_file = engine.store_id(), root / ID_FILE
    if joining:
        if held is not None:
            raise ChestaidError(f"{root}: {engine.where()} already holds a store whose folder is elsewhere: give "
                                "--store the folder the other nodes use (is the shared storage mounted here?)")
        made = uuid.uuid4().hex
        root.mkdir(parents=True, exist_ok=True)
        atomic_write(id_file, lambda f: f.write(made.encode() + b"\n"), mode=0o600)
        atomic_write(root / URL_FILE, lambda f: f.write(without_password(engine.url).encode() + b"\n"), mode=0o600)
        held = engine.store_id(adopt=made)
    folder_id = id_file.read_text().strip() if id_file.is_file() else None
    if held is None and folder_id is not None:
        held = engine.store_id(adopt=folder_id)  # made, then stopped before the database recorded its id
    if folder_id is None or held != folder_id:
        raise ChestaidError(f"{root}: not the folder of the store in {engine.where()} (their ids differ: is the "
                            "shared storage mounted here?)")
