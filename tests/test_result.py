"""One result type (inference.result.Scored): the HTTP API's JSON, a worklist row and the predictions table for
the same image come from it and agree field by field."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

import chestaid
from chestaid.core.run_paths import RunPaths
from chestaid.inference.predictor import Predictor
from chestaid.workflows.predict import predict_worklist


def test_api_json_worklist_row_and_predictions_row_agree(ungated_run, nih_cache, tmp_path):
    run = RunPaths(tmp_path / "run")
    shutil.copytree(ungated_run.root, run.root)
    chestaid.evaluate(run.root)
    table = pd.read_csv(run.metrics / "test_predictions.csv", dtype={"image_id": str, "patient_id": str})
    studies = pd.read_csv(nih_cache / "studies.csv", dtype={"image_id": str, "patient_id": str})
    study = studies[studies["image_id"] == table["image_id"].iloc[0]].iloc[0]
    given = {"age": float(study["age"]), "sex": study["sex"], "view": study["view"]}
    expected = table.iloc[0]

    predictor = Predictor.load(run.root)
    scored, _ = predictor.score_files([study["path"]], patient=given)
    answer = scored[0].to_json()  # what the page's /score returns per image (apps/page adds the run's facts)
    worklist = pd.read_csv(predict_worklist(run.root, [study["path"]], tmp_path / "w.csv", patient=given).out,
                           keep_default_na=False)  # an empty "flagged" is no finding, not NaN
    row = worklist.iloc[0]
    labels = predictor.task.labels
    for name in labels:
        found = answer["findings"][name]
        # the same image and patient vector; only the batch composition differs (oneDNN may pick other kernels)
        assert found["logit"] == pytest.approx(expected[f"{name}_logit"], abs=1e-4)
        assert found["risk_score"] == pytest.approx(expected[f"{name}_risk"], abs=1e-4)
        assert found["risk_score"] == pytest.approx(row[f"{name}_risk"], abs=1e-9)
        assert found["decision"] == expected[f"{name}_decision"] == row[f"{name}_decision"]
    for key in ("age", "sex", "view"):
        assert answer["patient"][key] == row[key] == expected[key]
    top = int(np.argmax([answer["findings"][n]["risk_score"] for n in labels]))
    assert row["top_finding"] == labels[top] and row["risk"] == pytest.approx(answer["findings"][labels[top]]
                                                                              ["risk_score"], abs=1e-9)
    assert set(row["flagged"].split("|")) - {""} == {n for n in labels if answer["findings"][n]["decision"]}
