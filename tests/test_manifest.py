"""A run describes itself (RUN/manifest.json): copied without its training cache it keeps every statement about
its data on the page, in the report and in the model card; a run made before manifests still loads and says
what is unknown."""

from __future__ import annotations

import json
import shutil

import pytest

import chestaid
from chestaid.core.config import load_config, save_config
from chestaid.core.manifest import read_manifest
from chestaid.core.run_paths import RunPaths
from chestaid.reporting.model_card import write_model_card


def _copy_without_cache(run: RunPaths, target) -> RunPaths:
    """What a deployment does: the run folder alone, its config's data.path pointing where nothing is."""
    shutil.copytree(run.root, target, ignore=shutil.ignore_patterns("checkpoints"))
    copied = RunPaths(target)
    cfg = load_config(copied.config)
    save_config(cfg.model_copy(update={"data": cfg.data.model_copy(update={"path": str(target / "gone")})}),
                copied.config)
    return copied


def test_train_writes_the_manifest(tiny_run, nih_cache):
    manifest = read_manifest(tiny_run.manifest)
    assert manifest is not None and manifest.synthetic
    assert manifest.task["labels"] == list(load_config(tiny_run.config).require_task().labels)
    meta = json.loads((nih_cache / "meta.json").read_text())
    data = manifest.data
    assert data["layout"] == "nih" and data["cache_size"] == meta["size"]
    assert sum(s["images"] for s in data["splits"].values()) == data["images"] == meta["cached"]
    assert set(data["sex"]) <= {"M", "F", "unknown"} and set(data["view"]) <= {"PA", "AP", "unknown"}
    assert manifest.weights["start"] == "none" and len(manifest.weights["model_sha256"]) == 64


def test_a_run_copied_without_its_cache_keeps_what_it_says(tiny_run, nih_cache, tmp_path):
    from chestaid.apps.page.notes import run_notes as _run_notes
    from chestaid.inference.predictor import Predictor

    copied = _copy_without_cache(tiny_run, tmp_path / "deployed")
    assert "Trained on synthetic phantoms" in _run_notes(Predictor.load(copied.root), copied.root)
    card = write_model_card(copied.root).read_text()
    assert "Synthetic phantoms" in card and "nothing is known" not in card
    # calibrate and evaluate on a cache given apart (the copy's own is gone) rewrite the card and the report
    chestaid.calibrate(copied.root, data=nih_cache)
    chestaid.evaluate(copied.root, data=nih_cache)
    card = copied.model_card.read_text()
    assert "Synthetic phantoms" in card and "images of" in card
    assert "Synthetic data" in copied.report.read_text()


def test_a_run_without_manifest_loads_and_says_what_is_unknown(tiny_run, tmp_path):
    from chestaid.apps.page.notes import run_notes as _run_notes
    from chestaid.inference.predictor import Predictor

    old = _copy_without_cache(tiny_run, tmp_path / "old")
    old.manifest.unlink()
    assert "not recorded" in _run_notes(Predictor.load(old.root), old.root)
    card = write_model_card(old.root).read_text()
    assert "Not recorded" in card and "Synthetic phantoms" not in card


def test_a_run_without_manifest_whose_cache_is_here_is_described_from_it(tiny_run, tmp_path):
    old = RunPaths(tmp_path / "old_with_cache")
    shutil.copytree(tiny_run.root, old.root, ignore=shutil.ignore_patterns("checkpoints", "manifest.json"))
    card = write_model_card(old.root).read_text()
    assert "Synthetic phantoms" in card


@pytest.mark.parametrize("splits, fine", [(("train", "test"), True), (("val", "test"), False)])
def test_a_table_whose_splits_lack_val_or_train(nih_root, tmp_path, splits, fine):
    import pandas as pd

    from chestaid.core.errors import ChestaidError
    from chestaid.data.sources import read_source

    table = read_source(nih_root).table
    codes = table["patient_id"].astype("category").cat.codes
    rows = table.assign(split=[splits[c % 2] for c in codes])  # by patient, as a user's own table must be
    labels = list(read_source(nih_root).task.labels)
    rows[["path", "patient_id", "age", "sex", "view", "split", *labels]].to_csv(tmp_path / "mine.csv", index=False)
    if fine:  # val carved from train by patient; the test rows stay as given
        chestaid.prepare(table=tmp_path / "mine.csv", out=tmp_path / "cache", size=32, workers=1)
        studies = pd.read_csv(tmp_path / "cache" / "studies.csv", dtype={"patient_id": str})
        assert set(studies["split"]) == {"train", "val", "test"}
        assert (studies["split"] == "test").sum() == (rows["split"] == "test").sum()
        by_patient = studies.groupby("patient_id")["split"].nunique()
        assert (by_patient[studies.loc[studies["split"] != "test", "patient_id"].unique()] == 1).all()
    else:
        with pytest.raises(ChestaidError, match="0 train and"):
            chestaid.prepare(table=tmp_path / "mine.csv", out=tmp_path / "cache", size=32, workers=1)


def test_quiet_prints_nothing_but_errors_and_the_library_logs(ungated_run, nih_root, tmp_path, caplog):
    import logging

    from typer.testing import CliRunner

    from chestaid.apps.cli import app

    files = [str(p) for p in sorted((nih_root / "images_001" / "images").glob("*.png"))[:3]]
    args = ["predict", str(ungated_run.root), *files, "--out", str(tmp_path / "w.csv")]
    loud = CliRunner().invoke(app, args)
    assert loud.exit_code == 0 and "worklist" in loud.output and "no input gate" in loud.output
    quiet = CliRunner().invoke(app, ["--quiet", *args])
    assert quiet.exit_code == 0 and quiet.output == "", quiet.output
    failed = CliRunner().invoke(app, ["--quiet", "predict", str(ungated_run.root), str(tmp_path / "none.png")])
    assert failed.exit_code != 0 and "error:" in failed.output
    # the library speaks through logging: a caller captures its records
    table = tmp_path / "t.csv"
    from chestaid.data.sources import read_source

    source = read_source(nih_root)
    codes = source.table["patient_id"].astype("category").cat.codes
    source.table.assign(split=["train" if c % 3 else "test" for c in codes])[
        ["path", "patient_id", "age", "sex", "view", "split", *source.task.labels]].to_csv(table, index=False)
    with caplog.at_level(logging.INFO, logger="chestaid"):
        chestaid.prepare(table=table, out=tmp_path / "c", size=32, workers=1)
    assert any(r.name == "chestaid.data.splits" and "carved from train" in r.getMessage() for r in caplog.records)
