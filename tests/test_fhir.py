"""FHIR R4 out: a transaction Bundle per scored image (a preliminary DiagnosticReport, the model as a Device, an
Observation per finding) that validates with the R4B models of `fhir.resources` (R4B's DiagnosticReport,
Observation and Device are R4's), reaching a loopback FHIR endpoint exactly once across an outage: the endpoint
is down when the results are made, then loses its first answer after doing the work; the node's outbox retries
and the conditional creates (`ifNoneExist`) keep one report per image."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from chestaid.apps.node.node import Node, NodeConfig
from node_helpers import DCMTK, dcmsend, free_port, phantom

fhir_bundle = pytest.importorskip("fhir.resources.R4B.bundle", reason="fhir.resources is a test dependency")
pytestmark = [pytest.mark.peers, pytest.mark.skipif(not (DCMTK / "dcmsend").is_file(), reason="needs DCMTK")]


class FhirServer:
    """A FHIR endpoint that processes transactions with conditional creates (POST with ifNoneExist) and conditional
    updates (PUT Kind?identifier=…), remembers what it holds (`created`: the first version of each; `current`: the
    last), and can drop its answer (after doing the work) to the first `drop_answers` bundles."""

    def __init__(self, port: int, drop_answers: int = 1) -> None:
        self.created: dict[str, dict] = {}  # identifier → resource
        self.current: dict[str, dict] = {}
        self.bundles: list[dict] = []
        self.drop = drop_answers
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                bundle = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.bundles.append(bundle)
                for entry in bundle["entry"]:
                    request = entry["request"]
                    key = (request["url"] if request["method"] == "PUT" else request["ifNoneExist"]).split("|", 1)[1]
                    server.created.setdefault(key, entry["resource"])
                    if request["method"] == "PUT" or key not in server.current:
                        server.current[key] = entry["resource"]
                if server.drop > 0:
                    server.drop -= 1
                    self.send_response(503)  # the work is done, the answer is lost
                    self.end_headers()
                    return
                body = json.dumps({"resourceType": "Bundle", "type": "transaction-response"}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/fhir+json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_a_report_bundle_per_scored_image_valid_r4_exactly_once_across_an_outage(ungated_run, tmp_path):
    port = free_port()
    node = Node(NodeConfig(run=Path(ungated_run.root), store=tmp_path / "store", port=0, host="127.0.0.1",
                           fhir_url=[f"http://127.0.0.1:{port}/fhir"], heat_maps=False, retry_delay=0.5,
                           study_quiet_period=None,
                           max_retry_delay=1.0, send_tries=20)).start()
    server = None
    try:
        files = [phantom(tmp_path / f"{k}.dcm", "1.2.826.0.1.3680043.8.498.95", k) for k in range(2)]
        _, report = dcmsend(node.port, files)
        assert len(report["ok"]) == 2, report["text"]
        deadline = time.time() + 120
        while time.time() < deadline and not any(o["attempts"] or o["down_tries"] for o in node.store.outbox()):
            time.sleep(0.2)  # the endpoint is down: the first tries fail
        assert node.store.outbox("pending") and node.store.outbox()[0]["last_error"]
        server = FhirServer(port)
        while time.time() < deadline and len(node.store.outbox("sent")) < 2:
            time.sleep(0.3)
        sent = node.store.outbox("sent")
    finally:
        node.stop()
        if server is not None:
            server.stop()
    assert len(sent) == 2 and {o["kind"] for o in sent} == {"fhir"}
    assert len(server.bundles) == 3  # one answer was lost and its bundle sent again
    reports = [r for r in server.created.values() if r["resourceType"] == "DiagnosticReport"]
    assert len(reports) == 2  # exactly one per image
    assert len([r for r in server.created.values() if r["resourceType"] == "Device"]) == 1
    for bundle in server.bundles:
        parsed = fhir_bundle.Bundle.model_validate(bundle)
        kinds = [e.resource.__resource_type__ for e in parsed.entry]
        assert kinds.count("DiagnosticReport") == 1 and kinds.count("Device") == 1
    report = reports[0]
    assert report["status"] == "preliminary" and report["code"]["coding"][0]["code"] == "36554-4"
    assert report["subject"]["identifier"]["value"] == "PHANTOM01"
    assert report["imagingStudy"][0]["identifier"]["value"] == "urn:oid:1.2.826.0.1.3680043.8.498.95"
    observations = [r for r in server.created.values() if r["resourceType"] == "Observation"]
    effusion = next(o for o in observations if o["code"]["text"] == "Effusion")
    assert effusion["code"]["coding"][0] == {"system": "http://snomed.info/sct", "code": "60046008",
                                             "display": "Pleural effusion"}
    assert effusion["interpretation"][0]["coding"][0]["code"] in ("POS", "NEG")
    assert effusion["valueQuantity"]["unit"] in ("calibrated risk score", "uncalibrated score")
    assert "PHANTOM^TEST" not in json.dumps(server.bundles)  # no patient name


def test_a_study_report_is_one_valid_r4_diagnostic_report_per_study_updated_in_place_when_amended(tmp_path):
    """The study writer: one DiagnosticReport per study (conditional update keyed by the study and the run), the
    study's findings as Observations, the images not read named in its conclusion; version 2 is "amended" under
    the same identifier."""
    import numpy as np
    import pydicom

    from chestaid.apps.node.result_types import StudyImage, StudyResult, Triage
    from chestaid.apps.node.results import Algorithm
    from chestaid.apps.node.study_fhir import study_report_bundle

    study = "1.2.826.0.1.3680043.8.498.96"
    pa, lateral = (pydicom.dcmread(phantom(tmp_path / f"{k}.dcm", study, k), stop_before_pixels=True) for k in (0, 1))
    lateral.ViewPosition = "LL"
    labels = ["Effusion", "Pneumothorax"]
    images = [StudyImage(pa, "scored", "", np.array([0.7, 0.1]), np.array([True, False])),
              StudyImage(lateral, "not read", "DICOM ViewPosition is LL: a lateral view")]
    algorithm = Algorithm("1.0", "run-x", "ab" * 32)
    first, uid1 = study_report_bundle(StudyResult(images, algorithm, labels, np.array([0.7, 0.1]),
                                                  np.array([True, False]), None, 1, [str(pa.SOPInstanceUID)]))
    second, uid2 = study_report_bundle(StudyResult(images, algorithm, labels, np.array([0.7, 0.1]),
                                                   np.array([True, False]), None, 2,
                                                   [str(pa.SOPInstanceUID), str(lateral.SOPInstanceUID)],
                                                   triage=Triage("critical", "urgent", ("Effusion",), "critical",
                                                                 "site-1 (sha256 abc)")))
    assert uid1 != uid2  # each version its own outbox row
    for bundle in (first, second):
        parsed = fhir_bundle.Bundle.model_validate(bundle)
        assert [e.resource.__resource_type__ for e in parsed.entry].count("DiagnosticReport") == 1
    reports = [e for b in (first, second) for e in b["entry"] if e["resource"]["resourceType"] == "DiagnosticReport"]
    assert reports[0]["request"] == reports[1]["request"] and reports[0]["request"]["method"] == "PUT"
    assert [r["resource"]["status"] for r in reports] == ["preliminary", "amended"]
    report = reports[1]["resource"]
    assert report["code"]["coding"][0]["code"] == "18748-4" and len(report["result"]) == 2
    assert "1 of 2 image(s) read" in report["conclusion"] and "not read: DICOM ViewPosition is LL" in report["conclusion"]
    assert report["imagingStudy"][0]["identifier"]["value"] == f"urn:oid:{study}"
    (task,) = [e["resource"] for e in second["entry"] if e["resource"]["resourceType"] == "Task"]
    assert task["priority"] == "stat" and task["focus"]["identifier"]["value"] == f"urn:oid:{study}"
    assert not [e for e in first["entry"] if e["resource"]["resourceType"] == "Task"]  # no rules, no task
