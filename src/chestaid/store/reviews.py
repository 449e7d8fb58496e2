"""The store's reviews and audit trail (time, user, action, SOPInstanceUID: never pixels, names or patient IDs)."""

from __future__ import annotations

import time

AUDIT_ACTIONS = ("view", "score", "heat_map", "review", "verdict", "complete_study", "acknowledge", "escalate")
# (acknowledge and escalate name a study: their SOPInstanceUID column holds its StudyInstanceUID)
# A clinician's verdict on a finding, and on whether the study's priority was appropriate (finding PRIORITY)
VERDICTS = ("present", "absent", "can't tell")
PRIORITY, PRIORITY_VERDICTS = "priority appropriate", ("yes", "no")


class ReviewsMixin:
    """The review half of `Store` (it provides `_tx` and `_query`)."""

    def audit(self, user: str, action: str, sop_uid: str = "", review: bool = False) -> bool:
        """One audit row (when, who, what, which instance); a review also marks the instance reviewed by `user`.
        False when a review names no instance (nothing is written)."""
        if action not in AUDIT_ACTIONS:
            raise ValueError(f"unknown audit action {action!r}")
        now = time.time()
        with self._tx() as db:
            if review and not db.execute("UPDATE instances SET reviewed_by=?, reviewed_at=? WHERE sop_uid=?",
                                         (user, now, sop_uid)).rowcount:
                return False
            db.execute('INSERT INTO audit (at, "user", action, sop_uid) VALUES (?,?,?,?)', (now, user, action, sop_uid))
        return True

    def review(self, sop_uid: str, user: str) -> bool:
        """Mark an instance reviewed by `user` now, audited; False when there is no such instance."""
        return self.audit(user, "review", sop_uid, review=True)

    def audit_rows(self, limit: int = -1) -> list[dict]:
        """The audit trail, oldest first (only the last `limit` rows when given)."""
        rows = self._query('SELECT at, "user", action, sop_uid FROM audit ORDER BY id DESC'
                           + (" LIMIT ?" if limit >= 0 else ""), (limit,) if limit >= 0 else ())
        return [dict(r) for r in reversed(rows)]


    def add_verdicts(self, sop_uid: str, verdicts: dict[str, str], user: str, source: str = "page",
                     unless_same_source: bool = False) -> int:
        """Append one verdict row per finding (append-only: a changed verdict is a new row, the latest counts)
        and one audit row; returns the rows written (0 when the instance is unknown). `unless_same_source`: a
        verdict this source has already given on this instance is not appended again."""
        for finding, verdict in verdicts.items():
            allowed = PRIORITY_VERDICTS if finding == PRIORITY else VERDICTS
            if verdict not in allowed:
                raise ValueError(f"verdict {verdict!r} for {finding!r}: one of {', '.join(allowed)}")
        now = time.time()
        with self._tx() as db:
            if not verdicts or not db.execute("SELECT 1 FROM instances WHERE sop_uid = ?", (sop_uid,)).fetchone():
                return 0
            if unless_same_source:  # ever given from this source: a re-import never overrides a later correction
                given = {(r["finding"], r["verdict"]) for r in db.execute(
                    "SELECT finding, verdict FROM verdicts WHERE sop_uid = ? AND source = ?", (sop_uid, source))}
                verdicts = {f: v for f, v in verdicts.items() if (f, v) not in given}
                if not verdicts:
                    return 0
            db.executemany('INSERT INTO verdicts (sop_uid, finding, verdict, "user", at, source) VALUES (?,?,?,?,?,?)',
                           [(sop_uid, f, v, user, now, source) for f, v in verdicts.items()])
            db.execute('INSERT INTO audit (at, "user", action, sop_uid) VALUES (?,?,?,?)', (now, user, "verdict", sop_uid))
        return len(verdicts)

    def latest_verdicts(self) -> dict[str, dict[str, str]]:
        """{SOPInstanceUID: {finding: its latest verdict}}."""
        rows = self._query("SELECT v.sop_uid, v.finding, v.verdict FROM verdicts v JOIN (SELECT max(id) AS id FROM "
                           "verdicts GROUP BY sop_uid, finding) latest ON v.id = latest.id ORDER BY v.id")
        found: dict[str, dict[str, str]] = {}
        for r in rows:
            found.setdefault(r["sop_uid"], {})[r["finding"]] = r["verdict"]
        return found

    def verdict_history(self, sop_uid: str) -> list[dict]:
        """Every verdict given on an instance, oldest first (who, when, where from)."""
        return [dict(r) for r in self._query('SELECT finding, verdict, "user", at, source FROM verdicts WHERE '
                                             "sop_uid = ? ORDER BY id", (sop_uid,))]

    def scored_findings(self) -> set[str]:
        """The findings the store's scored instances were scored on (every model that scored here)."""
        from chestaid.store.records import Decision

        found: set[str] = set()
        for r in self._query("SELECT min(sop_uid) AS sop_uid, 'scored' AS state, model, min(scores) AS scores "
                             "FROM instances WHERE state = 'scored' AND scores != '' GROUP BY model"):
            found.update(Decision.of(dict(r)).scores)
        return found
