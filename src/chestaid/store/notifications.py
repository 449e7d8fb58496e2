"""The store's critical-finding notifications: one per study whose result reached the critical level, open until a
user acknowledges it (audited: who, when), escalated to the next contact each time it stays open past the set
time (audited too). What each notice says travels as result objects through the outbox (never lost while a mail
server or a webhook is down); this table keeps who was told, when, and who acknowledged."""

from __future__ import annotations

import json
import time

NOTIFICATIONS_SCHEMA = """
CREATE TABLE IF NOT EXISTS notifications (
    id INTEGER PRIMARY KEY, study_uid TEXT NOT NULL UNIQUE, level TEXT NOT NULL, created_at REAL NOT NULL,
    contact INTEGER NOT NULL DEFAULT 0, last_sent_at REAL NOT NULL, acknowledged_by TEXT NOT NULL DEFAULT '',
    acknowledged_at REAL, summary TEXT NOT NULL DEFAULT '{}'
);
"""


class NotificationsMixin:
    """The notifications half of `Store` (it provides `_tx`, `_query` and the outbox's `_queue`)."""

    def notifications(self, open_only: bool = False) -> list[dict]:
        """Every notification (or the open ones), oldest first, its `summary` (what the notices say: never a name
        unless the site turned them on) parsed."""
        where = "WHERE acknowledged_at IS NULL" if open_only else ""
        return _parsed(self._query(f"SELECT * FROM notifications {where} ORDER BY created_at"))

    def due_escalations(self, after: float, contacts: int, now: float | None = None) -> list[dict]:
        """Open notifications told to their last contact at least `after` s ago that have a next contact."""
        now = time.time() if now is None else now
        return _parsed(self._query("SELECT * FROM notifications WHERE acknowledged_at IS NULL AND contact + 1 < ? "
                                   "AND last_sent_at <= ?", (contacts, now - after)))

    def escalated(self, notification: dict, results: list[dict]) -> bool:
        """Record an escalation to the next contact with its notices queued, in one transaction (False when it
        was acknowledged or escalated meanwhile)."""
        now = time.time()
        with self._tx() as db:
            if not db.execute("UPDATE notifications SET contact = contact + 1, last_sent_at = ? WHERE id = ? AND "
                              "contact = ? AND acknowledged_at IS NULL",
                              (now, notification["id"], notification["contact"])).rowcount:
                return False
            self._queue(db, notification["study_uid"], results, now)
            db.execute('INSERT INTO audit (at, "user", action, sop_uid) VALUES (?,?,?,?)',
                       (now, "chestaid", "escalate", notification["study_uid"]))
        return True

    def acknowledge(self, study_uid: str, user: str) -> float | None:
        """A user acknowledges the study's open notification (audited); the seconds it waited, None when the
        study has no open notification."""
        now = time.time()
        with self._tx() as db:
            row = db.execute("SELECT created_at FROM notifications WHERE study_uid = ? AND acknowledged_at IS NULL",
                             (study_uid,)).fetchone()
            if row is None:
                return None
            db.execute("UPDATE notifications SET acknowledged_by = ?, acknowledged_at = ? WHERE study_uid = ?",
                       (user, now, study_uid))
            db.execute('INSERT INTO audit (at, "user", action, sop_uid) VALUES (?,?,?,?)',
                       (now, user, "acknowledge", study_uid))
        return now - row["created_at"]

    @staticmethod
    def _notify(db, study_uid: str, level: str, summary: dict, now: float) -> bool:
        """A study's notification opened inside the caller's transaction (False when it already has one)."""
        return bool(db.execute("INSERT OR IGNORE INTO notifications (study_uid, level, created_at, last_sent_at, "
                               "summary) VALUES (?,?,?,?,?)",
                               (study_uid, level, now, now, json.dumps(summary))).rowcount)


def _parsed(rows) -> list[dict]:
    return [{**dict(r), "summary": json.loads(r["summary"])} for r in rows]
