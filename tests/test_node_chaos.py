"""The node under the faults a hospital's network produces (issue 42), each against real peers (DCMTK's dcmsend and
echoscu, the node's own STOW-RS client, raw sockets for broken senders). Each test names the promise it checks;
C-ECHO is answered after every fault."""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from chestaid.apps.node.dicomweb import stow
from chestaid.store import Store
from node_helpers import DCMTK, dcmtk, free_port, node_process, phantom, wait_port
from test_node import received_uids, run, settled, start_node, stop, storescp, wait_for  # noqa: F401 - run: fixture

pytestmark = [pytest.mark.peers,
              pytest.mark.skipif(not (DCMTK / "dcmsend").is_file(), reason="DCMTK is a test dependency")]


def echo(port: int, timeout: int = 15) -> None:
    """C-ECHO answered within `timeout` s, or the test fails (the freeze answered associations but not C-ECHO)."""
    done = dcmtk("echoscu", "-to", timeout, "-ta", timeout, "-td", timeout, "-aec", "CHESTAID", "127.0.0.1", port,
                 check=False, timeout=timeout * 3)
    assert done.returncode == 0, f"C-ECHO not answered: {done.stdout}{done.stderr}"


def send(port: int, path: Path) -> subprocess.Popen:
    return subprocess.Popen([str(DCMTK / "dcmsend"), "-to", "60", "-ta", "60", "-td", "60", "-aet", "PACS",
                             "-aec", "CHESTAID", "127.0.0.1", str(port), str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finished(process: subprocess.Popen, timeout: float = 120) -> str:
    out, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, f"dcmsend failed: {out}"
    return out


def scored_lines(caplog, uid: str) -> int:
    return sum(1 for r in caplog.records if re.fullmatch(rf"instance {re.escape(uid)}: scored, .*", r.getMessage()))


def test_the_same_big_instance_on_two_associations_and_over_stow_rs_at_once_is_stored_and_scored_once(
        run, tmp_path, caplog):  # noqa: F811
    """Promise: a copy arriving while the same instance is being stored waits for it and is acknowledged as a
    duplicate (success: the PACS stops retrying); one row, one scoring; C-ECHO answered after every round."""
    caplog.set_level(logging.INFO, logger="chestaid.node")
    node = start_node(run, tmp_path / "store", heat_maps=False, dicomweb_port=0)
    study = generate_uid(entropy_srcs=["chaos-study"])
    uids = []
    try:
        for i in range(8):  # two DIMSE associations at once, as a PACS retrying a send still in progress
            big = phantom(tmp_path / f"big{i}.dcm", study, i, size=3072)  # 12-bit, 18 MB
            senders = [send(node.port, big), send(node.port, big)]
            for process in senders:
                finished(process)
            uids.append(_uid(big))
            echo(node.port)
        for i in range(8, 11):  # C-STORE and STOW-RS at once
            big = phantom(tmp_path / f"big{i}.dcm", study, i, size=3072)
            dimse = send(node.port, big)
            took, refused = stow(f"http://127.0.0.1:{node.stow.port}/dicom-web", [big], timeout=120)
            finished(dimse)
            assert took == {_uid(big)} and not refused
            uids.append(_uid(big))
            echo(node.port)
        wait_for(lambda: settled(tmp_path / "store", destinations=False), 300, what="all scored")
        store = Store.open(tmp_path / "store")
        try:
            rows = store.instances()
            assert sorted(r["sop_uid"] for r in rows) == sorted(uids) and not store.conflicts()
            assert {r["state"] for r in rows} == {"scored"}
        finally:
            store.close()
        assert [scored_lines(caplog, uid) for uid in uids] == [1] * len(uids)
    finally:
        node.stop()


def _uid(path: Path) -> str:
    import pydicom

    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def _dribble(port: int, stop: threading.Event, closed: list, i: int) -> None:
    """A sender that connects and sends an A-ASSOCIATE-RQ a byte a second, until the node closes it."""
    request = bytes([0x01, 0x00, 0x00, 0x00, 0x01, 0x00]) + b"\x00" * 256
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        for byte in request:
            if stop.wait(1.0):
                return
            try:
                s.sendall(bytes([byte]))
                s.setblocking(False)
                try:
                    if s.recv(1) == b"":
                        raise ConnectionResetError
                except BlockingIOError:
                    pass
                s.setblocking(True)
            except OSError:
                closed[i] = time.monotonic()
                return


def _held() -> list[str]:
    """The node's connections still open, with their states (for a failure's message)."""
    return [f"{t.dul.state_machine.current_state}" for t in threading.enumerate() if "AcceptorThread" in t.name]


def test_fifty_slow_senders_and_three_hundred_silent_connections_never_keep_a_real_sender_out(run, tmp_path,
                                                                                              caplog):  # noqa: F811
    """Promise: connections that have not asked for an association hold no place among --max-associations
    (16 here), so a normal sender's images are accepted at once; each such connection is closed after the
    request timeout (5 s here), with a log line; C-ECHO answered throughout."""
    caplog.set_level(logging.INFO, logger="chestaid.node")
    node = start_node(run, tmp_path / "store", heat_maps=False, request_timeout=5.0)
    stop, closed = threading.Event(), [None] * 50
    slow = [threading.Thread(target=_dribble, args=(node.port, stop, closed, i), daemon=True) for i in range(50)]
    silent = []
    try:
        for thread in slow:
            thread.start()
        for _ in range(300):
            silent.append(socket.create_connection(("127.0.0.1", node.port), timeout=10))
        time.sleep(1.0)
        started = time.monotonic()
        images = [phantom(tmp_path / f"IM{i}.dcm", generate_uid(), i) for i in range(5)]
        done = subprocess.run([str(DCMTK / "dcmsend"), "-to", "20", "-aec", "CHESTAID", "127.0.0.1", str(node.port),
                               *map(str, images)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        echo(node.port)
        accepted_after = time.monotonic() - started
        assert accepted_after < 15, f"a normal sender waited {accepted_after:.1f} s"
        wait_for(lambda: all(c is not None for c in closed), 60,
                 what=lambda: f"every slow sender closed by the node ({sum(c is not None for c in closed)} of 50; "
                              f"connections held: {_held()})")
        for s in silent:  # the node closed each silent connection: reading gives end of stream
            s.settimeout(30)
            assert s.recv(1) == b""
        echo(node.port)
        store = Store.open(tmp_path / "store")
        try:
            assert len(store.instances()) == 5
        finally:
            store.close()
        assert any("no A-ASSOCIATE-RQ within 5 s" in r.getMessage() for r in caplog.records)
    finally:
        stop.set()
        for s in silent:
            s.close()
        node.stop()


def test_a_destination_down_for_hours_keeps_every_result_pending_with_bounded_backoff_then_delivers_once(
        run, tmp_path, caplog):  # noqa: F811
    """Promise: a destination that cannot be reached is down, not refusing: its results are never dead-lettered,
    retried at most every --max-retry-delay s, with a warning once it has been down for --send-tries tries and
    the oldest pending result's age as a metric; the sender holds at most one batch in memory; a retry scheduled
    ahead by a clock that stepped backwards is due at once; when the destination returns each result arrives once."""
    import urllib.request

    caplog.set_level(logging.INFO, logger="chestaid.node")
    down_port = free_port()
    node = start_node(run, tmp_path / "store", heat_maps=False, send_to=[f"DOWN@127.0.0.1:{down_port}"],
                      send_tries=2, retry_delay=0.2, max_retry_delay=1.0, metrics_port=0)
    peer = None
    try:
        images = [phantom(tmp_path / f"IM{i}.dcm", generate_uid(), i) for i in range(3)]
        finished(send(node.port, images[0]))
        for image in images[1:]:
            finished(send(node.port, image))
        tried = lambda: [r for r in node.store.outbox() if r["down_tries"] >= 6]  # noqa: E731
        wait_for(lambda: len(tried()) == 3, 60, what="six tries of each result")
        rows = node.store.outbox()
        assert {r["state"] for r in rows} == {"pending"} and all("cannot connect" in r["last_error"] for r in rows)
        assert all(r["attempts"] == 0 for r in rows)  # an outage spends none of the tries of a destination that answers
        assert all(r["next_at"] - time.time() <= 1.0 + 0.5 for r in rows)  # bounded backoff
        assert any("destination down for 2 tries" in r.getMessage() for r in caplog.records)
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{node.metrics_port}/metrics", timeout=10).read().decode()
        age = float(re.search(r"^chestaid_outbox_oldest_pending_seconds (\S+)$", metrics, re.M)[1])
        assert age >= 1.0
        echo(node.port)
        # the clock steps back an hour: the retries it scheduled now lie an hour ahead
        with sqlite3.connect(tmp_path / "store" / "chestaid-node.sqlite") as db:
            db.execute("UPDATE outbox SET next_at = ?", (time.time() + 3600,))
        peer = storescp(tmp_path / "dest", down_port, aet="DOWN")
        wait_for(lambda: not node.store.outbox("pending"), 30, what="delivered once the destination is up")
        assert sorted(received_uids(tmp_path / "dest")) == sorted(r["result_uid"] for r in node.store.outbox())
    finally:
        node.stop()
        if peer is not None:
            stop(peer)


def _statuses(out: str) -> list[str]:
    return re.findall(r"DIMSE Status\s*:\s*0x([0-9A-Fa-f]{4})", out)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a small tmpfs as the store's disk (root)")
def test_the_store_disk_full_refuses_with_a_failure_status_acknowledges_only_durable_and_recovers_alone(
        run, tmp_path):  # noqa: F811
    """Promise: with the store's disk full an instance gets 0xA700 (out of resources: the sender keeps it and
    retries), every instance acknowledged is in the store with its file; when space returns the node stores and
    scores again by itself (no restart); C-ECHO answered throughout."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(disk)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    node = None
    try:
        node = start_node(run, disk / "store", heat_maps=False)
        study = generate_uid()
        images = [phantom(tmp_path / f"IM{i}.dcm", study, i, size=640) for i in range(6)]  # 800 kB each
        report = tmp_path / "report.txt"
        done = subprocess.run([str(DCMTK / "dcmsend"), "-aec", "CHESTAID", "+crf", str(report), "127.0.0.1",
                               str(node.port), *map(str, images)], capture_output=True, text=True, timeout=120)
        statuses = _statuses(report.read_text())
        assert "A700" in [s.upper() for s in statuses], (statuses, done.stderr)
        acknowledged = [_uid(p) for p, status in zip(images, statuses) if status == "0000"]
        for uid in acknowledged:
            row = node.store.instance(uid)
            assert row is not None and node.store.file_of(row).stat().st_size > 600_000
        echo(node.port)
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)  # space returns
        done = subprocess.run([str(DCMTK / "dcmsend"), "-aec", "CHESTAID", "127.0.0.1", str(node.port),
                               *map(str, images)], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        wait_for(lambda: node.store.counts() == {"scored": 6}, 120, what=lambda: f"all scored ({node.store.counts()})")
        echo(node.port)
    finally:
        if node is not None:
            node.stop()
        subprocess.run(["umount", "-l", str(disk)])


def test_a_long_reader_of_the_database_never_delays_receipt_or_scoring(run, tmp_path):  # noqa: F811
    """Promise: the page, the monitor or `worklist` reading the store in another process for as long as they like
    (a read transaction held open) neither delays an acknowledgement nor stops scoring (SQLite WAL)."""
    node = start_node(run, tmp_path / "store", heat_maps=False)
    reader = sqlite3.connect(tmp_path / "store" / "chestaid-node.sqlite")
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM instances").fetchall()  # the read transaction stays open
        images = [phantom(tmp_path / f"IM{i}.dcm", generate_uid(), i) for i in range(4)]
        started = time.monotonic()
        finished(send(node.port, images[0]))
        for image in images[1:]:
            finished(send(node.port, image))
        assert time.monotonic() - started < 20
        wait_for(lambda: node.store.counts() == {"scored": 4}, 60, what="scored while the reader reads")
        echo(node.port)
        assert reader.execute("SELECT count(*) FROM instances").fetchone()[0] == 0  # its snapshot, still open
    finally:
        reader.close()
        node.stop()


def test_kill_9_during_a_stow_rs_upload_stores_nothing_half_and_the_resend_is_stored_once(run, tmp_path):  # noqa: F811
    """Promise: an upload cut by kill -9 leaves no instance and no temporary file after restart; the sender, which
    got no answer, sends again and the instance is stored and scored once."""
    port, web = free_port(), free_port()
    store = tmp_path / "store"
    log = tmp_path / "node.log"
    node = node_process(Path(run.root), store, port, "--dicomweb-port", str(web), "--host", "127.0.0.1",
                        "--no-heat-maps", log=log)
    big = phantom(tmp_path / "big.dcm", generate_uid(), 0, size=2048)
    data = big.read_bytes()
    boundary = "chaosboundary"
    body = (f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + data
            + f"\r\n--{boundary}--\r\n".encode())
    try:
        wait_port(web, 60, node)
        with socket.create_connection(("127.0.0.1", web), timeout=30) as s:
            s.sendall(f"POST /dicom-web/studies HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
                      f'Content-Type: multipart/related; type="application/dicom"; boundary={boundary}\r\n\r\n'
                      .encode() + body[: len(body) // 2])
            time.sleep(1.0)
            node.send_signal(signal.SIGKILL)
            node.wait(30)
        node = node_process(Path(run.root), store, port, "--dicomweb-port", str(web), "--host", "127.0.0.1",
                            "--no-heat-maps", log=log)
        wait_port(web, 60, node)
        assert not [p for p in store.rglob("*") if p.name.endswith(".tmp")]
        check = Store.open(store)
        try:
            assert check.instances() == []
        finally:
            check.close()
        took, refused = stow(f"http://127.0.0.1:{web}/dicom-web", [big], timeout=120)
        assert took == {_uid(big)} and not refused
        wait_for(lambda: settled(store, destinations=False), 120, what="scored")
        check = Store.open(store)
        try:
            assert [(r["sop_uid"], r["state"]) for r in check.instances()] == [(_uid(big), "scored")]
        finally:
            check.close()
        echo(port)
    finally:
        node.kill()
        node.wait(30)
