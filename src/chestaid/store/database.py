"""The node's store: received instances on disk (durable writes) and an embedded SQLite database (WAL) that is
both the worklist and the outbox.

STORE/chestaid-node.sqlite   instances (one row per SOPInstanceUID: what arrived, its state and reason, its
                             scores) and outbox (one row per result object and destination: pending → sent, or
                             dead with the last error after N tries)
STORE/instances/ab/<sha>.dcm the received bytes, exactly as sent (named by a hash of the SOPInstanceUID)
STORE/results/ab/<uid>.dcm   the result objects (SR, Secondary Capture heat map), named by their own UID
STORE/incoming/              STOW-RS uploads while they arrive (a file per part, deleted when the request ends)

The page (`chestaid serve RUN --store DIR`) adds reviewed_by/reviewed_at and the audit table (time, user,
action, SOPInstanceUID: never pixels, names or patient IDs).

A file is made durable before its row is committed (temporary file in the same folder, fsync, rename, fsync
the folder), and a row is committed (synchronous=FULL) before the receiver answers success.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from chestaid.core.errors import ChestaidError
from chestaid.core.fileio import atomic_write
from chestaid.core.refusals import Refusal
from chestaid.store.conflicts import ConflictsMixin
from chestaid.store.outbox import OUTBOX_ADDED, OutboxMixin
from chestaid.store.records import Decision, State
from chestaid.store.notifications import NOTIFICATIONS_SCHEMA, NotificationsMixin
from chestaid.store.studies import STUDIES_ADDED, STUDIES_SCHEMA, StudiesMixin
from chestaid.store.reviews import ReviewsMixin

DB_NAME = "chestaid-node.sqlite"
STATES = tuple(s.value for s in State)
OUTBOX_STATES = ("pending", "sent", "dead", "superseded")  # superseded: a newer version replaced it unsent
SCHEMA_VERSION = 3  # 1: before versions were recorded (user_version 0); 2: study_date, view, refusal, down_tries;
#                    3: notifications, the studies' triage level, the likely-normal tier's state
CLAIM_TIMEOUT = 120.0  # seconds a second copy of an instance waits for the first to be stored

SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (
    sop_uid TEXT PRIMARY KEY,
    study_uid TEXT NOT NULL DEFAULT '', series_uid TEXT NOT NULL DEFAULT '', sop_class TEXT NOT NULL DEFAULT '',
    modality TEXT NOT NULL DEFAULT '', patient_id TEXT NOT NULL DEFAULT '', accession TEXT NOT NULL DEFAULT '',
    calling_ae TEXT NOT NULL DEFAULT '', transfer_syntax TEXT NOT NULL DEFAULT '',
    path TEXT NOT NULL,
    received_at REAL NOT NULL,
    state TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    risk REAL,
    top_finding TEXT NOT NULL DEFAULT '',
    flagged TEXT NOT NULL DEFAULT '',
    scores TEXT NOT NULL DEFAULT '',
    scored_at REAL
);
CREATE INDEX IF NOT EXISTS instances_state ON instances(state, received_at);
CREATE INDEX IF NOT EXISTS instances_study ON instances(study_uid);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY, source_uid TEXT NOT NULL, kind TEXT NOT NULL, result_uid TEXT NOT NULL,
    sop_class TEXT NOT NULL, path TEXT NOT NULL, destination TEXT NOT NULL, state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0, next_at REAL NOT NULL DEFAULT 0, last_error TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL, sent_at REAL, UNIQUE(result_uid, destination)
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox(state, next_at);
CREATE TABLE IF NOT EXISTS audit (id INTEGER PRIMARY KEY, at REAL NOT NULL, user TEXT NOT NULL,
                                  action TEXT NOT NULL, sop_uid TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS verdicts (
    id INTEGER PRIMARY KEY, sop_uid TEXT NOT NULL, finding TEXT NOT NULL, verdict TEXT NOT NULL,
    user TEXT NOT NULL, at REAL NOT NULL, source TEXT NOT NULL DEFAULT 'page'
);
CREATE INDEX IF NOT EXISTS verdicts_instance ON verdicts(sop_uid, finding, id);
CREATE TABLE IF NOT EXISTS conflicts (
    id INTEGER PRIMARY KEY, sop_uid TEXT NOT NULL, study_uid TEXT NOT NULL DEFAULT '',
    series_uid TEXT NOT NULL DEFAULT '', calling_ae TEXT NOT NULL DEFAULT '', path TEXT NOT NULL,
    received_at REAL NOT NULL, reason TEXT NOT NULL
);
"""
# Columns added after the first stores were made (added to an older store when it is opened)
ADDED_COLUMNS = {"reviewed_by": "TEXT NOT NULL DEFAULT ''", "reviewed_at": "REAL",
                 "pixel_sha256": "TEXT NOT NULL DEFAULT ''",  # of the PixelData bytes as received
                 "model": "TEXT NOT NULL DEFAULT ''",  # JSON: the identity of the run that scored it ('' = not recorded)
                 "distance": "REAL",  # the input gate's distance (None: no gate, or not decoded)
                 "meta": "TEXT NOT NULL DEFAULT ''",  # JSON: manufacturer, station, modality, view, sex, age band
                 "study_date": "TEXT NOT NULL DEFAULT ''",  # StudyDate as sent (YYYYMMDD), for the worklist
                 "view": "TEXT NOT NULL DEFAULT ''",  # ViewPosition as sent
                 "study_instances": "INTEGER",  # NumberOfStudyRelatedInstances when the header gives it
                 "refusal": "TEXT NOT NULL DEFAULT ''"}  # records.Refusal: what refused it ('' = none, or not recorded)


