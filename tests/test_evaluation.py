"""Evaluation end to end: metrics and plots on disk, the report embeds every plot, the test split is never read
while calibrators or thresholds are fitted, binary operating point, recalibration on a local cohort."""

from __future__ import annotations

import hashlib
import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from chestaid.apps.cli import app
from chestaid.data.dataset import CacheDataset
from chestaid.data.phantoms.synthetic import synth_pneumonia
from chestaid.workflows.runs import calibrate_run, evaluate_run, fit_thresholds
from chestaid.fitting.thresholds import POLICIES
from chestaid.core.run_paths import RunPaths


def _copy_run(paths: RunPaths, dest) -> RunPaths:
    """config + weights + log: all that evaluation needs (checkpoints are not copied)."""
    dest.mkdir()
    for f in (paths.config, paths.weights, paths.train_log):
        shutil.copy(f, dest / f.name)
    return RunPaths(dest)


def test_evaluate_writes_metrics_and_the_report_embeds_every_plot(tiny_run, tmp_path):
    run = _copy_run(tiny_run, tmp_path / "run")
    result = evaluate_run(run.root)
    for name in ("test_metrics.json", "test_per_finding.csv", "test_calibration.csv", "test_predictions.csv",
                 "calibration_candidates.csv"):
        assert (run.metrics / name).stat().st_size > 0, name
    assert run.calibration.is_file() and run.thresholds.is_file()
    metrics = json.loads((run.metrics / "test_metrics.json").read_text())
    assert {"exact_match_ratio", "hamming_loss", "label_ranking_average_precision", "f1_macro",
            "recall_micro"} <= set(metrics["summary"])
    assert len(metrics["per_finding"]) == 14
    plots = {p.name for p in run.plots.glob("*.png")}
    assert {"roc_curves.png", "pr_curves.png", "confusion_matrices.png", "examples.png", "training_loss.png",
            "training_metrics.png", "reliability_val_report.png", "reliability_test.png",
            "label_distribution.png", "age_histogram.png", "sex_proportion.png"} <= plots
    assert set(result["plots"]) == {str(run.plots / p) for p in plots}
    page = run.report.read_text()
    embedded = set(re.findall(r'data-file="([^"]+)" src="data:image/png;base64,', page))
    assert embedded == plots
    assert "calibrated risk score" in page and "does not diagnose" in page and "qualitative" in page
    summary = metrics["summary"]
    assert summary["roc_auc_macro_ci_low"] <= summary["roc_auc_macro"] <= summary["roc_auc_macro_ci_high"]
    assert metrics["confidence_intervals"]["method"].startswith("patients resampled with replacement")
    for row in metrics["per_finding"]:
        if row["roc_auc"] is not None and row["roc_auc_ci_low"] is not None:
            assert row["roc_auc_ci_low"] <= row["roc_auc"] <= row["roc_auc_ci_high"]
    assert "95% CI" in page and f"{summary['roc_auc_macro_ci_low']:.3f}–{summary['roc_auc_macro_ci_high']:.3f}" in page


def test_the_test_split_is_never_read_while_fitting(tiny_run, tmp_path, monkeypatch):
    run = _copy_run(tiny_run, tmp_path / "run")
    reads: list[str] = []
    original = CacheDataset.__getitem__

    def guarded(self, i):
        split = self.rows["split"].iat[i]
        reads.append(split)
        if guard["on"] and split == "test":
            raise AssertionError("a test image was read while fitting")
        return original(self, i)

    guard = {"on": True}
    monkeypatch.setattr(CacheDataset, "__getitem__", guarded)
    calibrate_run(run.root)
    for policy in POLICIES:
        fit_thresholds(run.root, policy, {})
    assert "val" in reads and set(reads) <= {"train", "val"}  # calibration reads val; a refitted gate train
    guard["on"] = False
    evaluate_run(run.root)  # evaluation reads test, after fitting
    assert "test" in reads


