"""The node's health endpoints (issue 42): /healthz alive, /readyz ready, each turning 503 with the reason when
what it checks breaks and 200 again when it returns; each listener's busy port named as its own (issue 43)."""

from __future__ import annotations

import json
import re
import socket
import sqlite3
import urllib.error
import urllib.request

import pytest

from chestaid.core.errors import ChestaidError
from node_helpers import DCMTK, free_port, phantom
from test_node import run, start_node, wait_for  # noqa: F401 - run: the module's fixture
from test_node_chaos import finished, send

pytestmark = [pytest.mark.peers,
              pytest.mark.skipif(not (DCMTK / "dcmsend").is_file(), reason="DCMTK is a test dependency")]


def probe(port: int, path: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_readyz_turns_unready_when_the_database_is_locked_or_gone_or_a_result_is_stuck_and_ready_again(
        run, tmp_path):  # noqa: F811
    node = start_node(run, tmp_path / "store", heat_maps=False, health_port=0, ready_max_pending_age=2.0,
                      send_to=[f"DOWN@127.0.0.1:{free_port()}"], retry_delay=0.5, max_retry_delay=1.0)
    db_path = tmp_path / "store" / "chestaid-node.sqlite"
    try:
        status, alive = probe(node.health_port, "/healthz")
        assert status == 200 and alive["checks"]["dicom"]["detail"] == "C-ECHO answered", alive
        status, ready = probe(node.health_port, "/readyz")
        assert status == 200 and all(c["ok"] for c in ready["checks"].values()), ready
        # the database taken by another process's exclusive lock: unready, then ready once it lets go
        holder = sqlite3.connect(db_path, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        status, ready = probe(node.health_port, "/readyz")
        assert status == 503 and not ready["checks"]["database"]["ok"] and ready["checks"]["store"]["ok"], ready
        holder.execute("ROLLBACK")
        holder.close()
        assert probe(node.health_port, "/readyz")[0] == 200
        # the database file gone (shared storage unmounted, a file moved away), then back
        db_path.rename(tmp_path / "away.sqlite")
        status, ready = probe(node.health_port, "/readyz")
        assert status == 503 and not ready["checks"]["database"]["ok"], ready
        (tmp_path / "away.sqlite").rename(db_path)
        assert probe(node.health_port, "/readyz")[0] == 200
        # a result pending past the limit (its destination down)
        finished(send(node.port, phantom(tmp_path / "a.dcm", "1.2.826.0.1.3680043.8.498.31", 0)))
        wait_for(lambda: probe(node.health_port, "/readyz")[0] == 503, 60, what="unready with a stuck result")
        assert "pending for" in probe(node.health_port, "/readyz")[1]["checks"]["outbox"]["detail"]
        assert probe(node.health_port, "/healthz")[0] == 200  # still alive: it receives and scores
    finally:
        node.stop()


def test_each_busy_port_is_named_as_its_own_listener(run, tmp_path):  # noqa: F811
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        for option, words in (("dicomweb_port", "STOW-RS (--dicomweb-port)"),
                              ("metrics_port", "metrics (--metrics-port)"),
                              ("health_port", "health (--health-port)")):
            with pytest.raises(ChestaidError, match=re.escape(f"cannot listen on 127.0.0.1:{port} for {words}")):
                start_node(run, tmp_path / option, **{option: port})
