"""Studies through a real PACS (issue 45's acceptance): a real Orthanc holds a day's chest studies — PA + lateral,
PA only, AP portable, two PAs, a study with a CT scout, a study of laterals only, a study sent in two associations
20 s apart, a study whose last image comes after its result was sent — and sends them to the node by C-STORE and by
STOW-RS (its DICOMweb plugin). The node is killed with kill -9 while studies are being assembled and started again.
Orthanc ends with one current study SR per study (plus the amended one and its predecessor for the late image),
each referencing all of its study's images, dciodvfy-clean and read back by highdicom; no per-image SR reaches it;
a FHIR stand-in holds one DiagnosticReport per study; the node's log reports each study version once."""

from __future__ import annotations

import json
import re
import signal
import threading
import time
from pathlib import Path

import highdicom as hd
import pydicom
import pytest
from pydicom.uid import generate_uid

from node_helpers import ORTHANC, Orthanc, dciodvfy_errors, free_port, node_process, phantom, wait_port
from test_fhir import FhirServer
from test_node import run, settled, stop, wait_for  # noqa: F401 - run: the module's fixture

PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
CT = "1.2.840.10008.5.1.4.1.1.2"
pytestmark = [pytest.mark.peers, pytest.mark.skipif(not ORTHANC.is_file() or not PLUGIN.is_file(),
                                                    reason="Orthanc and orthanc-dicomweb are test dependencies")]
QUIET = 30.0  # the node's --study-quiet-period: longer than the 20 s between a study's two associations


def image(folder: Path, study: str, k: int, patient: str, view: str = "PA", ct_scout: bool = False) -> Path:
    path = phantom(folder / f"{study[-12:]}_{k}.dcm", study, k, patient=patient, seed=k)
    ds = pydicom.dcmread(path)
    ds.ViewPosition = view
    if ct_scout:  # a CT localizer of the chest
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = CT
        ds.Modality, ds.ImageType = "CT", ["ORIGINAL", "PRIMARY", "LOCALIZER"]
        ds.SeriesInstanceUID = generate_uid(entropy_srcs=[study, "scout"])
    ds.save_as(path, enforce_file_format=True)
    return path


def the_day(folder: Path) -> dict[str, dict]:
    """22 studies: name → {files, how (C-STORE or STOW-RS), read (images the model reads)}."""
    shapes = {"pa+lateral": (["PA", "LL"], 5), "pa": (["PA"], 4), "ap portable": (["AP"], 3),
              "two pas": (["PA", "PA"], 3), "ct scout": (["PA", "scout"], 3), "laterals only": (["LL", "RL"], 2)}
    folder.mkdir(parents=True, exist_ok=True)
    day, n = {}, 0
    for shape, (views, count) in shapes.items():
        for c in range(count):
            study, n = generate_uid(), n + 1
            files = [image(folder, study, k, f"P{n:04d}", "" if v == "scout" else v, ct_scout=v == "scout")
                     for k, v in enumerate(views)]
            day[f"{shape} {c}"] = {"study": study, "files": files, "how": "STOW-RS" if c % 2 else "C-STORE",
                                   "read": sum(v in ("PA", "AP") for v in views)}
    for name, views in (("two associations", ["PA", "LL"]), ("late image", ["PA", "PA"])):
        study, n = generate_uid(), n + 1
        day[name] = {"study": study, "files": [image(folder, study, k, f"P{n:04d}", v) for k, v in enumerate(views)],
                     "how": "C-STORE", "read": 2 if name == "late image" else 1}
    return day


def study_results(orthanc: Orthanc, study: str) -> list[pydicom.Dataset]:
    """The study SRs Orthanc holds for a study."""
    series = orthanc.post("/tools/find", json.dumps({"Level": "Series", "Query": {"StudyInstanceUID": study,
                                                                                   "Modality": "SR"}}).encode(),
                          "application/json")
    found = [i for s in series for i in orthanc.get(f"/series/{s}")["Instances"]]
    return [ds for ds in (pydicom.dcmread(_file(orthanc, i)) for i in found)
            if str(ds.SeriesDescription).startswith("chestaid")]


def texts(item) -> list[str]:
    """Every TEXT content item's value under an SR content item (or the whole document)."""
    found = [str(item.TextValue)] if "TextValue" in item else []
    for child in item.get("ContentSequence", []):
        found += texts(child)
    return found


def _file(orthanc: Orthanc, instance: str):
    import io

    return io.BytesIO(orthanc.get(f"/instances/{instance}/file"))


def evidence(ds) -> set[str]:
    return {str(i.ReferencedSOPInstanceUID) for s in ds.CurrentRequestedProcedureEvidenceSequence
            for series in s.ReferencedSeriesSequence for i in series.ReferencedSOPSequence}


def send(orthanc: Orthanc, how: str, resource: str) -> None:
    body = json.dumps({"Resources": [resource], "Synchronous": True}).encode()
    orthanc.post("/modalities/chestaid/store" if how == "C-STORE" else "/dicom-web/servers/chestaid/stow", body,
                 "application/json")


