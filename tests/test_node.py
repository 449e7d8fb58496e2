"""The DICOM node (issue 24) against real peers: DCMTK's echoscu/dcmsend/storescu as modalities and storescp
(with its faults) as a destination, a real Orthanc as the PACS, dciodvfy on every object the node makes."""

from __future__ import annotations

import json
import re
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pydicom
import pytest
import typer
from pydicom.data import get_testdata_file
from typer.testing import CliRunner

from chestaid.apps.node.commands import node as node_command, worklist as worklist_command
from chestaid.apps.node.node import Node, NodeConfig
from chestaid.apps.node.results import CAPTION
from chestaid.store import Store
from node_helpers import (DCMTK, ORTHANC, Orthanc, dciodvfy_errors, dcmsend, dcmtk, free_port, node_process, phantom,
                          phantoms, read_report, wait_port)

data_store = pytest.importorskip("data_store", reason="pydicom-data is a test dependency")
CORPUS = Path(data_store.__file__).parent / "data"
pytestmark = [pytest.mark.peers,
              pytest.mark.skipif(not (DCMTK / "dcmsend").is_file() or shutil.which("dciodvfy") is None,
                                 reason="DCMTK and dicom3tools are test dependencies")]


@pytest.fixture(scope="module")
def run(request):
    """conftest's tiny ungated run; CHESTAID_NODE_TEST_RUN=DIR reuses a run built before (while developing)."""
    from chestaid.core.run_paths import RunPaths

    given = os.environ.get("CHESTAID_NODE_TEST_RUN")
    return RunPaths(given) if given else request.getfixturevalue("ungated_run")


def _app() -> typer.Typer:
    app = typer.Typer(add_completion=False)
    app.command("node")(node_command)
    app.command("worklist")(worklist_command)
    return app


def wait_for(condition, timeout: float = 120.0, step: float = 0.2, what="condition"):
    """`condition()`'s first true value within `timeout` s; else a TimeoutError naming `what` (text, or a function
    giving it then)."""
    end = time.time() + timeout
    while time.time() < end:
        value = condition()
        if value:
            return value
        time.sleep(step)
    raise TimeoutError(f"{what() if callable(what) else what} not met after {timeout} s")


def settled(store_dir: Path, destinations: bool = True) -> bool:
    store = Store.open(store_dir)
    try:
        busy = store.counts().get("queued", 0)
        return busy == 0 and (not destinations or not store.outbox("pending"))
    finally:
        store.close()


def start_node(run, store: Path, **options) -> Node:
    """The node in this process; study results only where a test asks for them (study_quiet_period=S)."""
    options.setdefault("study_quiet_period", None)
    options.setdefault("per_image_results", True)
    return Node(NodeConfig(run=Path(run.root), store=store, port=0, host="127.0.0.1", **options)).start()


