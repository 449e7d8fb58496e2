"""The store's tables, one schema for both databases (SQLite, PostgreSQL: chestaid.store.engine translates the few
words that differ), the columns added since the first stores, and the schema's version.

Version 1: before versions were recorded; 2: study_date, view, refusal, down_tries; 3: notifications, the studies'
triage level, the likely-normal tier's state; 4: nodes (the processes sharing a store) and the claims of instances
and outbox rows by one of them."""

from __future__ import annotations

from chestaid.store.nodes import NODES_SCHEMA
from chestaid.store.notifications import NOTIFICATIONS_SCHEMA
from chestaid.store.outbox import OUTBOX_ADDED
from chestaid.store.studies import STUDIES_ADDED, STUDIES_SCHEMA

SCHEMA_VERSION = 4

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
CREATE INDEX IF NOT EXISTS outbox_source ON outbox(source_uid);
CREATE TABLE IF NOT EXISTS audit (id INTEGER PRIMARY KEY, at REAL NOT NULL, "user" TEXT NOT NULL,
                                  action TEXT NOT NULL, sop_uid TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS verdicts (
    id INTEGER PRIMARY KEY, sop_uid TEXT NOT NULL, finding TEXT NOT NULL, verdict TEXT NOT NULL,
    "user" TEXT NOT NULL, at REAL NOT NULL, source TEXT NOT NULL DEFAULT 'page'
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
                 "refusal": "TEXT NOT NULL DEFAULT ''",  # records.Refusal: what refused it ('' = none, or not recorded)
                 "claimed_by": "TEXT NOT NULL DEFAULT ''"}  # the node process scoring it ('' = none; store.nodes)


TABLES = SCHEMA + STUDIES_SCHEMA + NOTIFICATIONS_SCHEMA + NODES_SCHEMA
ADDED = {"instances": ADDED_COLUMNS, "studies": STUDIES_ADDED, "outbox": OUTBOX_ADDED}  # migrated when opened