def durable_write(path: Path, data: bytes) -> None:
    """`data` at `path`, or nothing, readable by this user only (patient data): chestaid.core.fileio's one
    durable writer (temporary file, fsync, rename, fsync the folder)."""
    atomic_write(path, lambda f: f.write(data), mode=0o600)


@dataclass
class Instance:
    """What the receiver records for one C-STORE (identifiers only; the file holds the rest)."""
    sop_uid: str
    study_uid: str = ""
    series_uid: str = ""
    sop_class: str = ""
    modality: str = ""
    patient_id: str = ""
    accession: str = ""
    calling_ae: str = ""
    transfer_syntax: str = ""
    pixel_sha256: str = ""
    study_date: str = ""
    view: str = ""
    study_instances: int | None = None  # what the header says the study holds (NumberOfStudyRelatedInstances)
    state: str = "queued"
    reason: str = ""


class Store(ConflictsMixin, NotificationsMixin, OutboxMixin, ReviewsMixin, StudiesMixin):
    """The node's folder and database. Safe to share between threads; another process (the `worklist`
    command) may read it while the node writes (WAL)."""

    def __init__(self, root: str | Path, create: bool = True) -> None:
        self.root = Path(root)
        self.db_path = self.root / DB_NAME
        if self.root.exists() and not self.root.is_dir():
            raise ChestaidError(f"{self.root}: is a file; the node's store is a folder (give a new or existing one)")
        if not create and not self.db_path.is_file():
            raise ChestaidError(f"{self.root}: not a chestaid node store (no {DB_NAME})")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.db_path, check_same_thread=False, isolation_level=None, timeout=30)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            found = self._db.execute("PRAGMA user_version").fetchone()[0]
            if found > SCHEMA_VERSION:
                self._db.close()
                raise ChestaidError(f"{self.root}: made by a newer chestaid (store schema {found}; this one reads up "
                                    f"to {SCHEMA_VERSION}): upgrade chestaid to open it")
            self._db.executescript(SCHEMA + STUDIES_SCHEMA + NOTIFICATIONS_SCHEMA)
            for table, added in (("instances", ADDED_COLUMNS), ("studies", STUDIES_ADDED), ("outbox", OUTBOX_ADDED)):
                have = {r["name"] for r in self._db.execute(f"PRAGMA table_info({table})")}
                for column, kind in added.items():  # stores made before these columns existed: migrated
                    if column not in have:
                        self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
            if found < SCHEMA_VERSION:
                self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except (OSError, sqlite3.Error) as e:
            raise ChestaidError(f"{self.root}: cannot open the node store ({e})") from e
        self._lock = threading.RLock()
        self._claims: dict[str, list] = {}  # SOPInstanceUID → [lock, holders] (claim)

    @classmethod
    def open(cls, root: str | Path) -> Store:
        """An existing store (an error when `root` is not one)."""
        return cls(root, create=False)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _query(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # -- instances ---------------------------------------------------------------------------------------------

    def instance_path(self, sop_uid: str) -> Path:
        digest = hashlib.sha256(sop_uid.encode()).hexdigest()
        return self.root / "instances" / digest[:2] / f"{digest}.dcm"

    def result_path(self, result_uid: str) -> Path:
        digest = hashlib.sha256(result_uid.encode()).hexdigest()
        return self.root / "results" / digest[:2] / f"{result_uid}.dcm"

    @contextmanager
    def claim(self, sop_uid: str, timeout: float = CLAIM_TIMEOUT) -> Iterator[None]:
        """Hold a SOPInstanceUID while one path (C-STORE, STOW-RS) checks and stores it: a second copy arriving at
        the same moment waits, then is judged against what the first stored (duplicate or conflict). Raises
        TimeoutError after `timeout` s (the caller answers a transient failure; the sender retries)."""
        with self._lock:
            entry = self._claims.setdefault(sop_uid, [threading.Lock(), 0])
            entry[1] += 1
        if not entry[0].acquire(timeout=timeout):
            with self._lock:
                entry[1] -= 1
                if entry[1] == 0:
                    self._claims.pop(sop_uid, None)
            raise TimeoutError(f"another copy of {sop_uid} was still being stored after {timeout:g} s")
        try:
            yield
        finally:
            entry[0].release()
            with self._lock:
                entry[1] -= 1
                if entry[1] == 0:
                    self._claims.pop(sop_uid, None)

    def has(self, sop_uid: str) -> bool:
        return bool(self._query("SELECT 1 FROM instances WHERE sop_uid = ?", (sop_uid,)))

    def receive(self, instance: Instance, data: bytes) -> bool:
        """Make one received instance durable, then record it. False when its SOPInstanceUID was already
        stored (nothing is written). Raises OSError / sqlite3.Error when either step fails."""
        if self.has(instance.sop_uid):
            return False
        path = self.instance_path(instance.sop_uid)
        durable_write(path, data)
        with self._tx() as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO instances (sop_uid, study_uid, series_uid, sop_class, modality, patient_id, "
                "accession, calling_ae, transfer_syntax, pixel_sha256, study_date, view, study_instances, path, "
                "received_at, state, reason) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (instance.sop_uid, instance.study_uid, instance.series_uid, instance.sop_class, instance.modality,
                 instance.patient_id, instance.accession, instance.calling_ae, instance.transfer_syntax,
                 instance.pixel_sha256, instance.study_date[:16], instance.view[:16], instance.study_instances,
                 str(path.relative_to(self.root)), time.time(), instance.state, instance.reason))
        return cursor.rowcount == 1

    def queued(self, limit: int) -> list[sqlite3.Row]:
        return self._query("SELECT * FROM instances WHERE state = 'queued' ORDER BY received_at LIMIT ?", (limit,))

    def file_of(self, row: sqlite3.Row) -> Path:
        return self.root / row["path"]

    def finish(self, sop_uid: str, state: str, reason: str = "", risk: float | None = None, top: str = "",
               flagged: str = "", scores: dict | None = None, results: list[dict] | None = None,
               model: dict | None = None, distance: float | None = None, meta: dict | None = None,
               refusal: Refusal = Refusal.NONE) -> None:
        """Record an instance's state and queue its result objects for each destination, in one transaction
        (a result already in the outbox is not added twice)."""
        if state not in STATES:
            raise ValueError(f"unknown state {state!r}")
        now = time.time()
        with self._tx() as db:
            db.execute("UPDATE instances SET state=?, reason=?, risk=?, top_finding=?, flagged=?, scores=?, "
                       "scored_at=?, model=?, distance=?, meta=?, refusal=? WHERE sop_uid=?",
                       (state, reason, risk, top, flagged, json.dumps(scores) if scores else "", now,
                        json.dumps(model, sort_keys=True) if model else "", distance,
                        json.dumps(meta, sort_keys=True) if meta else "", Refusal(refusal).value, sop_uid))
            self._queue(db, sop_uid, results or [], now)

    def instances(self, state: str | None = None) -> list[dict]:
        """Every instance, highest risk first (unscored ones after, newest first), with its results' state."""
        where, args = ("WHERE i.state = ?", (state,)) if state else ("", ())
        rows = self._query(
            "SELECT i.*, (SELECT group_concat(o.kind || ':' || o.state, ',') FROM outbox o "
            "WHERE o.source_uid = i.sop_uid) AS results FROM instances i " + where +
            " ORDER BY i.risk IS NULL, i.risk DESC, i.received_at DESC", args)
        return [dict(r) for r in rows]

    def decision(self, sop_uid: str) -> Decision | None:
        """What the node decided about an instance (records.Decision), None when there is no such instance."""
        row = self.instance(sop_uid)
        return Decision.of(row) if row is not None else None

    def instance(self, sop_uid: str) -> dict | None:
        rows = self._query("SELECT * FROM instances WHERE sop_uid = ?", (sop_uid,))
        return dict(rows[0]) if rows else None

    def counts(self) -> dict[str, int]:
        return {r["state"]: r["n"] for r in self._query("SELECT state, count(*) AS n FROM instances GROUP BY state")}

    def last_received(self, study_uid: str) -> float | None:
        rows = self._query("SELECT max(received_at) AS t FROM instances WHERE study_uid = ?", (study_uid,))
        return rows[0]["t"] if rows else None

    def recover(self) -> dict[str, int]:
        """At start: delete temporary files a crash left (their senders got no success and will retry); what
        is queued stays queued for the worker, pending results stay pending for the sender."""
        removed = 0
        for folder in (self.root / "instances", self.root / "results", self.root / "incoming"):
            if folder.is_dir():
                for tmp in folder.rglob(".*.tmp"):
                    tmp.unlink(missing_ok=True)
                    removed += 1
        queued = self._query("SELECT count(*) AS n FROM instances WHERE state = 'queued'")[0]["n"]
        pending = self._query("SELECT count(*) AS n FROM outbox WHERE state = 'pending'")[0]["n"]
        return {"temporary_files_removed": removed, "queued": queued, "pending_results": pending}