def test_a_day_of_studies_from_orthanc_one_result_per_study_across_kill_9(run, tmp_path):  # noqa: F811
    port, web, fhir_port = free_port(), free_port(), free_port()
    orthanc = Orthanc(tmp_path / "orthanc", port, extra={
        "Plugins": [str(PLUGIN)], "DicomWeb": {"Enable": True, "Root": "/dicom-web/",
                                               "Servers": {"chestaid": [f"http://127.0.0.1:{web}/dicom-web/"]}}})
    fhir = FhirServer(fhir_port)  # loses its first answer after doing the work
    store, log = tmp_path / "store", tmp_path / "node.log"
    args = ["--dicomweb-port", str(web), "--host", "127.0.0.1", "--study-quiet-period", str(QUIET),
            "--send-to", f"ORTHANC@127.0.0.1:{orthanc.dicom}", "--fhir-url", f"http://127.0.0.1:{fhir_port}/fhir",
            "--retry-delay", "0.5", "--max-retry-delay", "2", "--allow", "ORTHANC"]
    node = node_process(Path(run.root), store, port, *args, log=log)
    day = the_day(tmp_path / "day")
    ids = {}
    try:
        wait_port(web, 60, node)
        parents = {}
        for name, study in day.items():  # the day's images in the PACS
            answers = [orthanc.post("/instances", f.read_bytes()) for f in study["files"]]
            ids[name], parents[name] = [a["ID"] for a in answers], answers[0]["ParentStudy"]
        names = list(day)
        first_half = [n for n in names[:11] if n not in ("two associations", "late image")]
        for name in first_half:
            send(orthanc, day[name]["how"], parents[name])
        wait_for(lambda: settled(store, destinations=False), 120, 0.5, "the first half scored")
        node.send_signal(signal.SIGKILL)  # while every study of the first half waits out its quiet period
        node.wait(30)
        assert not any("result version" in line for line in log.read_text().splitlines())
        node = node_process(Path(run.root), store, port, *args, log=log)
        send(orthanc, "C-STORE", ids["two associations"][0])  # its PA now, its lateral 20 s later
        began = time.time()
        others = threading.Thread(target=lambda: [
            send(orthanc, day[n]["how"], parents[n])
            for n in names[11:] if n not in ("two associations", "late image")])
        others.start()
        send(orthanc, "C-STORE", ids["late image"][0])  # its first PA; the second comes after the result
        time.sleep(max(0.0, 20 - (time.time() - began)))
        send(orthanc, "C-STORE", ids["two associations"][1])
        assert time.time() - began < QUIET - 2  # (else the test, not the node, made this study two)
        others.join()
        wait_for(lambda: len(study_results(orthanc, day["late image"]["study"])) == 1, 180, 1, "the late study's v1")
        send(orthanc, "C-STORE", ids["late image"][1])
        wait_for(lambda: all(len(study_results(orthanc, s["study"])) == (2 if n == "late image" else 1)
                             for n, s in day.items()), 240, 2,
                 lambda: "study results: " + str({n: len(study_results(orthanc, s["study"])) for n, s in day.items()}))
        wait_for(lambda: settled(store), 120, 1, "everything sent")
        time.sleep(2)  # a duplicate would arrive now
    finally:
        stop(node)
        fhir.stop()
    try:
        _check_the_pacs(orthanc, day, tmp_path)
    finally:
        orthanc.stop()
    # the FHIR stand-in: one DiagnosticReport per study; the late study's amended in place
    reports = {k: r for k, r in fhir.current.items() if r["resourceType"] == "DiagnosticReport"}
    assert len(reports) == len(day)
    by_study = {r["imagingStudy"][0]["identifier"]["value"].removeprefix("urn:oid:"): r for r in reports.values()}
    assert set(by_study) == {s["study"] for s in day.values()}
    assert by_study[day["late image"]["study"]]["status"] == "amended"
    assert "0 of 2 image(s) read" in by_study[day["laterals only 0"]["study"]]["conclusion"]
    # each study version reported once across the kill -9 and the restart
    reported = re.findall(r"study (\S+): result version (\d+)", log.read_text())
    assert sorted(reported) == sorted({(s["study"], str(v)) for n, s in day.items()
                                       for v in ((1, 2) if n == "late image" else (1,))}), reported
    # `chestaid worklist --json`: one row per study, with its images
    from typer.testing import CliRunner

    from chestaid.apps.cli import app

    listed = json.loads(CliRunner().invoke(app, ["worklist", str(store), "--json"]).stdout)
    assert sorted(r["StudyInstanceUID"] for r in listed) == sorted(s["study"] for s in day.values())
    for name, study in day.items():
        row = next(r for r in listed if r["StudyInstanceUID"] == study["study"])
        assert len(row["images"]) == len(study["files"]) and row["scored"] == study["read"], (name, row)
        assert row["not_read"] == len(study["files"]) - study["read"], (name, row)


def _check_the_pacs(orthanc: Orthanc, day: dict, tmp_path: Path) -> None:
    for name, study in day.items():
        results = sorted(study_results(orthanc, study["study"]), key=lambda ds: str(ds.SeriesDescription))
        assert all("study result" in str(ds.SeriesDescription) for ds in results), (name, "a per-image SR was sent")
        current = results[-1]
        uids = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in study["files"]}
        assert evidence(current) == uids, name  # every image of the study, read or not
        path = tmp_path / f"{current.SOPInstanceUID}.dcm"
        current.save_as(path)
        assert dciodvfy_errors(path) == [], (name, dciodvfy_errors(path))
        read_back = hd.sr.srread(path)
        groups = hd.sr.MeasurementReport.from_sequence([read_back]).get_image_measurement_groups()
        labels = {str(g.tracking_identifier) for g in groups}
        not_read = [g for g in groups if str(g.tracking_identifier).startswith("not analysed (image")]
        assert len(not_read) == len(study["files"]) - study["read"], (name, labels)
        if name.startswith(("pa+lateral", "ct scout")):  # listed as not read, with the reason; not refused
            said = texts(not_read[0][0])
            assert any(t.startswith("not read: DICOM") for t in said), said
            assert not any(t.startswith("refused") for t in texts(read_back))
        if name == "late image":
            assert "v2" in str(current.SeriesDescription)
            previous = current.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
            assert previous.ReferencedSOPInstanceUID == results[0].SOPInstanceUID
