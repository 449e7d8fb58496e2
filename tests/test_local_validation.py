"""Local validation from day one (issue 43) on a real node's store of 40 images from 15 patients, scored by an
uncalibrated run (as an imported one is on day one): `evaluate --data STORE` gives discrimination with intervals
equal to an independent computation from the worklist's scores and the verdicts; a version calibrated on week 1 is
evaluated on weeks 2-3 and refused on week 1, in a copy of the store too; no run folder holds a local patient's
pixels or ID after `gate fit`, `calibrate --cohort`, `evaluate --data STORE` and `verdicts export`."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from chestaid.apps.cli import app
from chestaid.core.run_paths import RunPaths
from chestaid.data.phantoms.synthetic import synth_pneumonia
from chestaid.evaluation.discrimination import auc_with_interval
from chestaid.store import Store
from node_helpers import DCMTK, dcmsend, grey_cr

pytestmark = [pytest.mark.peers, pytest.mark.skipif(not (DCMTK / "dcmsend").is_file(), reason="needs DCMTK")]
WEEK_1, WEEK_2, WEEK_3 = "2026-11-02", "2026-11-09", "2026-11-16"


def patient(k: int) -> str:
    return f"LOCALPATIENT-{k % 15:04d}"


@pytest.fixture(scope="module")
def week_store(ungated_pneumonia_run, tmp_path_factory):
    """An uncalibrated copy of the pneumonia run, a node's store with 40 scored CRs of 15 patients received over
    three weeks, a verdict on each, and each CR's truth."""
    from test_node import settled, start_node, wait_for

    tmp = tmp_path_factory.mktemp("weeks")
    run = Path(shutil.copytree(ungated_pneumonia_run.root, tmp / "run"))
    assert not (run / "calibration.json").exists()
    root = synth_pneumonia(tmp / "kaggle", n=40, size=64, seed=43, workers=1)
    images = sorted(Path(root).rglob("*.jpeg"))[:40]
    (tmp / "dicom").mkdir()
    truth = {}
    for k, image in enumerate(images):
        pixels = np.asarray(Image.open(image).convert("L"))
        uid = grey_cr(pixels, tmp / "dicom" / f"{k}.dcm", str(image), PatientID=patient(k),
                      AccessionNumber=f"LOCALACC{k:04d}")
        truth[uid] = int("PNEUMONIA" in image.parts)
    node = start_node(RunPaths(run), tmp / "store", heat_maps=False)
    try:
        _, report = dcmsend(node.port, sorted((tmp / "dicom").iterdir()))
        assert len(report["ok"]) == len(truth), report["text"]
        wait_for(lambda: settled(tmp / "store", False), what="all scored")
    finally:
        node.stop()
    opened = Store.open(tmp / "store")
    try:
        for uid, t in truth.items():
            opened.add_verdicts(uid, {"Pneumonia": "present" if t else "absent"}, "dr.w")
    finally:
        opened.close()
    days = [WEEK_1] * 16 + [WEEK_2] * 12 + [WEEK_3] * 12  # three weeks of receipt
    with sqlite3.connect(tmp / "store" / "chestaid-node.sqlite") as db:
        for uid, day in zip(sorted(truth), days):
            at = datetime.strptime(day, "%Y-%m-%d").replace(hour=10, tzinfo=timezone.utc).timestamp()
            db.execute("UPDATE instances SET received_at = ? WHERE sop_uid = ?", (at, uid))
    return run, tmp / "store", truth, tmp


def invoke(*args, code: int = 0) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == code, result.output
    return result.output


def test_an_uncalibrated_run_is_validated_on_the_store_from_day_one(week_store):
    run, store, truth, tmp = week_store
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    said = invoke("evaluate", run, "--data", store)
    assert "40 local case(s) of 15 patient(s)" in said and "not applicable: the run's scores are uncalibrated" in said
    result = json.loads(next((store / "evaluations").glob("*/metrics.json")).read_text())
    (row,) = result["per_finding"]
    assert result["scores"].startswith("the scores the node recorded") and row["sensitivity"] is None
    # an independent computation from the worklist's scores and the verdicts
    worklist = json.loads(subprocess.run([sys.executable, "-m", "chestaid.apps.cli", "worklist", str(store), "--json",
                                          "--instances"],
                                         capture_output=True,
                                         text=True, check=True).stdout)
    scores = {r["SOPInstanceUID"]: r["scores"]["Pneumonia"]["risk"] for r in worklist}
    uids = sorted(truth)
    y = np.array([truth[u] for u in uids])
    risk = np.array([scores[u] for u in uids])
    assert abs(row["roc_auc"] - roc_auc_score(y, risk)) <= 1e-9
    patients = np.array([r["PatientID"] for r in sorted(worklist, key=lambda r: r["SOPInstanceUID"])])
    independent = auc_with_interval(y, risk, patients)
    for key in ("roc_auc_ci_low", "roc_auc_ci_high"):
        assert abs(row[key] - independent[key]) <= 1e-9
    assert row["roc_auc_ci_low"] < row["roc_auc"] < row["roc_auc_ci_high"]
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before  # nothing written into the run
    # a store too small for any interval says how many labelled cases it needs
    said = invoke("evaluate", run, "--data", store, "--since", WEEK_3, "--until", WEEK_3, code=0)
    small = Path(shutil.copytree(store, tmp / "small"))
    opened = Store.open(small)
    try:
        for uid in uids[2:]:
            opened.add_verdicts(uid, {"Pneumonia": "can't tell"}, "dr.w")
    finally:
        opened.close()
    said = invoke("evaluate", run, "--data", small, code=2)
    assert "needs at least 2 present and 2 absent cases" in said.replace("\n", " ")


