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
from test_node import run, settled, start_node, wait_for  # noqa: F401 - the module's run fixture

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
                 what=lambda: f"every slow sender closed by the node ({sum(c is not None for c in closed)} of 50)")
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
