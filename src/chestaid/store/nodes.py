"""The node processes sharing a store. Each registers at start under its name with a token for this start, beats
every few seconds, and claims by that token what it scores and what it sends. A claim holds while its holder
beats: a node killed with kill -9 loses its claims to the others after `LIVENESS` seconds (at once when it restarts
under its name, or stops). Beats are stamped and judged by the database's clock, so machines whose clocks disagree
never take each other for gone."""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger("chestaid.node")

NODES_SCHEMA = """
CREATE TABLE IF NOT EXISTS nodes (
    token TEXT PRIMARY KEY, name TEXT NOT NULL, host TEXT NOT NULL DEFAULT '', pid INTEGER NOT NULL DEFAULT 0,
    started_at REAL NOT NULL, seen_at REAL NOT NULL
);
"""
BEAT = 5.0  # seconds between a node's beats
LIVENESS = 30.0  # a node not seen for this long is gone: what it claimed is free
FORGOTTEN = 3600.0  # a gone node holding no claims is no longer listed after this long


class NodesMixin:
    """The nodes half of `Store` (it provides `_tx`, `_query`, `_engine` and `claimant`, this process's token)."""

    claimant: str

    def register(self, name: str) -> None:
        """This process, a node named `name`, starts: an earlier start under the name is gone (its claims free)."""
        now = self._engine.now_sql
        with self._tx() as db:
            db.execute("DELETE FROM nodes WHERE name = ?", (name,))
            db.execute(f"INSERT INTO nodes (token, name, host, pid, started_at, seen_at) VALUES (?,?,?,?,{now},{now})",
                       (self.claimant, name, socket.gethostname()[:64], os.getpid()))
        self._node_name, self._beaten_at = name, time.monotonic()

    def beat(self) -> None:
        """This node is alive (re-registered when another start under the same name replaced it), on the beat's
        own connection; gone nodes that hold nothing are forgotten after an hour."""
        began, now = time.monotonic(), self._engine.now_sql
        name = getattr(self, "_node_name", "")
        with self._engine.transaction(side=True) as db:
            replaced = not db.execute(f"UPDATE nodes SET seen_at = {now} WHERE token = ?", (self.claimant,)).rowcount
            if replaced:
                db.execute(f"INSERT INTO nodes (token, name, host, pid, started_at, seen_at) VALUES "
                           f"(?,?,?,?,{now},{now})", (self.claimant, name, socket.gethostname()[:64], os.getpid()))
            db.execute(f"DELETE FROM nodes WHERE seen_at < {now} - ? AND NOT EXISTS (SELECT 1 FROM instances WHERE "
                       "claimed_by = nodes.token AND state = 'queued') AND NOT EXISTS (SELECT 1 FROM outbox WHERE "
                       "claimed_by = nodes.token AND state = 'pending')", (FORGOTTEN,))
        self._beaten_at = began
        if replaced:
            log.warning("node %s: another node registered under this name; give each node its own --node-name", name)

    def claims_held(self) -> bool:
        """Whether what this node claimed is still its own: it beat recently enough that no other node may have
        taken it over (a node cut off from the database stops sending rather than send twice)."""
        beaten = getattr(self, "_beaten_at", None)
        return beaten is None or time.monotonic() - beaten < LIVENESS - 2 * BEAT

    def unregister(self) -> None:
        """This node stops: its row and its claims go (what it had not finished is free for the others at once)."""
        with self._tx() as db:
            db.execute("DELETE FROM nodes WHERE token = ?", (self.claimant,))
            db.execute("UPDATE instances SET claimed_by = '' WHERE claimed_by = ?", (self.claimant,))
            db.execute("UPDATE outbox SET claimed_by = '' WHERE claimed_by = ?", (self.claimant,))

    def nodes(self) -> list[dict]:
        """The nodes registered on the store, each with `alive` (seen within `LIVENESS` s), newest start first."""
        rows = self._query(f"SELECT name, host, pid, started_at, seen_at, seen_at >= {self._engine.now_sql} - ? AS "
                           "alive FROM nodes ORDER BY started_at DESC", (LIVENESS,))
        return [{**dict(r), "alive": bool(r["alive"])} for r in rows]

    def _free(self) -> tuple[str, tuple]:
        """SQL (and its arguments) for a row that this process may claim: unclaimed, its own, or a gone node's."""
        return (f"(claimed_by IN ('', ?) OR claimed_by NOT IN (SELECT token FROM nodes WHERE seen_at >= "
                f"{self._engine.now_sql} - ?))", (self.claimant, LIVENESS))

    def _claim(self, table: str, key: str, where: str, args: tuple, order: str, limit: int) -> list[dict]:
        """At most `limit` rows of `table` matching `where` that this process may claim, in `order`, claimed by
        it (one no other node holds). A read first: an idle worker or sender never waits for the write lock."""
        free, mine = self._free()
        where, args = f"{where} AND {free}", (*args, *mine)
        if not self._query(f"SELECT 1 FROM {table} WHERE {where} LIMIT 1", args):
            return []
        with self._tx() as db:
            rows = [dict(r) for r in db.execute(f"SELECT * FROM {table} WHERE {where} ORDER BY {order} LIMIT ?"
                                                + self._engine.lock_rows, (*args, limit)).fetchall()]
            db.executemany(f"UPDATE {table} SET claimed_by = ? WHERE {key} = ?",
                           [(self.claimant, r[key]) for r in rows])
        return rows
