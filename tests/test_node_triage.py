"""Triage that reaches the RIS (issue 44): a site's rules file, validated at start (a typo is refused with its line);
each study's level delivered as an HL7 v2.5.1 ORU^R01 over MLLP through the durable outbox — to a RIS stand-in
that parses and validates every message with hl7apy's STRICT v2.5.1 validation — exactly once per study across a
node restart and a RIS that is down for two minutes and then answers AE once; a study ordered STAT stays STAT when
chestaid finds nothing."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid
from typer.testing import CliRunner

from node_helpers import DCMTK, dcmsend, free_port, phantom
from test_node import run, start_node, wait_for  # noqa: F401 - run: the module's fixture

hl7apy = pytest.importorskip("hl7apy", reason="hl7apy (strict HL7 v2 validation) is a test dependency")
pytestmark = [pytest.mark.peers, pytest.mark.skipif(not (DCMTK / "dcmsend").is_file(), reason="needs DCMTK")]
DOWN = 120.0  # seconds the RIS is down while the node makes and queues its messages
RULES = """version: site-test-1
findings:
  Effusion: {level: critical, threshold: 1.0}    # a score never reaches 1.0: chestaid finds nothing
  Atelectasis: {level: urgent, threshold: 1.0}
"""


class Ris:
    """An MLLP listener: every message parsed and validated (hl7apy, STRICT, v2.5.1); answers AE to the first
    `errors` messages, AR to an invalid one, AA otherwise; keeps what it accepted by message control ID."""

    def __init__(self, port: int, errors: int = 1) -> None:
        self.accepted: dict[str, object] = {}
        self.duplicates: list[str] = []
        self.invalid: list[str] = []
        self.errors, self.answered_ae = errors, []
        self.server = socket.create_server(("127.0.0.1", port))
        self.server.settimeout(0.5)
        self._stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self.server.accept()
            except OSError:
                continue
            threading.Thread(target=self._connection, args=(connection,), daemon=True).start()

    def _connection(self, connection: socket.socket) -> None:
        from hl7apy.consts import VALIDATION_LEVEL
        from hl7apy.parser import parse_message

        data = b""
        with connection:
            while True:
                chunk = connection.recv(65536)
                if not chunk:
                    return
                data += chunk
                while b"\x1c\r" in data:
                    frame, data = data.split(b"\x1c\r", 1)
                    text = frame.lstrip(b"\x0b").decode()
                    control = text.split("\r")[0].split("|")[9]
                    try:
                        message = parse_message(text, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
                        assert message.validate()
                        code = "AA"
                    except Exception as e:  # noqa: BLE001 - recorded and rejected
                        self.invalid.append(f"{control}: {e}")
                        code = "AR"
                    if code == "AA" and self.errors > 0:
                        self.errors -= 1
                        self.answered_ae.append(control)
                        code = "AE"
                    if code == "AA":
                        if control in self.accepted:
                            self.duplicates.append(control)
                        self.accepted[control] = message
                    ack = (f"MSH|^~\\&|RIS||CHESTAID||{time.strftime('%Y%m%d%H%M%S')}||ACK^R01^ACK|A{control[:19]}|P|"
                           f"2.5.1\rMSA|{code}|{control}" + ("|database busy" if code == "AE" else "") + "\r")
                    connection.sendall(b"\x0b" + ack.encode() + b"\x1c\r")

    def stop(self) -> None:
        self._stop.set()
        self.server.close()


def test_a_rules_file_with_a_typo_is_refused_at_start_with_its_line(run, tmp_path):  # noqa: F811
    from chestaid.apps.cli import app

    rules = tmp_path / "rules.yaml"
    rules.write_text("version: site-test-1\nfindings:\n  Efusion: critical\n  Atelectasis: {level: urgnt}\n")
    said = CliRunner().invoke(app, ["node", str(run.root), "--store", str(tmp_path / "store"), "--port", "0",
                                    "--triage-rules", str(rules)])
    assert said.exit_code != 0
    assert f"{rules}:3: findings.Efusion: not a finding of the run" in said.output, said.output
    assert f"{rules}:4: findings.Atelectasis.level: 'urgnt' is not a level (routine, urgent, critical)" in said.output
    assert "Traceback" not in said.output


def test_one_oru_per_study_over_mllp_exactly_once_across_a_restart_and_a_ris_down_then_ae(run, tmp_path,  # noqa: F811
                                                                                           caplog):
    caplog.set_level("DEBUG", logger="chestaid")
    ris_port = free_port()
    (tmp_path / "rules.yaml").write_text(RULES)
    options = dict(heat_maps=False, study_quiet_period=2.0, per_image_results=False, triage_rules=tmp_path / "rules.yaml",
                   send_to=[f"mllp://127.0.0.1:{ris_port}"], retry_delay=0.5, max_retry_delay=5.0, send_timeout=10.0)
    began = time.time()
    studies, ordered = [], {}
    for k in range(30):
        study = generate_uid()
        path = phantom(tmp_path / f"s{k}.dcm", study, k, patient=f"P{k:04d}", seed=k)
        if k in (3, 4):  # ordered STAT, ordered HIGH
            ds = pydicom.dcmread(path)
            ds.RequestedProcedurePriority = "STAT" if k == 3 else "HIGH"
            ds.save_as(path, enforce_file_format=True)
        ordered[study] = {3: "S", 4: "A"}.get(k, "R")
        studies.append((study, path))
    node = start_node(run, tmp_path / "store", **options)
    ris = None
    try:
        dcmsend(node.port, [p for _, p in studies[:15]])
        wait_for(lambda: len(node.store.outbox("pending")) == 15, 120, what="15 messages queued, the RIS down")
        node.stop()  # a restart while they wait
        node = start_node(run, tmp_path / "store", **options)
        dcmsend(node.port, [p for _, p in studies[15:]])
        wait_for(lambda: len(node.store.outbox("pending")) == 30, 120, what="30 messages queued")
        time.sleep(max(0.0, DOWN - (time.time() - began)))
        assert not node.store.outbox("sent")
        ris = Ris(ris_port, errors=1)  # up at last; its first answer is AE
        wait_for(lambda: len(ris.accepted) == 30, 180, 0.5,
                 lambda: f"30 accepted (accepted {len(ris.accepted)}, invalid {ris.invalid[:2]})")
        time.sleep(3)  # a duplicate would come now
        outbox = node.store.outbox()
    finally:
        node.stop()
        if ris is not None:
            ris.stop()
    assert ris.invalid == [] and ris.duplicates == [] and len(ris.answered_ae) == 1
    assert ris.answered_ae[0] in ris.accepted  # the message answered AE was sent again, and taken once
    assert {o["state"] for o in outbox} == {"sent"} and len(outbox) == 30
    by_study = {}
    for message in ris.accepted.values():
        er7 = message.to_er7()
        study = next(line.split("|")[20] for line in er7.split("\r") if line.startswith("OBR|"))
        priority = next(line.split("|")[9].split("^")[0] for line in er7.split("\r") if line.startswith("TQ1|"))
        assert "RULES^Triage rules version^99CHESTAID||site-test-1 (sha256 " in er7
        by_study[study] = priority
    assert by_study == ordered  # one per study; STAT stays STAT and HIGH urgent though nothing was found
    assert "PHANTOM" not in caplog.text  # the name travels in PID-5 (v2.5.1 requires it), never into a log line