def test_calibration_and_thresholds_ignore_test_labels_and_pixels(tiny_run, nih_cache, tmp_path):
    altered = tmp_path / "cache"
    shutil.copytree(nih_cache, altered)
    table = pd.read_csv(altered / "studies.csv", keep_default_na=False)
    test = table["split"] == "test"
    findings = [c for c in table.columns if c[0].isupper()]
    table.loc[test, findings] = 1 - table.loc[test, findings].to_numpy()
    table.to_csv(altered / "studies.csv", index=False)
    images = np.load(altered / "images.npy", mmap_mode="r+")
    images[np.flatnonzero(test.to_numpy())] = 255 - images[np.flatnonzero(test.to_numpy())]
    images.flush()
    outputs = []
    for i, cache in enumerate((nih_cache, altered)):
        run = _copy_run(tiny_run, tmp_path / f"run{i}")
        calibrate_run(run.root, data=cache)
        outputs.append([{k: v for k, v in json.loads(p.read_text()).items() if k != "fitted_on"}
                        for p in (run.calibration, run.thresholds)])
    assert outputs[0] == outputs[1]


def test_binary_operating_point_and_calibration(pneumonia_run, tmp_path):
    run = _copy_run(pneumonia_run, tmp_path / "run")
    result = CliRunner().invoke(app, ["thresholds", str(run.root), "--policy", "sensitivity", "--param", "target=0.9"])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(app, ["evaluate", str(run.root)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((run.metrics / "test_metrics.json").read_text())
    summary = metrics["summary"]
    for key in ("roc_auc", "pr_auc", "brier", "ece", "sensitivity", "specificity", "accuracy", "ppv", "npv", "f1",
                "balanced_accuracy", "confusion_matrix"):
        assert summary[key] is not None, key
    assert summary["roc_auc"] >= 0.8
    for name in ("roc_auc", "sensitivity", "specificity"):  # the operating point's figures with their intervals
        assert summary[f"{name}_ci_low"] <= summary[name] <= summary[f"{name}_ci_high"], name
    assert metrics["thresholds"]["policy"] == "sensitivity"
    report = [r for r in metrics["calibration"] if r["set"] == "val_report"][0]
    assert report["ece_after"] <= report["ece_before"]


def test_recalibration_on_a_local_cohort_keeps_the_weights(pneumonia_run, tmp_path):
    run = _copy_run(pneumonia_run, tmp_path / "run")
    before = hashlib.sha256(run.weights.read_bytes()).hexdigest()
    cohort = synth_pneumonia(tmp_path / "cohort", n=150, size=64, seed=99, workers=2)
    result = CliRunner().invoke(app, ["calibrate", str(run.root), "--cohort", str(cohort)])
    assert result.exit_code == 0, result.output
    info = json.loads(run.calibration.read_text())
    assert info["fitted_on"] == str(cohort.resolve()) and info["calib_images"] + info["val_report_images"] == 150
    assert json.loads(run.thresholds.read_text())["fitted_on"] == str(cohort.resolve())
    assert hashlib.sha256(run.weights.read_bytes()).hexdigest() == before
    fit_thresholds(run.root, "youden", {})  # a later refit stays on the cohort the calibration came from
    assert json.loads(run.thresholds.read_text())["fitted_on"] == str(cohort.resolve())
    result = evaluate_run(run.root)  # its val_report figures come from the cohort's val_report part too
    assert result["calibration_fitted_on"] == str(cohort.resolve())
    report = [r for r in result["calibration"] if r["set"] == "val_report"][0]
    assert report["n"] == info["val_report_images"]


def test_unknown_policy_is_a_clear_error(tiny_run, tmp_path):
    run = _copy_run(tiny_run, tmp_path / "run")
    result = CliRunner().invoke(app, ["thresholds", str(run.root), "--policy", "magic"])
    assert result.exit_code != 0
    with pytest.raises(Exception, match="unknown threshold policy"):
        fit_thresholds(run.root, "magic", {})