def storescp(folder: Path, port: int, *faults: str, aet: str = "DEST") -> subprocess.Popen:
    """DCMTK's storescp: unique file names, so that a second delivery of one object is a second file."""
    folder.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen([str(DCMTK / "storescp"), "-aet", aet, "-od", str(folder), "-uf", *faults, str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, 30, process)
    return process


def received_uids(folder: Path) -> list[str]:
    return [pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in sorted(folder.iterdir()) if p.is_file()]


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()


def truncated(path: Path, study: str) -> Path:
    phantom(path, study, 999)
    ds = pydicom.dcmread(path)
    ds.PixelData = ds.PixelData[:len(ds.PixelData) // 3]
    ds.save_as(path, enforce_file_format=True)
    return path


def mixed_send(folder: Path) -> dict[str, Path]:
    """Phantom chest CRs in every transfer syntax the node accepts, the real chest CR, CT and MR slices, a
    multi-frame file, an SR, and a file with truncated pixel data."""
    raw = phantoms(folder / "raw", 9, seed=1)
    files = {"explicit": raw[0]}
    encoders = {"jpeg_lossless_sv1": ("dcmcjpeg",), "jpeg_lossless": ("dcmcjpeg", "+el"),
                "jpeg_extended": ("dcmcjpeg", "+ee"), "jpeg_baseline": ("dcmcjpeg", "+eb"),
                "jpegls": ("dcmcjpls",), "jpegls_near": ("dcmcjpls", "+en"), "rle": ("dcmcrle",)}
    for k, (name, (tool, *args)) in enumerate(encoders.items(), start=1):
        files[name] = folder / f"{name}.dcm"
        dcmtk(tool, *args, raw[k], files[name])
    ds = pydicom.dcmread(raw[8])
    ds.compress(pydicom.uid.JPEG2000Lossless)
    files["jpeg2000"] = folder / "jpeg2000.dcm"
    ds.save_as(files["jpeg2000"], enforce_file_format=True)
    files["chest_cr_j2k"] = CORPUS / "RG1_J2KR.dcm"
    files["ct"], files["mr"] = Path(get_testdata_file("CT_small.dcm")), Path(get_testdata_file("MR_small.dcm"))
    files["multiframe"] = CORPUS / "emri_small.dcm"
    files["sr"] = Path(get_testdata_file("test-SR.dcm"))
    files["truncated"] = truncated(folder / "truncated.dcm", ds.StudyInstanceUID)
    return files


def uid_of(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def test_receive_every_syntax_give_each_a_state_results_pass_dciodvfy_duplicates_not_rescored(run, tmp_path,
                                                                                               caplog):
    files = mixed_send(tmp_path / "in")
    store_dir = tmp_path / "store"
    caplog.set_level("INFO", logger="chestaid.node")
    node = start_node(run, store_dir)
    try:
        assert "Success" in dcmtk("echoscu", "-v", "-aec", "CHESTAID", "127.0.0.1", node.port).stderr
        _, report = dcmsend(node.port, files.values())
        assert len(report["ok"]) == len(files) and not report["failed"], report["text"]
        wait_for(lambda: settled(store_dir, False), what="all scored")
        rows = {r["sop_uid"]: r for r in node.store.instances()}
        state = {name: (rows[uid_of(p)]["state"], rows[uid_of(p)]["reason"]) for name, p in files.items()}
        for name in ("explicit", "jpeg_lossless_sv1", "jpeg_lossless", "jpeg_baseline", "jpegls",
                     "jpegls_near", "rle", "jpeg2000", "chest_cr_j2k"):
            assert state[name] == ("scored", ""), (name, state[name])
        # accepted, but no decoder here reads 12-bit JPEG Extended: the decoder's reason, nothing else affected
        assert state["jpeg_extended"][0] == "unreadable" and "cannot be decoded" in state["jpeg_extended"][1]
        assert state["ct"][0] == "refused" and "Modality is CT" in state["ct"][1]
        assert state["mr"][0] == "refused" and "Modality is MR" in state["mr"][1]
        assert state["multiframe"][0] == "unreadable" and "multi-frame" in state["multiframe"][1]
        assert state["truncated"][0] == "unreadable" and state["truncated"][1]
        assert state["sr"][0] == "ignored" and "no pixel data" in state["sr"][1]
        assert len(rows) == len(files)
        scored_at = {uid: r["scored_at"] for uid, r in rows.items()}
        # a resend of everything is acknowledged and adds nothing: no second row, no second scoring
        _, again = dcmsend(node.port, files.values())
        assert len(again["ok"]) == len(files) and not again["failed"], again["text"]
        time.sleep(1.5)
        rows = {r["sop_uid"]: r for r in node.store.instances()}
        assert len(rows) == len(files) and {u: r["scored_at"] for u, r in rows.items()} == scored_at
        assert any("duplicate SOPInstanceUID" in m for m in caplog.messages)
        # one line per instance with UIDs, never a patient's name or ID
        assert not any("PHANTOM^TEST" in m or "PHANTOM01" in m or "9RG1" in m for m in caplog.messages)
    finally:
        node.stop()
    results = sorted((store_dir / "results").rglob("*.dcm"))
    objects = [pydicom.dcmread(p) for p in results]
    srs = [o for o in objects if o.Modality == "SR"]
    scs = [o for o in objects if o.Modality != "SR"]
    assert len(srs) == 14 and len(scs) == 9  # an SR per image (scored, refused, unreadable), a map per scored one
    for path in results:
        assert dciodvfy_errors(path) == [], path
    calibrated = (Path(run.root) / "calibration.json").is_file()  # the SR says which the score is
    concept = ("RISK", "Calibrated risk score, not a probability") if calibrated else (
        "UNCALSCORE", "Uncalibrated score, not a risk or probability")
    sr = next(o for o in srs if o.ContentSequence[-1].ContentSequence[0].get("ContentSequence") and
              concept[0] in json.dumps(o.to_json_dict()))
    text = json.dumps(sr.to_json_dict())
    assert sr.PreliminaryFlag == "PRELIMINARY" and sr.VerificationFlag == "UNVERIFIED"
    assert concept[1] in text and "weights_sha256=" in text
    assert "run=" + Path(run.root).name in text and "1500" in sr.ContentTemplateSequence[0].TemplateIdentifier
    source = next(r for r in rows.values() if r["sop_uid"] == sr.CurrentRequestedProcedureEvidenceSequence[0]
                  .ReferencedSeriesSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
    assert sr.StudyInstanceUID == source["study_uid"] and source["state"] == "scored"
    refused_sr = [o for o in srs if "Reason the image was not analysed" in json.dumps(o.to_json_dict())]
    assert len(refused_sr) == 5 and any("Modality is CT" in json.dumps(o.to_json_dict()) for o in refused_sr)
    sc = scs[0]
    assert sc.SeriesDescription == CAPTION and sc.BurnedInAnnotation == "YES"
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID in rows
    band = sc.pixel_array[:40]  # the caption's yellow letters burned into the pixels above the map
    assert ((band[..., 0] > 200) & (band[..., 1] > 200) & (band[..., 2] < 80)).sum() > 200


def test_an_image_without_the_type_2_patient_and_study_attributes_still_gets_valid_results(run, tmp_path):
    """Modalities and anonymisers leave out PatientBirthDate, PatientSex ...; the SR and the heat map carry them
    empty, as DICOM allows (seen: 'no result objects (AttributeError: ... PatientBirthDate)')."""
    path = phantom(tmp_path / "bare.dcm", "1.2.826.0.1.3680043.8.498.7", 0)
    ds = pydicom.dcmread(path)
    for keyword in ("PatientBirthDate", "PatientSex", "PatientName", "StudyID", "StudyTime", "AccessionNumber",
                    "ReferringPhysicianName"):
        delattr(ds, keyword)
    ds.save_as(path)
    store_dir = tmp_path / "store"
    with start_node(run, store_dir) as node:
        dcmsend(node.port, [path])
        wait_for(lambda: settled(store_dir, False), what="scored")
        row = node.store.instances()[0]
    assert (row["state"], row["reason"]) == ("scored", "")
    results = sorted((store_dir / "results").rglob("*.dcm"))
    assert len(results) == 2 and sum(pydicom.dcmread(p).Modality == "SR" for p in results) == 1  # SR + heat map
    for result in results:
        assert dciodvfy_errors(result) == [], result
        assert "PatientBirthDate" in pydicom.dcmread(result, stop_before_pixels=True)


def test_worklist_command_highest_risk_first_json_and_status(run, tmp_path):
    store_dir = tmp_path / "store"
    files = phantoms(tmp_path / "in", 6, seed=2) + [Path(get_testdata_file("CT_small.dcm"))]
    with start_node(run, store_dir) as node:
        dcmtk("storescu", "-aec", "CHESTAID", "127.0.0.1", node.port, *files)
        wait_for(lambda: settled(store_dir, False), what="all scored")
    runner = CliRunner()
    table = runner.invoke(_app(), ["worklist", str(store_dir), "--instances"])
    assert table.exit_code == 0, table.output
    lines = table.output.strip().splitlines()
    assert lines[0].split("\t")[:6] == ["received", "PatientID", "AccessionNumber", "StudyInstanceUID",
                                        "SOPInstanceUID", "state"] and len(lines) == 8
    rows = json.loads(runner.invoke(_app(), ["worklist", str(store_dir), "--json", "--instances"]).output)
    risks = [r["risk"] for r in rows if r["risk"] is not None]
    assert len(risks) == 6 and risks == sorted(risks, reverse=True) and rows[-1]["state"] == "refused"
    assert rows[0]["PatientID"] == "PHANTOM01" and rows[0]["top_finding"] and rows[0]["scores"]
    refused = json.loads(runner.invoke(_app(), ["worklist", str(store_dir), "--json", "--status", "refused"]).output)
    assert [r["state"] for r in refused] == ["refused"]
    bad = runner.invoke(_app(), ["worklist", str(tmp_path / "nothing")])
    assert bad.exit_code != 0 and isinstance(bad.exception, Exception)


def test_failed_durable_write_is_0xA700_and_the_retry_succeeds(run, tmp_path):
    store_dir = tmp_path / "store"
    files = phantoms(tmp_path / "in", 3, seed=3)
    with start_node(run, store_dir, heat_maps=False) as node:
        blocked = node.store.instance_path(uid_of(files[1]), b"").parent
        assert all(node.store.instance_path(uid_of(f), b"").parent != blocked for f in (files[0], files[2]))
        blocked.parent.mkdir(parents=True, exist_ok=True)
        blocked.write_bytes(b"")  # a file where its folder must go: the durable write fails
        _, first = dcmsend(node.port, files, check=False)
        assert first["failed"] == [uid_of(files[1])] and "0xa700" in first["text"].lower(), first["text"]
        assert not node.store.has(uid_of(files[1])) and node.store.has(uid_of(files[0]))
        blocked.unlink()
        assert dcmsend(node.port, [files[1]])[1]["ok"] == [uid_of(files[1])]
        assert node.store.has(uid_of(files[1])) and len(node.store.instances()) == 3


def test_allow_list_and_four_concurrent_senders_then_a_fifth_rejected_as_transient_and_retried(run, tmp_path,
                                                                                                caplog):
    caplog.set_level("WARNING", logger="pynetdicom")  # first: set_level also sets the capturing handler's level
    caplog.set_level("INFO", logger="chestaid")
    store_dir = tmp_path / "store"
    sets = [phantoms(tmp_path / f"in{k}", 100, seed=10 + k) for k in range(5)]
    allow = "MOD0,MOD1,MOD2,MOD3,MOD4"
    with start_node(run, store_dir, allow=allow.split(","), max_associations=4, heat_maps=False) as node:
        intruder = dcmtk("echoscu", "-aet", "INTRUDER", "-aec", "CHESTAID", "127.0.0.1", node.port, check=False)
        assert intruder.returncode != 0 and "Rejected" in intruder.stderr
        reports = [tmp_path / f"report{k}.txt" for k in range(4)]
        senders = [subprocess.Popen([str(DCMTK / "dcmsend"), "-aet", f"MOD{k}", "-aec", "CHESTAID", "127.0.0.1",
                                     str(node.port), "+crf", str(reports[k]), *map(str, sets[k])],
                                    stderr=subprocess.PIPE, text=True) for k in range(4)]
        senders_in = lambda: sum(a.is_established and a.requestor.ae_title in allow.split(",")[:4]  # noqa: E731
                                 for a in node.receiver.server.active_associations)
        wait_for(lambda: senders_in() >= 4, 60, 0.005, "four associations")  # not the intruder's, if still there
        fifth, _ = dcmsend(node.port, sets[4], "-d", aet="MOD4", check=False)
        errors = [s.communicate(timeout=300)[1] for s in senders]
        node_log = [r.getMessage() for r in caplog.records if "stored, queued" not in r.getMessage()]
        assert all(s.returncode == 0 for s in senders), (errors, node_log[-40:])
        for report in map(read_report, reports):  # 0 failures reported by the senders
            assert len(report["ok"]) == 100 and not report["failed"], report["text"][-500:]
        assert fifth.returncode != 0 and "rejected" in fifth.stderr.lower(), fifth.stderr
        assert "transient" in fifth.stderr.lower(), fifth.stderr
        said = [r.getMessage() for r in caplog.records if "rejected" in r.getMessage()]
        assert any("INTRUDER" in m and "not in --allow" in m for m in said), said  # the real reason of each
        assert any("MOD4" in m and "too many associations" in m for m in said), said
        _, retry = dcmsend(node.port, sets[4], aet="MOD4")
        assert len(retry["ok"]) == 100 and not retry["failed"]
        rows = node.store.instances()
    uids = [r["sop_uid"] for r in rows]
    assert len(uids) == len(set(uids)) == 500
    assert set(uids) == {uid_of(p) for files in sets for p in files}


def test_a_silent_association_is_aborted_after_the_idle_timeout_and_the_log_says_so(run, tmp_path, caplog):
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    caplog.set_level("INFO", logger="chestaid")
    with start_node(run, tmp_path / "store", idle_timeout=1.0) as node:
        ae = AE(ae_title="QUIET")
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", node.port, ae_title="CHESTAID")
        assert assoc.is_established
        wait_for(lambda: not assoc.is_alive(), 30, 0.1, "the node to abort the silent association")
        wait_for(lambda: any("QUIET" in r.getMessage() and "aborted (nothing received for 1 s)" in r.getMessage()
                             for r in caplog.records), 10, 0.1, "the abort's log line")
    assert assoc.is_aborted


def test_kill_9_during_a_send_then_restart_loses_nothing_and_results_arrive_once(run, tmp_path):
    files = phantoms(tmp_path / "in", 200, seed=20, study_uid=None)
    store_dir, dest, log = tmp_path / "store", tmp_path / "dest", tmp_path / "node.log"
    dest_port, port = free_port(), free_port()
    destination = storescp(dest, dest_port)
    args = ["--send-to", f"DEST@127.0.0.1:{dest_port}", "--no-heat-maps", "--retry-delay", "0.5",
            "--per-image-results"]
    node = node_process(run.root, store_dir, port, *args, log=log)
    try:
        sender = subprocess.Popen([str(DCMTK / "dcmsend"), "-v", "-aec", "CHESTAID", "127.0.0.1", str(port),
                                   *map(str, files)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

        def stored() -> int:
            store = Store.open(store_dir)
            try:
                return len(store.instances())
            finally:
                store.close()

        wait_for(lambda: stored() >= 60, 120, 0.02, "60 stored")
        os.kill(node.pid, signal.SIGKILL)
        node.wait(10)
        output = sender.communicate(timeout=120)[0]
        # dcmsend writes no report file when its association is aborted: its log says which C-STOREs
        # succeeded, in the order of the files given
        acknowledged = output.count("Received C-STORE Response (Success)")
        # an instance stored when the node died may not have had its response sent yet: that is allowed
        assert 0 < acknowledged < 200 and "Peer Aborted Association" in output, output[-2000:]
        ok = [uid_of(p) for p in files[:acknowledged]]
        node = node_process(run.root, store_dir, port, *args, log=log)
        store = Store.open(store_dir)
        in_store = {r["sop_uid"] for r in store.instances()}
        store.close()
        assert set(ok) <= in_store  # every acknowledged image survived the kill
        _, again = dcmsend(port, files)  # the whole set again
        assert len(again["ok"]) == 200
        wait_for(lambda: settled(store_dir), 240, 0.5, "all scored and sent")
        store = Store.open(store_dir)
        rows, outbox = store.instances(), store.outbox()
        store.close()
        assert len(rows) == 200 and {r["sop_uid"] for r in rows} == {uid_of(p) for p in files}
        assert {r["state"] for r in rows} == {"scored"}
        assert len(outbox) == 200 and {r["state"] for r in outbox} == {"sent"}
        arrived = received_uids(dest)
        assert set(arrived) == {r["result_uid"] for r in outbox}
        # a result in flight at the kill may arrive twice, under the same UID (the destination keeps one)
        assert len(arrived) - len(set(arrived)) <= 16
    finally:
        stop(node)
        stop(destination)


def test_outbox_retries_until_the_destination_is_up_and_dead_letters_refusal_abort_and_timeout(run,
                                                                                                  tmp_path):
    store_dir = tmp_path / "store"
    down_port, refuse_port, abort_port, slow_port = (free_port() for _ in range(4))
    destinations = [f"DOWN@127.0.0.1:{down_port}", f"REFUSE@127.0.0.1:{refuse_port}",
                    f"ABORT@127.0.0.1:{abort_port}", f"SLOW@127.0.0.1:{slow_port}"]
    peers = [storescp(tmp_path / "refuse", refuse_port, "--refuse", aet="REFUSE"),
             storescp(tmp_path / "abort", abort_port, "--abort-after", aet="ABORT"),
             storescp(tmp_path / "slow", slow_port, "--sleep-during", "30", aet="SLOW")]
    files = phantoms(tmp_path / "in", 2, seed=30)
    try:
        with start_node(run, store_dir, send_to=destinations, send_tries=4, retry_delay=1.0,
                        send_timeout=2) as node:
            dcmsend(node.port, files)
            down = lambda: node.store.outbox() and [r for r in node.store.outbox() if r["destination"]  # noqa
                                                     .startswith("DOWN")]
            wait_for(lambda: down() and all(r["down_tries"] >= 1 for r in down()), 60, what="a failed try")
            assert all("cannot connect" in r["last_error"] and r["state"] == "pending" for r in down()), down()
            peers.append(storescp(tmp_path / "down", down_port, aet="DOWN"))
            wait_for(lambda: all(r["state"] == "sent" for r in down()), 60, what="sent once up")
            wait_for(lambda: not node.store.outbox("pending"), 120, what="dead letters")
            by_dest = {d.split("@")[0]: [r for r in node.store.outbox() if r["destination"] == d]
                       for d in destinations}
            assert len(by_dest["DOWN"]) == 4  # an SR and a heat map per image
            # an abort after the data set reads as "no C-STORE response" or, when it lands while a retry's
            # association is being set up (a loaded machine), as "association aborted": both are aborts
            # storescp --refuse sends A-ASSOCIATE-RJ, which a loaded machine may see as the connection dropped
            for name, words in (("REFUSE", "rejected|aborted"), ("ABORT", "abort"), ("SLOW", "abort")):
                assert {r["state"] for r in by_dest[name]} == {"dead"}, name
                assert all(r["attempts"] == 4 and re.search(words, r["last_error"]) for r in by_dest[name]), \
                    by_dest[name]
            # the node kept serving throughout
            assert "Success" in dcmtk("echoscu", "-v", "-aec", "CHESTAID", "127.0.0.1", node.port).stderr
            more = phantoms(tmp_path / "more", 1, seed=31)
            dcmsend(node.port, more)
            assert node.store.has(uid_of(more[0]))
        arrived = received_uids(tmp_path / "down")
        assert sorted(arrived) == sorted(r["result_uid"] for r in by_dest["DOWN"])  # each exactly once
    finally:
        for peer in peers:
            stop(peer)


@pytest.mark.skipif(not ORTHANC.is_file(), reason="Orthanc (Debian orthanc) is a test dependency")
def test_orthanc_sends_a_study_to_the_node_and_gets_an_sr_per_image_and_a_heat_map_per_scored_image(run,
                                                                                                     tmp_path):
    chest = tmp_path / "chest_jpeg_lossless.dcm"
    dcmtk("dcmcjpeg", CORPUS / "RG1_UNCR.dcm", chest)  # the real chest PA CR, JPEG Lossless SV1
    ref = pydicom.dcmread(chest, stop_before_pixels=True)
    assert ref.file_meta.TransferSyntaxUID == pydicom.uid.JPEGLosslessSV1
    study = [chest] + [phantom(tmp_path / f"ph{i}.dcm", ref.StudyInstanceUID, i, patient=ref.PatientID)
                       for i in range(2)]
    ct = phantom(tmp_path / "ct.dcm", ref.StudyInstanceUID, 7, modality="CT", patient=ref.PatientID)
    study.append(ct)
    node_port = free_port()
    orthanc = Orthanc(tmp_path / "orthanc", node_port)
    node = None
    try:
        node = Node(NodeConfig(run=Path(run.root), store=tmp_path / "store", port=node_port,
                               host="127.0.0.1", send_to=[f"ORTHANC@127.0.0.1:{orthanc.dicom}"],
                               allow=["ORTHANC"], per_image_results=True)).start()
        for path in study:
            orthanc.post("/instances", path.read_bytes())
        study_id = orthanc.get("/studies")[0]
        echo = orthanc.post("/modalities/chestaid/echo", b"{}", "application/json")
        assert echo == {} or echo is not None
        orthanc.post("/modalities/chestaid/store", study_id.encode(), "text/plain")
        wait_for(lambda: len(orthanc.get(f"/studies/{study_id}/instances")) == 4 + 4 + 3, 180, 1.0,
                 "SRs and heat maps back in Orthanc")
        instances = orthanc.get(f"/studies/{study_id}/instances")
        kinds: dict[str, list] = {"SR": [], "SC": []}
        for instance in instances:
            tags = orthanc.get(f"/instances/{instance['ID']}/simplified-tags")
            if tags.get("Manufacturer") == "chestaid":
                data = orthanc.get(f"/instances/{instance['ID']}/file")
                path = tmp_path / f"back_{instance['ID']}.dcm"
                path.write_bytes(data)
                assert dciodvfy_errors(path) == [], path
                kinds["SR" if tags["Modality"] == "SR" else "SC"].append(pydicom.dcmread(path))
        assert len(kinds["SR"]) == 4 and len(kinds["SC"]) == 3
        assert {o.StudyInstanceUID for o in kinds["SR"] + kinds["SC"]} == {ref.StudyInstanceUID}
        assert {o.SeriesDescription for o in kinds["SC"]} == {CAPTION}
        referenced = {o.SourceImageSequence[0].ReferencedSOPInstanceUID for o in kinds["SC"]}
        assert ref.SOPInstanceUID in referenced and uid_of(ct) not in referenced
        result = CliRunner().invoke(_app(), ["worklist", str(tmp_path / "store"), "--json", "--instances"])
        rows = json.loads(result.output)
        assert sorted(r["SOPInstanceUID"] for r in rows) == sorted(uid_of(p) for p in study)
        assert {r["state"] for r in rows} == {"scored", "not read"}  # the chest study's CT: not read
        assert all(r["results"] in ("sr:sent,sc:sent", "sr:sent") for r in rows)
        # a resend from the PACS makes nothing twice
        orthanc.post("/modalities/chestaid/store", study_id.encode(), "text/plain")
        time.sleep(3)
        assert len(orthanc.get(f"/studies/{study_id}/instances")) == 11
    finally:
        if node is not None:
            node.stop()
        orthanc.stop()


def test_node_command_reports_bad_options_in_one_line(run, tmp_path):
    runner = CliRunner()
    bad = runner.invoke(_app(), ["node", str(run.root), "--store", str(tmp_path / "s"), "--send-to", "nope"])
    assert bad.exit_code != 0 and "AET@HOST:PORT" in str(bad.exception)
    missing = runner.invoke(_app(), ["node", str(tmp_path), "--store", str(tmp_path / "s")])
    assert missing.exit_code != 0 and "not a trained run" in str(missing.exception)
    assert threading.active_count() >= 1


def test_a_hostile_header_still_gets_its_results_and_a_reused_uid_with_other_content_is_a_conflict(run, tmp_path,
                                                                                                    caplog):
    """PatientSex `<b>X</b>`, PatientAge `ZZZZ`, StudyDate `notadate`: scored, SR and heat map made (the values
    emptied or left out, said in the SR), dciodvfy-clean. The same SOPInstanceUID again with another patient's
    study: kept as a conflict (a warning naming both studies' UIDs, never the patient), not dropped; the first
    file sent again unchanged stays a plain duplicate. Each row records the model that scored it."""
    import warnings

    hostile = phantom(tmp_path / "hostile.dcm", "1.2.826.0.1.3680043.8.498.501", 0)
    ds = pydicom.dcmread(hostile)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about each invalid value as it is set
        ds.PatientSex, ds.PatientAge, ds.StudyDate = "<b>X</b>", "ZZZZ", "notadate"
    ds.save_as(hostile)
    other = phantom(tmp_path / "other.dcm", "1.2.826.0.1.3680043.8.498.502", 3, patient="OTHER9999")
    reused = pydicom.dcmread(other)
    reused.SOPInstanceUID = reused.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    reused.save_as(other)
    store_dir = tmp_path / "store"
    caplog.set_level("WARNING", logger="pynetdicom")
    caplog.set_level("INFO", logger="chestaid.node")
    node = start_node(run, store_dir)
    try:
        for path in (hostile, other, hostile):
            _, report = dcmsend(node.port, [path])
            assert len(report["ok"]) == 1, report["text"]
        wait_for(lambda: settled(store_dir, False), what="scored")
        row = node.store.instance(ds.SOPInstanceUID)
        conflicts = node.store.conflicts()
    finally:
        node.stop()
    assert row["state"] == "scored" and row["reason"] == "" and row["patient_id"] == "PHANTOM01"
    model = json.loads(row["model"])
    from chestaid.core.fileio import sha256_of

    assert model["weights_sha256"] == sha256_of(Path(run.root) / "model.safetensors") and model["run"]
    assert len(conflicts) == 1 and conflicts[0]["study_uid"] == "1.2.826.0.1.3680043.8.498.502"
    assert "1.2.826.0.1.3680043.8.498.501" in conflicts[0]["reason"] and "patient" in conflicts[0]["reason"]
    assert (store_dir / conflicts[0]["path"]).is_file()
    warned = [m for m in caplog.messages if "reused with other content" in m]
    assert len(warned) == 1 and "OTHER9999" not in warned[0] and "PHANTOM" not in warned[0]
    listed = json.loads(CliRunner().invoke(_app(), ["worklist", str(store_dir), "--json", "--instances"]).stdout)
    assert sorted(r["state"] for r in listed) == ["conflict", "scored"]
    results = [pydicom.dcmread(p) for p in (store_dir / "results").rglob("*.dcm")]
    assert len(results) == 2 and "SR" in {o.Modality for o in results}  # the SR and the heat map
    for path in (store_dir / "results").rglob("*.dcm"):
        assert dciodvfy_errors(path) == [], path
    sr = next(o for o in results if o.Modality == "SR")
    text = json.dumps(sr.to_json_dict())
    assert "PatientSex in the source is not a valid CS value: left empty" in text
    assert "PatientAge in the source is not a valid AS value: left out" in text
    assert sr.PatientSex == "" and "PatientAge" not in sr and "calibration=" in text


def test_prometheus_metrics_count_states_and_time_scoring(run, tmp_path):
    import urllib.request

    node = start_node(run, tmp_path / "store", heat_maps=False, metrics_port=0)
    try:
        _, report = dcmsend(node.port, phantoms(tmp_path / "in", 2, seed=9) + [Path(get_testdata_file("CT_small.dcm"))])
        assert len(report["ok"]) == 3, report["text"]
        wait_for(lambda: settled(tmp_path / "store", False), what="scored")
        text = urllib.request.urlopen(f"http://127.0.0.1:{node.metrics_port}/metrics", timeout=10).read().decode()
    finally:
        node.stop()
    assert 'chestaid_instances{state="scored"} 2.0' in text and 'chestaid_instances{state="refused"} 1.0' in text
    assert 'chestaid_refusals{reason="DICOM Modality is CT, not CR or DX (a radiograph)"} 1.0' in text
    assert "chestaid_scoring_seconds_count 3.0" in text and "chestaid_queue_depth 0.0" in text
    assert "PHANTOM" not in text  # no patient data
