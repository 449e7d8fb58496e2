"""DICOMweb with a real peer: Orthanc and its DICOMweb plugin (Debian's orthanc-dicomweb) send a study to the
node by STOW-RS; the node scores it and sends its SR back into Orthanc by STOW-RS through the outbox; every
object dciodvfy-clean; the worklist lists each instance once (a second STOW-RS of the study adds nothing). The
endpoint answers PS3.18's statuses, refuses a part that is not DICOM one by one, and off loopback needs TLS and
a bearer token."""

from __future__ import annotations

import json
import logging
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from chestaid.apps.node.dicomweb import StowServer
from chestaid.apps.node.node import Node, NodeConfig
from chestaid.core.errors import ChestaidError
from chestaid.store import Store
from node_helpers import ORTHANC, Orthanc, dciodvfy_errors, free_port, phantom

PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
pytestmark = [pytest.mark.peers, pytest.mark.skipif(not ORTHANC.is_file() or not PLUGIN.is_file(),
                                                    reason="Orthanc and orthanc-dicomweb are test dependencies")]


def test_orthanc_sends_by_stow_rs_and_gets_the_sr_back_by_stow_rs(ungated_run, tmp_path):
    stow_port = free_port()
    node = None
    orthanc = Orthanc(tmp_path / "orthanc", free_port(), extra={
        "Plugins": [str(PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/",
                     "Servers": {"chestaid": [f"http://127.0.0.1:{stow_port}/dicom-web/"]}}})
    try:
        node = Node(NodeConfig(run=Path(ungated_run.root), store=tmp_path / "store", port=0, host="127.0.0.1",
                               dicomweb_port=stow_port, heat_maps=True, per_image_results=True,
                               send_to=[f"http://127.0.0.1:{orthanc.http}/dicom-web"])).start()
        files = [phantom(tmp_path / f"{k}.dcm", "1.2.826.0.1.3680043.8.498.91", k) for k in range(2)]
        for f in files:
            orthanc.post("/instances", f.read_bytes())
        study = orthanc.get("/studies")[0]
        for _ in range(2):  # the second send of the same study: acknowledged, nothing new
            orthanc.post("/dicom-web/servers/chestaid/stow", json.dumps({"Resources": [study]}).encode(),
                         "application/json")
        deadline = time.time() + 180
        while time.time() < deadline and len(node.store.outbox("sent")) < 4:  # an SR and a heat map per image
            time.sleep(0.5)
        rows, outbox = node.store.instances(), node.store.outbox()
        back = orthanc.get(f"/studies/{study}/instances")
    finally:
        if node is not None:
            node.stop()
        orthanc.stop()
    assert len(rows) == 2 and {r["state"] for r in rows} == {"scored"}  # once each
    assert len(outbox) == 4 and {o["state"] for o in outbox} == {"sent"}
    assert len(back) == 6  # the two images, their two SRs and two heat maps, in the same study
    for path in (tmp_path / "store" / "results").rglob("*.dcm"):
        assert dciodvfy_errors(path) == [], path


def _multipart(parts: list[tuple[str, bytes]], boundary: str = "b0undary") -> tuple[str, bytes]:
    body = b"".join(f"--{boundary}\r\nContent-Type: {kind}\r\n\r\n".encode() + data + b"\r\n" for kind, data in parts)
    return f'multipart/related; type="application/dicom"; boundary={boundary}', body + f"--{boundary}--\r\n".encode()


def _post(url: str, kind: str, body: bytes, token: str | None = None) -> tuple[int, dict]:
    """(status, DICOM JSON body); an error's reason as {"reason": its text, "warning": its Warning header}."""
    headers = {"Content-Type": kind, **({"Authorization": f"Bearer {token}"} if token else {})}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, body, headers, method="POST"), timeout=30) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        data = e.read()
        if e.headers.get_content_type() == "application/dicom+json":
            return e.code, json.loads(data or b"{}")
        return e.code, {"reason": data.decode(), "warning": e.headers.get("Warning", "")}


