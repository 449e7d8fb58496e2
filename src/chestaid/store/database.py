"""The node's store: received instances on disk (durable writes) and a database that is both the worklist and the
outbox: embedded SQLite (WAL) by default, or PostgreSQL shared by several nodes (chestaid.store.engine).

STORE/chestaid-node.sqlite   instances (one row per SOPInstanceUID: what arrived, its state and reason, its
                             scores) and outbox (one row per result object and destination: pending → sent, or
                             dead with the last error after N tries)
STORE/database.url           instead, the PostgreSQL database holding the tables (no password), and
STORE/store.id               the store's id, which that database holds too (engine.py)
STORE/instances/ab/<sha>.dcm the received bytes, exactly as sent (named by hashes of the SOPInstanceUID and bytes)
STORE/results/ab/<uid>.dcm   the result objects (SR, Secondary Capture heat map), named by their own UID
STORE/incoming/              STOW-RS uploads while they arrive (a file per part, deleted when the request ends)

The page (`chestaid serve RUN --store DIR`) adds reviewed_by/reviewed_at and the audit table (time, user,
action, SOPInstanceUID: never pixels, names or patient IDs).

A file is made durable before its row is committed (temporary file in the same folder, fsync, rename, fsync
the folder), and a row is committed (synchronous=FULL; PostgreSQL's commit) before the receiver answers success.
Several nodes share a store by claiming rows (store.nodes): each instance is scored, each result sent, by one.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from chestaid.core.errors import ChestaidError
from chestaid.core.fileio import atomic_write
from chestaid.core.refusals import Refusal
from chestaid.store.conflicts import ConflictsMixin
from chestaid.store.engine import DATABASE_ERRORS, open_engine
from chestaid.store.nodes import NodesMixin
from chestaid.store.outbox import OutboxMixin
from chestaid.store.records import Decision, State
from chestaid.store.notifications import NotificationsMixin
from chestaid.store.studies import StudiesMixin
from chestaid.store.reviews import ReviewsMixin

STATES = tuple(s.value for s in State)
OUTBOX_STATES = ("pending", "sent", "dead", "superseded")  # superseded: a newer version replaced it unsent
SHARED_TMP_AGE = 3600.0  # seconds: a temporary file this old in a shared store is no other node's write in progress
CLAIM_TIMEOUT = 120.0  # seconds a second copy of an instance waits for the first to be stored

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


class Store(ConflictsMixin, NodesMixin, NotificationsMixin, OutboxMixin, ReviewsMixin, StudiesMixin):
    """The node's folder and database. Safe to share between threads; another process (the `worklist`
    command) may read it while the node writes (WAL)."""

    def __init__(self, root: str | Path, create: bool = True, database: str | None = None) -> None:
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise ChestaidError(f"{self.root}: is a file; the node's store is a folder (give a new or existing one)")
        try:
            self._engine = open_engine(self.root, database, create)
        except (OSError, *DATABASE_ERRORS) as e:
            raise ChestaidError(f"{self.root}: cannot open the node store ({e})") from e
        self.shared = self._engine.shared  # other node processes may use this store at the same time
        self.claimant = uuid.uuid4().hex  # this process's token for what it claims (store.nodes)
        self._lock = threading.RLock()
        self._claims: dict[str, list] = {}  # SOPInstanceUID → [lock, holders] (claim)

    @classmethod
    def open(cls, root: str | Path) -> Store:
        """An existing store (an error when `root` is not one)."""
        return cls(root, create=False)

    @property
    def database(self) -> str:
        """Which database holds the store's tables (for logs: never a password)."""
        return self._engine.where()

    @property
    def database_kind(self) -> str:
        """SQLite or PostgreSQL."""
        return self._engine.name

    def close(self) -> None:
        self._engine.close()

    def probe(self, timeout: float) -> None:
        """Raise unless the database answers a fresh connection and takes writes within `timeout` s."""
        self._engine.probe(timeout)

    def _tx(self):
        return self._engine.transaction()

    def _query(self, sql: str, args: tuple = ()) -> list:
        return self._engine.query(sql, args)

    # -- instances ---------------------------------------------------------------------------------------------

    def instance_path(self, sop_uid: str, data: bytes) -> Path:
        """Named by hashes of the SOPInstanceUID and of the bytes: copies of one instance share a file; two contents
        under one UID (a conflict reaching two nodes at once) never overwrite each other."""
        digest = hashlib.sha256(sop_uid.encode()).hexdigest()
        return self.root / "instances" / digest[:2] / f"{digest}-{hashlib.sha256(data).hexdigest()[:16]}.dcm"

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
        stored (nothing is kept; another node may have stored it meanwhile). Raises OSError or one of
        `DATABASE_ERRORS` when either step fails."""
        if self.has(instance.sop_uid):
            return False
        path = self.instance_path(instance.sop_uid, data)
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
        if cursor.rowcount == 1:
            return True
        kept = self.instance(instance.sop_uid)
        if kept is not None and self.root / kept["path"] != path:
            path.unlink(missing_ok=True)  # another content stored first under the UID: the caller keeps this apart
        return False

    def claim_queued(self, limit: int) -> list[dict]:
        """At most `limit` queued instances, oldest first, claimed for this process to score (one no other node
        holds: see store.nodes); `finish` releases each."""
        return self._claim("instances", "sop_uid", "state = 'queued'", (), "received_at", limit)

    def file_of(self, row: dict) -> Path:
        return self.root / row["path"]

    def finish(self, sop_uid: str, state: str, reason: str = "", risk: float | None = None, top: str = "",
               flagged: str = "", scores: dict | None = None, results: list[dict] | None = None,
               model: dict | None = None, distance: float | None = None, meta: dict | None = None,
               refusal: Refusal = Refusal.NONE) -> bool:
        """Record a queued instance's state and queue its result objects for each destination, in one transaction
        (a result already in the outbox is not added twice). False when it is no longer queued (another node
        finished it first: nothing is recorded)."""
        if state not in STATES:
            raise ValueError(f"unknown state {state!r}")
        now = time.time()
        with self._tx() as db:
            if not db.execute("UPDATE instances SET state=?, reason=?, risk=?, top_finding=?, flagged=?, scores=?, "
                              "scored_at=?, model=?, distance=?, meta=?, refusal=?, claimed_by='' WHERE sop_uid=? AND "
                              "state = 'queued'",
                              (state, reason, risk, top, flagged, json.dumps(scores) if scores else "", now,
                               json.dumps(model, sort_keys=True) if model else "", distance,
                               json.dumps(meta, sort_keys=True) if meta else "", Refusal(refusal).value,
                               sop_uid)).rowcount:
                return False
            self._queue(db, sop_uid, results or [], now)
        return True

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
        is queued stays queued for the worker, pending results stay pending for the sender. In a shared store
        another node may be writing one now: only those an hour old go."""
        removed, before = 0, time.time() - SHARED_TMP_AGE if self.shared else float("inf")
        for folder in (self.root / "instances", self.root / "results", self.root / "incoming"):
            if folder.is_dir():
                for tmp in folder.rglob(".*.tmp"):
                    try:
                        if tmp.stat().st_mtime < before:
                            tmp.unlink()
                            removed += 1
                    except FileNotFoundError:
                        pass
        queued = self._query("SELECT count(*) AS n FROM instances WHERE state = 'queued'")[0]["n"]
        pending = self._query("SELECT count(*) AS n FROM outbox WHERE state = 'pending'")[0]["n"]
        return {"temporary_files_removed": removed, "queued": queued, "pending_results": pending}