def test_a_version_calibrated_on_week_one_is_evaluated_on_the_rest_and_refused_on_week_one(week_store):
    run, store, truth, tmp = week_store
    v2 = tmp / "v2"
    invoke("calibrate", run, "--cohort", store, "--until", "2026-11-08", "--out", v2)
    info = json.loads((v2 / "calibration.json").read_text())
    assert len(info["cohort_cases"]) == 16 and info["cohort_dates"] == {"since": None, "until": "2026-11-08"}
    said = invoke("evaluate", v2, "--data", store, "--since", "2026-11-09")
    assert "24 local case(s)" in said and "ROC-AUC" in said and "sensitivity" in said
    said = invoke("evaluate", v2, "--data", store, "--until", "2026-11-08", code=2)
    assert "all 16 labelled case(s) here were used to calibrate v2" in said.replace("\n", " ")
    copy = tmp / "copy-of-store"
    subprocess.run(["cp", "-a", str(store), str(copy)], check=True)
    said = invoke("evaluate", v2, "--data", copy, "--until", "2026-11-08", code=2)  # by content, not by path
    assert "were used to calibrate v2" in said.replace("\n", " ")
    said = invoke("evaluate", v2, "--data", copy)
    assert "24 local case(s)" in said and "16 case(s) this version was calibrated on left out" in said
    assert "this run's scores of the stored images" in said.replace("\n", " ")  # scored by v1: rescored by v2


def test_no_run_folder_holds_a_local_patients_pixels_or_id(week_store):
    run, store, truth, tmp = week_store
    deployed = Path(shutil.copytree(run, tmp / "deployed"))
    invoke("gate", "fit", deployed, "--images", tmp / "dicom", "--percentile", "80")
    new = tmp / "new-version"
    invoke("calibrate", deployed, "--cohort", store, "--out", new)
    invoke("evaluate", deployed, "--data", store)
    invoke("evaluate", new, "--data", store, "--since", WEEK_2, code=2)  # all its cases calibrated it: refused
    invoke("verdicts", "export", store, "--out", tmp / "export.csv")
    secrets = {patient(k).encode() for k in range(15)} | {f"LOCALACC{k:04d}".encode() for k in range(40)}
    secrets |= {uid.encode() for uid in truth}
    chunks = []
    for dicom in sorted((tmp / "dicom").iterdir()):
        pixels = pydicom.dcmread(dicom).PixelData
        chunks.append(pixels[len(pixels) // 2: len(pixels) // 2 + 64])
    for folder in (deployed, new):
        for path in (p for p in folder.rglob("*") if p.is_file()):
            data = path.read_bytes()
            found = [s for s in secrets if s in data] + [c for c in chunks if c in data]
            assert not found, f"{path} holds local patient data: {found[:3]}"
        assert not list(folder.rglob("*.npy"))


def test_evaluation_by_study_takes_each_studys_highest_score_and_any_present_verdict(week_store):
    """--by-study: one case per study — the highest recorded score of its read images, present when any of its
    verdicts is — equal to an independent computation (here each patient's images, two by two, made studies)."""
    run, store, truth, tmp = week_store
    grouped = Path(shutil.copytree(store, tmp / "grouped"))
    shutil.rmtree(grouped / "evaluations", ignore_errors=True)
    with sqlite3.connect(grouped / "chestaid-node.sqlite") as db:  # a patient's images two by two: one study
        rows = db.execute("SELECT sop_uid, patient_id, scores FROM instances ORDER BY sop_uid").fetchall()
        seen: dict[str, int] = {}
        study_of = {}
        for uid, patient_id, _ in rows:
            seen[patient_id] = seen.get(patient_id, -1) + 1
            study_of[uid] = f"1.2.826.0.1.3680043.8.498.7.{patient_id[-4:].lstrip('0') or '0'}.{seen[patient_id] // 2}"
            db.execute("UPDATE instances SET study_uid = ? WHERE sop_uid = ?", (study_of[uid], uid))
    n = len(set(study_of.values()))
    said = invoke("evaluate", run, "--data", grouped, "--by-study")
    assert f"{n} local stud(ies) (40 image(s)" in said, said
    result = json.loads(next((grouped / "evaluations").glob("*-by-study/metrics.json")).read_text())
    (row,) = result["per_finding"]
    best: dict[str, float] = {}
    present: dict[str, int] = {}
    for uid, _, scores in rows:
        study = study_of[uid]
        best[study] = max(best.get(study, -np.inf), json.loads(scores)["Pneumonia"]["logit"])
        present[study] = max(present.get(study, 0), truth[uid])
    keys = sorted(best)
    assert result["studies"] == n < 40 and row["positives"] == sum(present.values()) < n
    assert abs(row["roc_auc"] - roc_auc_score([present[k] for k in keys], [best[k] for k in keys])) <= 1e-9
