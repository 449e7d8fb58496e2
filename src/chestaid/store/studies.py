"""The store's studies: instances grouped by StudyInstanceUID, complete after a quiet period without a new image
or when forced, each with its current study result (a version; a late image makes the next, which supersedes it).

Nothing about a study is kept that the instances do not already say, but what was reported and when: the `studies`
table holds, per study, the version of its current result, that result's UID, the instances it covered and when
completion was forced. So assembly survives restarts and kill -9: a study whose instances differ from what its
current result covered is due again."""

from __future__ import annotations

import json
import time

STUDIES_SCHEMA = """
CREATE TABLE IF NOT EXISTS studies (
    study_uid TEXT PRIMARY KEY, version INTEGER NOT NULL DEFAULT 0, result_uid TEXT NOT NULL DEFAULT '',
    covered TEXT NOT NULL DEFAULT '[]', forced_at REAL, reported_at REAL
);
CREATE TABLE IF NOT EXISTS triage_tier (
    id INTEGER PRIMARY KEY CHECK (id = 1), state TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '', at REAL NOT NULL
);
"""
STUDIES_ADDED = {"level": "TEXT NOT NULL DEFAULT ''"}  # the triage level its current result delivered


class StudiesMixin:
    """The studies half of `Store` (it provides `_tx`, `_query` and the outbox's `_queue`)."""

    def studies_due(self, quiet_period: float, now: float | None = None) -> list[dict]:
        """Studies whose every instance is decided, that are complete (nothing new for `quiet_period` s, forced
        since their last image, or holding as many images as their headers' NumberOfStudyRelatedInstances) and
        whose instances are not what their current result covers: {study_uid, instances, version, result_uid}."""
        now = time.time() if now is None else now
        known = {r["study_uid"]: dict(r) for r in self._query("SELECT * FROM studies")}
        due = []
        for r in self._query("SELECT study_uid, group_concat(sop_uid, '|') AS uids, max(received_at) AS last, "
                             "sum(CASE WHEN state = 'queued' THEN 1 ELSE 0 END) AS waiting, max(study_instances) AS expected, (SELECT count(*) FROM "
                             "instances j WHERE j.study_uid = i.study_uid) AS n FROM instances i WHERE "
                             "state != 'ignored' AND study_uid != '' GROUP BY study_uid"):
            if r["waiting"]:
                continue
            uids = sorted(r["uids"].split("|"))
            study = known.get(r["study_uid"], {"version": 0, "result_uid": "", "covered": "[]", "forced_at": None})
            if uids == json.loads(study["covered"]):
                continue
            forced = study["forced_at"] is not None and study["forced_at"] >= r["last"]
            whole = r["expected"] is not None and r["n"] >= r["expected"]  # as many as the header said it holds
            if forced or whole or now - r["last"] >= quiet_period or r["last"] > now + 3600:  # (a clock that stepped back)
                due.append({"study_uid": r["study_uid"], "instances": uids, "version": study["version"],
                            "result_uid": study["result_uid"]})
        return due

    def force_study(self, study_uid: str) -> bool:
        """Complete a study now, whatever the quiet period (False when the store has no such study)."""
        if not self._query("SELECT 1 FROM instances WHERE study_uid = ? LIMIT 1", (study_uid,)):
            return False
        with self._tx() as db:
            db.execute("INSERT INTO studies (study_uid, forced_at) VALUES (?, ?) ON CONFLICT(study_uid) DO UPDATE "
                       "SET forced_at = excluded.forced_at", (study_uid, time.time()))
        return True

    def study_reported(self, study_uid: str, version: int, result_uid: str, covered: list[str],
                       results: list[dict], replaced: list[str] = (), notice: tuple[str, dict, list[dict]] | None = None,
                       level: str = "") -> bool:
        """Record a study's new current result and queue its objects, in one transaction; earlier results of the
        `replaced` kinds still pending for the study are superseded (never sent after the new one). `notice`:
        (level, its summary, its notices' outbox rows) opens the study's notification, unless it has one already.
        False when the study already has this version or a later one (another node reported it: nothing done)."""
        now = time.time()
        with self._tx() as db:
            if not db.execute(
                    "INSERT INTO studies (study_uid, version, result_uid, covered, reported_at, level) VALUES "
                    "(?,?,?,?,?,?) ON CONFLICT(study_uid) DO UPDATE SET version = excluded.version, result_uid = "
                    "excluded.result_uid, covered = excluded.covered, reported_at = excluded.reported_at, "
                    "level = excluded.level WHERE studies.version < excluded.version",
                    (study_uid, version, result_uid, json.dumps(sorted(covered)), now, level)).rowcount:
                return False
            if notice is not None and self._notify(db, study_uid, notice[0], notice[1], now):
                results = results + notice[2]
            for kind in replaced:
                db.execute("UPDATE outbox SET state = 'superseded', last_error = ? WHERE source_uid = ? AND kind = ? "
                           "AND state = 'pending'", (f"superseded by version {version}", study_uid, kind))
            self._queue(db, study_uid, results, now)
        return True

    def instances_by_study(self) -> dict[str, list[dict]]:
        """The instances but the ignored ones, by StudyInstanceUID (one without a study UID keyed by its own
        SOPInstanceUID), each study's in the order of `instances()`."""
        grouped: dict[str, list[dict]] = {}
        for row in self.instances():
            if row["state"] != "ignored":
                grouped.setdefault(row["study_uid"] or row["sop_uid"], []).append(row)
        return grouped

    def studies(self) -> list[dict]:
        """Every study's current result: version, result UID, instances covered, when reported."""
        return [{**dict(r), "covered": json.loads(r["covered"])} for r in self._query("SELECT * FROM studies")]

    def lowered_abnormal(self) -> list[str]:
        """Studies the live likely-normal tier lowered that a verdict shows abnormal (a finding present)."""
        return [r["study_uid"] for r in self._query(
            "SELECT s.study_uid FROM studies s WHERE s.level = 'likely normal' AND EXISTS (SELECT 1 FROM verdicts v "
            "JOIN instances i ON v.sop_uid = i.sop_uid WHERE i.study_uid = s.study_uid AND v.verdict = 'present')")]

    def set_tier(self, state: str, reason: str = "") -> None:
        """The likely-normal tier's state (live, shadow or off) and why, for the page and the metrics."""
        with self._tx() as db:
            db.execute("INSERT INTO triage_tier (id, state, reason, at) VALUES (1, ?, ?, ?) ON CONFLICT(id) DO UPDATE "
                       "SET state = excluded.state, reason = excluded.reason, at = excluded.at",
                       (state, reason, time.time()))

    def tier(self) -> dict | None:
        rows = self._query("SELECT state, reason, at FROM triage_tier WHERE id = 1")
        return dict(rows[0]) if rows else None
