"""`evaluate --data` on another dataset: the NIH run scored on a pneumonia cache's Pneumonia label only, into
RUN/external/NAME/, with the run's own calibration and thresholds (nothing fitted on the other data)."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

import chestaid
from chestaid.core.errors import ChestaidError
from chestaid.core.run_paths import RunPaths


def test_the_nih_run_on_the_pneumonia_cache(tiny_run, nih_cache, kaggle_root, tmp_path):
    from chestaid.data.cache import prepare

    prepare(kaggle_root, tmp_path / "pneumonia_cache", size=64, workers=1)
    run = RunPaths(tmp_path / "nih")
    shutil.copytree(tiny_run.root, run.root, ignore=shutil.ignore_patterns("checkpoints"))
    with pytest.raises(ChestaidError, match="calibrate it on its own validation data first"):
        chestaid.evaluate(run.root, data=tmp_path / "pneumonia_cache")
    chestaid.calibrate(run.root)
    calibration = run.calibration.read_bytes()
    result = chestaid.evaluate(run.root, data=tmp_path / "pneumonia_cache")
    assert result["external"] and result["label_map"] == {"Pneumonia": "Pneumonia"}
    out = run.external_for(tmp_path / "pneumonia_cache")
    assert out.parent == run.external and out.name.startswith("pneumonia_cache-")
    assert run.external_for(tmp_path / "other" / "pneumonia_cache") != out  # same name, another cache
    assert {"metrics.json", "predictions.csv", "subgroups.json", "report.html"} <= {p.name for p in out.iterdir()}
    assert "External data" in (out / "report.html").read_text()
    table = pd.read_csv(out / "predictions.csv")
    studies = pd.read_csv(tmp_path / "pneumonia_cache" / "studies.csv")
    assert len(table) == (studies["split"] == "test").sum() == result["images"]
    row = result["per_finding"][0]
    assert row["roc_auc"] == pytest.approx(roc_auc_score(table["Pneumonia_true"], table["Pneumonia_logit"]))
    assert [c for c in table.columns if c.endswith("_logit")] == ["Pneumonia_logit"]  # shared labels only
    assert run.calibration.read_bytes() == calibration and not run.split_metrics("test").exists()
    everything = chestaid.evaluate(run.root, "all", data=tmp_path / "pneumonia_cache")
    assert everything["images"] == len(studies)
    with pytest.raises(ChestaidError, match="not labels of the run"):
        chestaid.evaluate(run.root, data=tmp_path / "pneumonia_cache", label_map={"Pneumothorax": "NORMAL"})
    assert json.loads((out / "metrics.json").read_text())["split"] == "all"