def test_stow_rs_statuses_part_by_part_and_logins_off_loopback(tmp_path):
    store = Store(tmp_path / "store")
    server = StowServer(store, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{server.port}/dicom-web/studies"
    good = phantom(tmp_path / "a.dcm", "1.2.826.0.1.3680043.8.498.92", 0).read_bytes()
    other = phantom(tmp_path / "b.dcm", "1.2.826.0.1.3680043.8.498.93", 1).read_bytes()
    try:
        status, body = _post(url, *_multipart([("application/dicom", good), ("application/dicom", b"not dicom")]))
        assert status == 202 and len(body["00081199"]["Value"]) == 1 and len(body["00081198"]["Value"]) == 1
        assert body["00081198"]["Value"][0]["00081197"]["Value"] == [0x0110]
        status, body = _post(url.replace("/studies", "/studies/1.2.3.4"), *_multipart([("application/dicom", other)]))
        assert status == 409 and body["00081198"]["Value"][0]["00081197"]["Value"] == [0xA900]  # not that study
        status, body = _post(url, "application/dicom", good)
        assert status == 415 and "multipart/related" in body["reason"] and body["warning"].startswith("299 chestaid")
        assert _post(url, *_multipart([("application/dicom", good)]))[0] == 200  # a duplicate: acknowledged
        assert len(store.instances()) == 1
    finally:
        server.stop()
    with pytest.raises(ChestaidError, match="needs TLS .* and --dicomweb-users"):
        StowServer(store, "0.0.0.0", 0)
    store.close()



def test_stow_rs_with_a_users_file_needs_a_bearer_token(tmp_path):
    from chestaid.apps.page.auth import add_user

    token = add_user(tmp_path / "users.json", "modality", "correct horse battery")
    store = Store(tmp_path / "store")
    server = StowServer(store, "127.0.0.1", 0, users=tmp_path / "users.json").start()
    url = f"http://127.0.0.1:{server.port}/dicom-web/studies"
    data = phantom(tmp_path / "a.dcm", "1.2.826.0.1.3680043.8.498.94", 0).read_bytes()
    try:
        assert _post(url, *_multipart([("application/dicom", data)]))[0] == 401
        assert _post(url, *_multipart([("application/dicom", data)]), token="wrong")[0] == 401
        assert not store.instances()
        assert _post(url, *_multipart([("application/dicom", data)]), token=token)[0] == 200
        assert len(store.instances()) == 1
    finally:
        server.stop()
        store.close()


def test_a_body_cut_short_is_refused_and_nothing_is_stored(tmp_path):
    """A multipart body without its closing boundary (a sender gone mid-upload) is a 400, never a stored
    instance that a complete resend would then find "in conflict"; a result already sent stays sent whatever
    a later failure says."""
    store = Store(tmp_path / "store")
    server = StowServer(store, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{server.port}/dicom-web/studies"
    data = phantom(tmp_path / "a.dcm", "1.2.826.0.1.3680043.8.498.96", 0).read_bytes()
    kind, body = _multipart([("application/dicom", data)])
    try:
        status, answer = _post(url, kind, body[: len(body) // 2])
        assert status == 400 and "ends" in answer["reason"], answer
        assert not store.instances()
        assert _post(url, kind, body)[0] == 200 and len(store.instances()) == 1 and not store.conflicts()
    finally:
        server.stop()
    store.finish(store.instances()[0]["sop_uid"], "scored", results=[
        {"kind": "sr", "uid": "2.25.1", "sop_class": "1.2", "path": "x", "destination": "A@h:1"}])
    row = store.outbox()[0]
    store.sent(row["id"])
    store.failed(row["id"], "late failure", None)
    assert store.outbox()[0]["state"] == "sent"
    store.close()


SERVE_ONLY = """
import sys, threading
from chestaid.apps.node.dicomweb import StowServer
from chestaid.store import Store
server = StowServer(Store(sys.argv[1]), "127.0.0.1", 0).start()
print(server.port, flush=True)
threading.Event().wait()
"""


def _peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status)[1]) / 1024


@pytest.mark.peers
def test_eight_concurrent_one_gigabyte_uploads_keep_memory_flat(tmp_path):
    """STOW-RS bodies go to disk as they arrive: 8 uploads of 1 GiB at once (64 parts of 16 MiB each) raise the
    endpoint's peak RSS by far less than one body (the old endpoint held each body whole: 8 GiB); every upload is
    answered 200 and its instance stored once."""
    import http.client
    import subprocess
    import sys
    import threading

    server = subprocess.Popen([sys.executable, "-c", SERVE_ONLY, str(tmp_path / "store")], stdout=subprocess.PIPE,
                              text=True)
    try:
        port = int(server.stdout.readline())
        before = _peak_rss_mb(server.pid)
        boundary = "eightgigs"
        instances = [phantom(tmp_path / f"big{i}.dcm", f"1.2.826.0.1.3680043.8.498.7{i}", i, size=2880).read_bytes()
                     for i in range(8)]  # 16 MiB each
        answers: list = [None] * 8

        def upload(i: int) -> None:
            part = f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + instances[i] + b"\r\n"
            closing = f"--{boundary}--\r\n".encode()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
            connection.request("POST", "/dicom-web/studies", body=(part for _ in range(64)),
                               headers={"Content-Length": str(64 * len(part) + len(closing)),
                                        "Content-Type": f'multipart/related; type="application/dicom"; '
                                                        f'boundary={boundary}'}, encode_chunked=False)
            connection.send(closing)
            response = connection.getresponse()
            answers[i] = (response.status, json.loads(response.read()))
            connection.close()

        threads = [threading.Thread(target=upload, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(900)
        after = _peak_rss_mb(server.pid)
        total = 8 * 64 * (len(instances[0]) + 60) / 2**30
        logging.getLogger(__name__).warning("8 concurrent STOW-RS uploads of %.2f GiB in all: peak RSS %.0f MB "
                                            "before, %.0f MB after", total, before, after)
        assert [a[0] for a in answers] == [200] * 8, answers
        assert all(len(a[1]["00081199"]["Value"]) == 64 for a in answers)
        assert after - before < 700, (before, after)
        store = Store.open(tmp_path / "store")
        try:
            assert len(store.instances()) == 8
        finally:
            store.close()
        assert not list((tmp_path / "store" / "incoming").iterdir())  # nothing of the uploads left behind
    finally:
        server.kill()
        server.wait(30)
