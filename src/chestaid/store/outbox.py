"""The store's outbox: one row per result object and destination, pending → sent, or dead with the last error."""

from __future__ import annotations

import time


# Columns added after the first stores were made (added to an older store when it is opened)
OUTBOX_ADDED = {"down_tries": "INTEGER NOT NULL DEFAULT 0",  # tries while the destination could not be reached
                "transport": "TEXT NOT NULL DEFAULT ''",  # outputs.Transport by name ('' = before it was recorded)
                "claimed_by": "TEXT NOT NULL DEFAULT ''"}  # the node process sending it ('' = none; store.nodes)


class OutboxMixin:
    """The outbox half of `Store` (it provides `_tx`, `_query` and the claims' `_claim` and `_free`)."""

    @staticmethod
    def _queue(db, source_uid: str, results: list[dict], now: float) -> None:
        """Outbox rows for `results` (kind, uid, sop_class, path, destination, transport) inside the caller's
        transaction; a result already queued for a destination is not added twice."""
        db.executemany("INSERT OR IGNORE INTO outbox (source_uid, kind, result_uid, sop_class, path, destination, "
                       "transport, created_at) VALUES (?,?,?,?,?,?,?,?)",
                       [(source_uid, r["kind"], r["uid"], r["sop_class"], r["path"], r["destination"],
                         r.get("transport", ""), now) for r in results])

    def claim_due(self, limit: int = 64, horizon: float | None = None) -> list[dict]:
        """At most `limit` pending results whose time has come, oldest first, claimed for this process to send
        (none another node holds; `sent`/`failed` release each). With `horizon` (the longest backoff), a retry
        scheduled further ahead than that is due now: only a clock that stepped backwards makes one, and it must
        not wait out the step."""
        now = time.time()
        late = now + horizon if horizon is not None else float("inf")
        return self._claim("outbox", "id", "state = 'pending' AND (next_at <= ? OR next_at > ?)", (now, late), "id",
                           limit)

    def next_due(self) -> float | None:
        """When the next pending result this process may claim is due (None: none)."""
        free, args = self._free()
        rows = self._query(f"SELECT min(next_at) AS t FROM outbox WHERE state = 'pending' AND {free}", args)
        return rows[0]["t"] if rows else None

    def outbox_counts(self) -> dict[str, int]:
        """Result objects by outbox state."""
        return {r["state"]: r["n"] for r in self._query("SELECT state, count(*) AS n FROM outbox GROUP BY state")}

    def oldest_pending(self) -> float | None:
        """When the oldest result still pending was made (None: nothing pending)."""
        rows = self._query("SELECT min(created_at) AS t FROM outbox WHERE state = 'pending'")
        return rows[0]["t"] if rows else None

    def sent(self, outbox_id: int) -> None:
        with self._tx() as db:
            db.execute("UPDATE outbox SET state='sent', attempts=attempts+1, sent_at=?, last_error='', claimed_by='' "
                       "WHERE id=? AND state='pending'", (time.time(), outbox_id))

    def failed(self, outbox_id: int, error: str, retry_at: float | None, down: bool = False) -> None:
        """One failed try: pending again at `retry_at`, or dead (retry_at None) keeping the last error. A result
        already sent stays sent, and one another node has claimed since is its (never its tries counted twice).
        `down`: the destination could not be reached: counted apart (`down_tries`), so a long outage never spends
        the tries a destination that answers gets."""
        mine = "claimed_by IN ('', ?)"
        with self._tx() as db:
            if down:
                db.execute("UPDATE outbox SET down_tries=down_tries+1, last_error=?, next_at=?, claimed_by='' "
                           f"WHERE id=? AND state='pending' AND {mine}", (error, retry_at, outbox_id, self.claimant))
                return
            if retry_at is None:
                db.execute("UPDATE outbox SET state='dead', attempts=attempts+1, last_error=?, claimed_by='' "
                           f"WHERE id=? AND state='pending' AND {mine}", (error, outbox_id, self.claimant))
            else:
                db.execute("UPDATE outbox SET attempts=attempts+1, last_error=?, next_at=?, claimed_by='' "
                           f"WHERE id=? AND state='pending' AND {mine}", (error, retry_at, outbox_id, self.claimant))

    def outbox(self, state: str | None = None) -> list[dict]:
        where, args = ("WHERE state = ?", (state,)) if state else ("", ())
        return [dict(r) for r in self._query(f"SELECT * FROM outbox {where} ORDER BY id", args)]

    def results_of(self, sop_uid: str) -> list[dict]:
        return [dict(r) for r in self._query("SELECT * FROM outbox WHERE source_uid = ? ORDER BY id", (sop_uid,))]

