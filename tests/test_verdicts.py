"""The hospital loop on a real node: synthetic pneumonia images arrive as DICOM CRs by C-STORE and are scored;
clinicians' verdicts come in from a CSV (by SOPInstanceUID and by AccessionNumber), keep their history and go out
as a table `prepare --table` reads; `evaluate --data STORE` equals evaluating that table; `calibrate --cohort STORE
--out NEWRUN` writes a new run version with its lineage and leaves the deployed run byte-identical."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

import chestaid
from chestaid.apps.cli import app
from chestaid.core.run_paths import RunPaths
from chestaid.data.phantoms.synthetic import synth_pneumonia
from chestaid.store import Store
from node_helpers import DCMTK, dcmsend, grey_cr

pytestmark = [pytest.mark.peers, pytest.mark.skipif(not (DCMTK / "dcmsend").is_file(), reason="needs DCMTK")]


def as_cr(image: Path, out: Path, index: int) -> str:
    """A grey JPEG as an 8-bit chest CR of its own patient and study; returns its SOPInstanceUID."""
    return grey_cr(np.asarray(Image.open(image).convert("L")), out, str(image), PatientID=f"P{index:04d}",
                   AccessionNumber=f"ACC{index:04d}")


def digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def loop(pneumonia_run, tmp_path_factory):
    """A calibrated copy of the pneumonia run, a node's store with 80 scored CRs, and each CR's truth."""
    from test_node import settled, start_node, wait_for

    tmp = tmp_path_factory.mktemp("loop")
    run = Path(shutil.copytree(pneumonia_run.root, tmp / "run"))
    chestaid.calibrate(run)
    root = synth_pneumonia(tmp / "kaggle", n=80, size=64, seed=21, workers=1)
    images = sorted(p for p in Path(root).rglob("*.jpeg"))
    (tmp / "dicom").mkdir()
    truth = {as_cr(p, tmp / "dicom" / f"{k}.dcm", k): int("PNEUMONIA" in p.parts) for k, p in enumerate(images)}
    node = start_node(RunPaths(run), tmp / "store")
    try:
        _, report = dcmsend(node.port, sorted((tmp / "dicom").iterdir()))
        assert len(report["ok"]) == len(truth), report["text"]
        wait_for(lambda: settled(tmp / "store", False), what="all scored")
    finally:
        node.stop()
    return run, tmp / "store", truth, tmp


def scored_uids(store: Path) -> set[str]:
    opened = Store.open(store)
    try:
        return {r["sop_uid"] for r in opened.instances("scored")}
    finally:
        opened.close()


def invoke(*args) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def test_verdicts_in_with_history_out_as_a_table_and_evaluate_on_the_store_equals_the_table(loop):
    run, store, truth, tmp = loop
    uids = list(truth)
    rows = [{"SOPInstanceUID": u, "Pneumonia": "present" if t else "absent", "priority appropriate": "yes"}
            for u, t in truth.items()]
    rows[0]["Pneumonia"] = "absent" if truth[uids[0]] else "present"  # a mistake, corrected below
    rows.append({"SOPInstanceUID": "1.2.3.999", "Pneumonia": "present", "priority appropriate": ""})  # unknown
    pd.DataFrame(rows).to_csv(tmp / "labels.csv", index=False)
    said = CliRunner().invoke(app, ["verdicts", "import", str(store), str(tmp / "labels.csv"), "--user", "dr.a"])
    assert said.exit_code == 0 and f"{2 * len(truth)} verdict(s) for {len(truth)} instance(s)" in said.output
    assert "row 82: no instance with this SOPInstanceUID" in said.output
    accession = pd.DataFrame([{"AccessionNumber": "ACC0000", "Pneumonia": 1 if truth[uids[0]] else 0},
                              {"AccessionNumber": "", "Pneumonia": 1}])  # a blank key matches nothing
    accession.to_csv(tmp / "fix.csv", index=False)  # by accession number, as report labels come
    assert "row 3: no AccessionNumber" in invoke("verdicts", "import", store, tmp / "fix.csv", "--user", "dr.b")
    opened = Store.open(store)
    try:
        history = opened.verdict_history(uids[0])
        latest = opened.latest_verdicts()
        audit = [r for r in opened.audit_rows() if r["action"] == "verdict"]
    finally:
        opened.close()
    assert [h["user"] for h in history if h["finding"] == "Pneumonia"] == ["dr.a", "dr.b"]
    assert latest[uids[0]]["Pneumonia"] == ("present" if truth[uids[0]] else "absent")
    assert len(audit) == len(truth) + 1 and all(r["sop_uid"] in truth for r in audit)
    invoke("verdicts", "export", store, "--out", tmp / "table.csv")
    table = pd.read_csv(tmp / "table.csv")
    scored = scored_uids(store)  # an image the gate refused is no case: it is left out
    assert list(table.columns) == ["path", "patient_id", "Pneumonia"] and len(table) == len(scored)
    assert table["Pneumonia"].sum() == sum(truth[u] for u in scored)
    invoke("prepare", "--table", tmp / "table.csv", "--task", "verdicts", "--out", tmp / "table-cache",
           "--size", "64")
    by_table = chestaid.evaluate(run, data=tmp / "table-cache", split="all")
    by_store = chestaid.evaluate(run, data=store)
    a, b = by_table["per_finding"][0], by_store["per_finding"][0]
    assert a["positives"] + a["negatives"] == b["positives"] + b["negatives"] == len(scored)
    assert abs(a["roc_auc"] - b["roc_auc"]) <= 1e-9 and a["sensitivity"] == b["sensitivity"]
    assert abs(a["roc_auc_ci_low"] - b["roc_auc_ci_low"]) <= 1e-9
    assert by_store["report"].startswith(str(store.resolve() / "evaluations"))  # beside the patients, not in the run
    assert not any(p.name.startswith("store") for p in (run / "external").iterdir())
    assert not (run / "cohort_cache").exists()
    tuned = chestaid.train(tmp / "table-cache", tmp / "tuned", config="demo_pneumonia",
                           overrides={"data.image_size": 64, "train.epochs": 1, "model.weights": str(run)})
    assert (tuned / "model.safetensors").is_file()  # the export trains too


def test_recalibration_on_the_store_writes_a_new_run_and_leaves_the_deployed_one_byte_identical(loop):
    run, store, truth, tmp = loop
    opened = Store.open(store)
    try:
        if not opened.latest_verdicts():
            for uid, t in truth.items():
                opened.add_verdicts(uid, {"Pneumonia": "present" if t else "absent"}, "dr.c")
    finally:
        opened.close()
    before = digests(run)
    result = CliRunner().invoke(app, ["calibrate", str(run), "--cohort", str(store), "--out", str(tmp / "v2")])
    assert result.exit_code == 0, result.output
    assert digests(run) == before  # the deployed run: not one byte changed
    manifest = json.loads((tmp / "v2" / "manifest.json").read_text())
    lineage = manifest["extra"]["recalibrated"]
    assert lineage["parent_run"] == "run" and lineage["cohort"]["images"] == len(scored_uids(store))
    assert lineage["cohort"]["instances_with_verdicts"] == len(truth) and lineage["cohort"]["from"]
    assert lineage["parent_calibration_sha256"] == hashlib.sha256((run / "calibration.json").read_bytes()).hexdigest()
    card = (tmp / "v2" / "model_card.md").read_text()
    assert f"**Recalibrated on {len(scored_uids(store))} local cases** received from" in card
    assert (tmp / "v2" / "model.safetensors").read_bytes() == (run / "model.safetensors").read_bytes()
    from chestaid.inference.identity import run_identity, same_model

    assert not same_model(run_identity(run), run_identity(tmp / "v2"))  # results of the two stay apart
    refused = CliRunner().invoke(app, ["evaluate", str(tmp / "v2"), "--data", str(store)])
    assert refused.exit_code == 2 and "were used to calibrate v2" in refused.output, refused.output


def test_verdict_imports_refuse_what_they_cannot_read_and_a_second_import_appends_nothing(loop):
    """A misspelled finding column is refused with the closest name and nothing is written (exit 2); a short row
    is passed over with its number; the same file again appends nothing; a file where nothing matched exits 1."""
    run, store, truth, tmp = loop
    store = Path(shutil.copytree(store, tmp / "store-imports"))
    uids = sorted(scored_uids(store))[:3]
    opened = Store.open(store)
    try:
        before = [len(opened.verdict_history(u)) for u in uids]
    finally:
        opened.close()
    (tmp / "typo.csv").write_text(f"SOPInstanceUID,Pneumonaa,pneumonia\n{uids[0]},1,1\n")
    said = CliRunner().invoke(app, ["verdicts", "import", str(store), str(tmp / "typo.csv")])
    assert said.exit_code == 2, said.output
    assert "'Pneumonaa' (did you mean 'Pneumonia'?)" in said.output and "'pneumonia' (did you mean" in said.output
    assert "Nothing imported" in said.output
    opened = Store.open(store)
    try:
        assert [len(opened.verdict_history(u)) for u in uids] == before
    finally:
        opened.close()
    (tmp / "short.csv").write_text(f"SOPInstanceUID,Pneumonia,priority appropriate\n{uids[0]},1,yes\n{uids[1]},0\n"
                                   f"{uids[2]},maybe,no\n")
    said = CliRunner().invoke(app, ["verdicts", "import", str(store), str(tmp / "short.csv")])
    assert said.exit_code == 0 and "2 verdict(s) for 1 instance(s)" in said.output, said.output
    assert "row 3: 2 cell(s) where the header has 3" in said.output and "row 4: Pneumonia: 'maybe'" in said.output
    said = CliRunner().invoke(app, ["verdicts", "import", str(store), str(tmp / "short.csv")])
    assert said.exit_code == 0 and "0 verdict(s)" in said.output and "2 already there" in said.output, said.output
    opened = Store.open(store)
    try:
        assert len(opened.verdict_history(uids[0])) == before[0] + 2  # not appended again
    finally:
        opened.close()
    (tmp / "none.csv").write_text("AccessionNumber,Pneumonia\nNOSUCH,1\n")
    said = CliRunner().invoke(app, ["verdicts", "import", str(store), str(tmp / "none.csv")])
    assert said.exit_code == 1 and "nothing matched" in said.output, said.output
