"""evaluate's ROC-AUC intervals (clustered DeLong on the raw score), the predictions anyone can recompute from,
and `chestaid compare` of two runs on the same test images."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

import chestaid
from chestaid.apps.cli import app
from chestaid.core.errors import ChestaidError
from chestaid.core.run_paths import RunPaths
from chestaid.evaluation.delong import auc_interval, delong_auc


@pytest.fixture(scope="module")
def evaluated(pneumonia_run, tmp_path_factory) -> RunPaths:
    run = RunPaths(tmp_path_factory.mktemp("cmp") / "a")
    shutil.copytree(pneumonia_run.root, run.root, ignore=shutil.ignore_patterns("checkpoints"))
    chestaid.evaluate(run.root)
    return run


def test_predictions_carry_raw_scores_and_the_auc_is_recomputable(evaluated):
    result = json.loads(evaluated.split_metrics("test").read_text())
    table = pd.read_csv(evaluated.metrics / "test_predictions.csv", dtype={"patient_id": str})
    name = result["per_finding"][0]["finding"]
    assert {"image_id", "patient_id", "age", "sex", "view", f"{name}_logit", f"{name}_risk"} <= set(table.columns)
    y, raw = table[f"{name}_true"].to_numpy(), table[f"{name}_logit"].to_numpy()
    summary = result["summary"]
    assert summary["roc_auc"] == pytest.approx(roc_auc_score(y, raw), abs=1e-12)  # on the raw score
    low, high, method = auc_interval(delong_auc(y, raw, table["patient_id"].to_numpy()))
    assert (summary["roc_auc_ci_low"], summary["roc_auc_ci_high"]) == pytest.approx((low, high), abs=1e-12)
    assert summary["roc_auc_ci_method"] == method and method.startswith("delong")
    assert 0 < summary["roc_auc_ci_low"] < summary["roc_auc"] < summary["roc_auc_ci_high"] < 1
    assert "roc_auc_calibrated" in summary


def test_a_run_compared_with_itself_differs_by_nothing(evaluated):
    result = chestaid.compare(evaluated.root, evaluated.root, resamples=200)
    for row in result["findings"].values():
        assert row["delta"] == 0 and row["p"] == 1 and row["p_holm"] == 1 and row["mcnemar"]["p"] == 1
    assert result["mean"]["delta"] == 0
    out = evaluated.compare / evaluated.root.name
    assert json.loads((out / "comparison.json").read_text())["findings"].keys() == result["findings"].keys()
    assert (out / "comparison.html").is_file()


def test_compare_two_runs_and_refuse_other_images(evaluated, tmp_path):
    other = RunPaths(tmp_path / "b")
    shutil.copytree(evaluated.root, other.root)
    file = other.metrics / "test_predictions.csv"
    table = pd.read_csv(file, dtype={"patient_id": str, "image_id": str})
    name = [c for c in table.columns if c.endswith("_logit")][0][:-6]
    rng = np.random.default_rng(0)
    table[f"{name}_logit"] = table[f"{name}_logit"] + rng.normal(0, 2, len(table))  # a worse model
    table.to_csv(file, index=False)
    result = CliRunner().invoke(app, ["compare", str(evaluated.root), str(other.root), "--resamples", "200"])
    assert result.exit_code == 0, result.output
    row = json.loads((evaluated.compare / "b" / "comparison.json").read_text())["findings"][name]
    y = table[f"{name}_true"].to_numpy()
    assert row["auc_b"] == pytest.approx(roc_auc_score(y, table[f"{name}_logit"]), abs=1e-12)
    assert row["delta"] == pytest.approx(row["auc_b"] - row["auc_a"]) and row["ci_low"] < row["delta"] < row["ci_high"]
    assert 0 <= row["p"] <= 1
    table.iloc[1:].to_csv(file, index=False)
    with pytest.raises(ChestaidError, match="other images than"):  # main() prints it as one line, exit 2
        chestaid.compare(evaluated.root, other.root)


def test_subgroups_calibration_and_decision_curve_are_recomputable(evaluated):
    from chestaid.evaluation.decision_curve import net_benefit
    from chestaid.evaluation.subgroups import MIN_PER_CLASS

    result = json.loads(evaluated.split_metrics("test").read_text())
    table = pd.read_csv(evaluated.metrics / "test_predictions.csv", dtype={"patient_id": str})
    name = result["per_finding"][0]["finding"]
    y, risk = table[f"{name}_true"].to_numpy(), table[f"{name}_risk"].to_numpy()
    curve = result["decision_curve"][name]
    assert curve["net_benefit"] == pytest.approx(list(net_benefit(y, risk, np.asarray(curve["threshold"]))))
    assert curve["treat_all"][0] == pytest.approx(y.mean() - (1 - y.mean()) * 0.01 / 0.99)
    stats = result["calibration_stats"][name]
    assert {"before", "after"} <= set(stats) and "slope" in stats["after"]
    subgroups = json.loads((evaluated.metrics / "test_subgroups.json").read_text())
    assert set(subgroups["attributes"]) == {"sex", "age_band", "view"}
    sex = subgroups["attributes"]["sex"]["groups"]
    assert sum(g["images"] for g in sex.values()) == ((table["sex"] == "M") | (table["sex"] == "F")).sum()
    for group, entry in sex.items():  # the false-negative rate of each group, from the predictions
        members = table[table["sex"] == group]
        sick = members[f"{name}_true"] == 1
        missed = (sick & (members[f"{name}_decision"] == 0)).sum()
        assert entry["underdiagnosis"]["n"] == sick.sum()
        if sick.sum():
            assert entry["underdiagnosis"]["value"] == pytest.approx(missed / sick.sum())
        finding = entry["findings"][name]
        small = min(finding["positives"], finding["negatives"]) < MIN_PER_CLASS
        assert ("note" in finding) == small and ("roc_auc" in finding) != small
