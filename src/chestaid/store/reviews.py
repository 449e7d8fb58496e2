"""The store's reviews and audit trail (time, user, action, SOPInstanceUID: never pixels, names or patient IDs)."""

from __future__ import annotations

import time

AUDIT_ACTIONS = ("view", "score", "heat_map", "review")


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
            db.execute("INSERT INTO audit (at, user, action, sop_uid) VALUES (?,?,?,?)", (now, user, action, sop_uid))
        return True

    def review(self, sop_uid: str, user: str) -> bool:
        """Mark an instance reviewed by `user` now, audited; False when there is no such instance."""
        return self.audit(user, "review", sop_uid, review=True)

    def audit_rows(self, limit: int = -1) -> list[dict]:
        """The audit trail, oldest first (only the last `limit` rows when given)."""
        rows = self._query("SELECT at, user, action, sop_uid FROM audit ORDER BY id DESC LIMIT ?", (limit,))
        return [dict(r) for r in reversed(rows)]

