"""`chestaid predict`: a worklist sorted by risk, bad files listed and skipped, DICOM metadata, heat maps."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from chestaid.apps.cli import app
from chestaid.data.images import read_grey
from chestaid.data.patient import patient_for
from chestaid.inference.predictor import Predictor

from test_images import _dicom


def test_worklist_sorted_with_bad_files_listed(ungated_run, nih_root, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    good = sorted((nih_root / "images_001" / "images").glob("*.png"))[:6]
    for f in good:
        shutil.copy(f, folder / f.name)
    (folder / "empty.png").write_bytes(b"")
    (folder / "cut.png").write_bytes(good[0].read_bytes()[:200])
    (folder / "notes.png").write_text("not an image")
    (folder / "readme.txt").write_text("passed over and listed: not an image")
    out = tmp_path / "worklist.csv"
    result = CliRunner().invoke(app, ["predict", str(ungated_run.root), str(folder), "--out", str(out),
                                      "--cam", str(tmp_path / "cams"), "--batch-size", "4"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out)
    assert len(table) == 6 and list(table["rank"]) == [1, 2, 3, 4, 5, 6]
    assert table["risk"].is_monotonic_decreasing
    np.testing.assert_allclose(table["risk"], table[[c for c in table if c.endswith("_risk")]].max(axis=1))
    skipped = pd.read_csv(tmp_path / "worklist_skipped.csv").set_index("file")["reason"]
    assert {p.split("/")[-1] for p in skipped.index} == {"empty.png", "cut.png", "notes.png", "readme.txt"}
    assert "not an image" in skipped[str(folder / "readme.txt")]
    assert "4 file(s) skipped" in result.output
    assert set(table["backend"]) == {"torch"} and "scored by the torch backend" in result.output
    assert len(list((tmp_path / "cams" / "in").glob("*.png"))) == 6 and table["heat_map"].notna().all()


def test_worklist_exit_1_when_nothing_readable(tiny_run, tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    result = CliRunner().invoke(app, ["predict", str(tiny_run.root), str(tmp_path / "empty.png"),
                                      "--out", str(tmp_path / "w.csv")])
    assert result.exit_code == 1 and "no image could be read" in result.output


def test_same_scores_from_files_as_from_the_cache(tiny_run, nih_root):
    predictor = Predictor.load(tiny_run.root)
    from chestaid.data.cache import Cache

    cache = Cache.open(predictor.cfg.data.path)
    logits, _, rows = predictor.cache_outputs(cache, "test")
    paths = rows["path"].tolist()[:5]
    given = [{"age": r.age, "sex": r.sex, "view": r.view} for r in rows.iloc[:5].itertuples()]
    for k, (path, meta) in enumerate(zip(paths, given)):
        scored, _ = predictor.score_files([path], patient=meta)
        np.testing.assert_allclose(scored[0].logits, logits[k], atol=1e-4)


def test_dicom_tags_come_first_and_given_values_only_fill_gaps(tmp_path, nih_root):
    png = sorted((nih_root / "images_001" / "images").glob("*.png"))[0]
    pixels = read_grey(png).astype(np.uint16) * 16
    _dicom(tmp_path / "x.dcm", pixels, "MONOCHROME2", PatientAge="067Y", PatientSex="F")
    data = patient_for(tmp_path / "x.dcm", {"age": 30, "sex": "M", "view": "PA"})
    assert data.values == {"age": 67.0, "sex": "F", "view": "PA"}
    assert data.sources == {"age": "tag", "sex": "tag", "view": "given"} and data.assumed == []
    data = patient_for(png, {"age": 30, "sex": "unknown", "view": "LATERAL"})
    assert data.values == {"age": 30.0, "sex": None, "view": None} and data.assumed == ["sex", "view"]
    assert data.ids == {}


def test_worklist_ties_of_a_saturated_calibrator_are_ranked_by_the_model(ungated_pneumonia_run, kaggle_root,
                                                                          tmp_path):
    import json

    run = tmp_path / "run"
    shutil.copytree(ungated_pneumonia_run.root, run, ignore=shutil.ignore_patterns("checkpoints"))
    info = json.loads((run / "calibration.json").read_text()) if (run / "calibration.json").exists() else {}
    info["findings"] = {"Pneumonia": {"method": "platt", "a": 1.0, "b": 1000.0}}  # every score becomes 1.0
    (run / "calibration.json").write_text(json.dumps(info))
    files = sorted((kaggle_root / "test").rglob("*.jpeg"))[:12]
    out = tmp_path / "worklist.csv"
    assert CliRunner().invoke(app, ["predict", str(run), *map(str, files), "--out", str(out)]).exit_code == 0
    table = pd.read_csv(out)
    assert (table["risk"] == 1.0).all()
    scored, _ = Predictor.load(run).score_files(files)
    by_logit = [s.path for s in sorted(scored, key=lambda s: -float(s.logits[0]))]
    assert list(table["file"]) == by_logit


def test_two_processes_through_lightning_give_the_same_worklist(tiny_run, nih_root, tmp_path):
    """`chestaid predict --devices 2`: Lightning's predict loop shares the files between two CPU processes; the
    worklist, the refused and the skipped lists are those of one process, written once, by rank 0."""
    import subprocess
    import sys

    folder = tmp_path / "in"
    shutil.copytree(nih_root / "images_001" / "images", folder / "a")
    (folder / "a" / "empty.png").write_bytes(b"")
    pixels = (np.random.default_rng(0).random((64, 64)) * 4000).astype(np.uint16)
    _dicom(folder / "mr.dcm", pixels, "MONOCHROME2", Modality="MR", BodyPartExamined="HEAD")
    cli = [sys.executable, "-m", "chestaid.apps.cli", "predict", str(tiny_run.root), str(folder), "--batch-size", "4",
           "--backend", "torch"]
    one = subprocess.run([*cli, "--out", str(tmp_path / "one" / "w.csv")], capture_output=True, text=True, timeout=600)
    two = subprocess.run([*cli, "--out", str(tmp_path / "two" / "w.csv"), "--devices", "2"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=600)
    assert one.returncode == 0 and two.returncode == 0, two.stderr[-3000:]
    assert "MEMBER: 2/2" in two.stderr  # Lightning started a second process
    assert two.stdout.count("worklist ") == 1 and "1 file(s) skipped" in two.stderr  # one process speaks
    tables = {n: pd.read_csv(tmp_path / n / "w.csv") for n in ("one", "two")}
    assert len(tables["one"]) >= 10
    risks = [c for c in tables["one"] if c.endswith("_risk")] + ["risk"]
    pd.testing.assert_frame_equal(tables["one"].drop(columns=risks + ["gate_distance"]),
                                  tables["two"].drop(columns=risks + ["gate_distance"]))
    np.testing.assert_allclose(tables["one"][risks], tables["two"][risks], atol=1e-6)
    # the two ranks score other batches on one thread each, which moved a gate distance (a sum over all
    # features) by 1.3e-5 relative on an AVX2-only CPU
    np.testing.assert_allclose(tables["one"]["gate_distance"], tables["two"]["gate_distance"], rtol=1e-4)
    assert (tmp_path / "one" / "w_skipped.csv").read_text() == (tmp_path / "two" / "w_skipped.csv").read_text()
    refused = {n: pd.read_csv(tmp_path / n / "w_refused.csv") for n in ("one", "two")}
    assert len(refused["one"]) >= 1 and "Modality is MR" in refused["one"].to_string()
    pd.testing.assert_frame_equal(refused["one"], refused["two"], check_exact=False, rtol=1e-5)  # 1 vs 2 threads
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["w.csv", "w_refused.csv", "w_skipped.csv"]
