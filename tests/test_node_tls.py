"""DICOM over TLS with real peers: certificates made by openssl (a CA, the node's, a modality's, a PACS's);
DCMTK's `storescu +tls` with a client certificate stores into the node; without a certificate, or in plain TCP,
it is refused (a one-line reason in the log); results reach DCMTK's `storescp +tls` over TLS; a destination
whose certificate the node cannot verify is a one-line reason in the outbox, not a crash."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from chestaid.apps.node.node import Node, NodeConfig
from chestaid.apps.node.tls import TlsSettings
from node_helpers import DCMTK, dcmtk, free_port, phantom, wait_port

pytestmark = [pytest.mark.peers,
              pytest.mark.skipif(not (DCMTK / "storescu").is_file(), reason="DCMTK is a test dependency")]


def openssl(*args) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


def certificates(folder: Path) -> dict[str, Path]:
    """A CA and three certificates it signs (node, modality, pacs; CN and SAN 127.0.0.1), and a stranger's CA
    with a certificate of its own."""
    folder.mkdir()
    made = {}
    for ca in ("ca", "stranger-ca"):
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={ca}",
                "-keyout", folder / f"{ca}.key", "-out", folder / f"{ca}.pem")
        made[ca] = folder / f"{ca}.pem"
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, ca in (("node", "ca"), ("modality", "ca"), ("pacs", "ca"), ("impostor", "stranger-ca")):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", folder / f"{name}.key",
                "-out", folder / f"{name}.csr")
        openssl("x509", "-req", "-in", folder / f"{name}.csr", "-CA", folder / f"{ca}.pem", "-CAkey",
                folder / f"{ca}.key", "-CAcreateserial", "-days", "2", "-extfile", folder / "san.ext",
                "-out", folder / f"{name}.pem")
        made[name], made[f"{name}.key"] = folder / f"{name}.pem", folder / f"{name}.key"
    return made


def storescu(port: int, *tls: str, files) -> subprocess.CompletedProcess:
    return dcmtk("storescu", *tls, "-aec", "CHESTAID", "127.0.0.1", port, *files, check=False, timeout=60)


def test_tls_in_with_client_certificates_and_out_to_a_tls_pacs(ungated_run, tmp_path, caplog):
    certs = certificates(tmp_path / "certs")
    pacs_port = free_port()
    received = tmp_path / "pacs"
    received.mkdir()
    pacs = subprocess.Popen([str(DCMTK / "storescp"), "+tls", certs["pacs.key"], certs["pacs"], "+cf", certs["ca"],
                             "-aet", "PACS", "-od", str(received), "-uf", str(pacs_port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(pacs_port, 30, pacs)
    caplog.set_level("WARNING", logger="pynetdicom")
    caplog.set_level("INFO", logger="chestaid.node")
    tls = TlsSettings(certs["node"], certs["node.key"], certs["ca"], require_client_cert=True)
    node = Node(NodeConfig(run=Path(ungated_run.root), store=tmp_path / "store", port=0, host="127.0.0.1",
                           send_to=[f"PACS@127.0.0.1:{pacs_port}+tls", f"PACS@127.0.0.1:{pacs_port}"],
                           heat_maps=False, send_tries=1, tls=tls, per_image_results=True)).start()
    files = [phantom(tmp_path / f"{k}.dcm", "1.2.826.0.1.3680043.8.498.81", k) for k in range(3)]
    try:
        ok = storescu(node.port, "+tls", certs["modality.key"], certs["modality"], "+cf", certs["ca"], files=files[:2])
        assert ok.returncode == 0, ok.stderr
        anonymous = storescu(node.port, "+tla", "+cf", certs["ca"], files=files[2:])
        plain = storescu(node.port, files=files[2:])
        impostor = storescu(node.port, "+tls", certs["impostor.key"], certs["impostor"], "+cf", certs["ca"],
                            files=files[2:])
        assert anonymous.returncode != 0 and plain.returncode != 0 and impostor.returncode != 0
        deadline = time.time() + 120
        while time.time() < deadline and len(node.store.outbox("sent")) < 2:
            time.sleep(0.5)
        rows = node.store.instances()
        outbox = node.store.outbox()
    finally:
        node.stop()
        pacs.terminate()
        pacs.wait(10)
    assert len(rows) == 2  # only the modality with a certificate got in
    sent = [o for o in outbox if o["state"] == "sent"]
    assert len(sent) == 2 and all(o["destination"].endswith("+tls") for o in sent)
    assert len(list(received.iterdir())) == 2  # the SRs, over TLS
    dead = [o for o in outbox if not o["destination"].endswith("+tls")]  # the same PACS in plain TCP: refused
    assert dead and all(o["state"] == "dead" and o["last_error"] for o in dead)
    failures = [m for m in caplog.messages if "TLS handshake with 127.0.0.1" in m]
    assert len(failures) >= 3 and all("\n" not in m for m in failures)


def test_a_destination_with_a_certificate_the_node_cannot_verify_is_a_reason_in_the_outbox(ungated_run, tmp_path):
    certs = certificates(tmp_path / "certs")
    port = free_port()
    received = tmp_path / "pacs"
    received.mkdir()
    pacs = subprocess.Popen([str(DCMTK / "storescp"), "+tls", certs["impostor.key"], certs["impostor"], "-ic",
                             "-aet", "PACS", "-od", str(received), str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, 30, pacs)
    node = Node(NodeConfig(run=Path(ungated_run.root), store=tmp_path / "store", port=0, host="127.0.0.1",
                           send_to=[f"PACS@127.0.0.1:{port}+tls"], heat_maps=False, send_tries=1, per_image_results=True,
                           tls=TlsSettings(certs["node"], certs["node.key"], certs["ca"]))).start()
    try:
        done = storescu(node.port, "+tls", certs["modality.key"], certs["modality"], "+cf", certs["ca"],
                        files=[phantom(tmp_path / "a.dcm", "1.2.826.0.1.3680043.8.498.82", 0)])
        assert done.returncode == 0, done.stderr
        deadline = time.time() + 120
        while time.time() < deadline and not node.store.outbox("dead"):
            time.sleep(0.5)
        dead = node.store.outbox("dead")
    finally:
        node.stop()
        pacs.terminate()
        pacs.wait(10)
    assert dead and "certificate was refused" in dead[0]["last_error"] and not list(received.iterdir())
