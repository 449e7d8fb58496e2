"""Fit calibration and thresholds on validation data, then evaluate a run on its test split.

The order is the guarantee of SPEC B8: `calibrate_run` and `fit_thresholds` read the validation split only
(split by patient into `calib`, which fits, and `val_report`, which reports); `evaluate_run` fits them first
when the run has none, and only then reads the test split.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from chestaid.data.cache import Cache
from chestaid.data.splits import stratified_group_split
from chestaid.core.errors import ChestaidError
from chestaid.evaluation import metrics as M
from chestaid.evaluation.bootstrap import confidence_intervals
from chestaid.evaluation.discrimination import auc_table
from chestaid.evaluation.predictions import predictions_table
from chestaid.evaluation.reviewer import reviewer_figures
from chestaid.evaluation.subgroups import subgroup_report
from chestaid.fitting.calibration import choose
from chestaid.fitting.thresholds import check_policy, thresholds_for
from chestaid.core.fileio import write_json, write_text
from chestaid.inference.calibration import Calibration
from chestaid.inference.predictor import Predictor
from chestaid.inference.thresholds import Thresholds
from chestaid.reporting.model_card import write_model_card
from chestaid.core.run_paths import RunPaths
from chestaid.workflows.cohort import cohort_cache, refuse_calibration_cohort
from chestaid.workflows.monitor import write_reference

DEFAULT_POLICY = {"multi-label": "seed000", "binary": "sensitivity"}  # the seeds' choices (NIH, pneumonia)


@dataclass
class Scores:
    """Raw logits, pooled image features (what the input gate measures) and labels of a set of rows of a cache."""

    logits: np.ndarray
    y: np.ndarray
    rows: pd.DataFrame
    cache: Cache
    features: np.ndarray

    def subset(self, mask: np.ndarray) -> "Scores":
        return Scores(self.logits[mask], self.y[mask], self.rows[mask].reset_index(drop=True), self.cache,
                      self.features[mask])


def score_split(predictor: Predictor, cache: Cache, split: str | None) -> Scores:
    logits, features, rows = predictor.cache_outputs(cache, split)
    return Scores(logits, rows[list(predictor.task.labels)].to_numpy(dtype=int), rows, cache, features)


def calib_mask(scores: Scores, fraction: float, seed: int) -> np.ndarray:
    """True for the `calib` part of validation rows, False for `val_report`; patient-level and stratified."""
    if len(scores.rows) < 4:
        raise ChestaidError(f"only {len(scores.rows)} validation images: too few to calibrate")
    parts = stratified_group_split(scores.rows["patient_id"].astype(str).to_numpy(), scores.y,
                                   (fraction, 1 - fraction), seed)
    return parts == 0


def _open_cache(predictor: Predictor, data: str | Path | None) -> Cache:
    if data is None and predictor.cfg.data.path is None:
        raise ChestaidError("the run has no data of its own (imported weights): give a prepared cache (--data) or a "
                            "local labelled cohort (calibrate --cohort)")
    cache = Cache.open(data or predictor.cfg.data.path)
    if cache.task != predictor.task:
        raise ChestaidError(f"{cache.root}: holds {cache.task.name!r} data ({', '.join(cache.task.labels)}), the run "
                            f"is {predictor.task.name!r} ({', '.join(predictor.task.labels)})")
    return cache


def validation_scores(predictor: Predictor, paths: RunPaths, data: str | Path | None = None,
                      cohort: str | Path | None = None, fraction: float = 0.5,
                      seed: int = 0, since: str | None = None, until: str | None = None,
                      only: list[str] | None = None) -> tuple[Scores, np.ndarray, dict]:
    """Raw validation scores of a run (its val split, or a whole local cohort), the calib mask and where they
    came from. Logits do not depend on the predictor's calibration."""
    cases: list[str] = []
    if cohort is not None:
        (cache, cases), split = cohort_cache(predictor, cohort, since, until, only), None
        source = str(Path(cohort).resolve())
    else:
        cache, split = _open_cache(predictor, data), "val"
        source = str(cache.root)
    scores = score_split(predictor, cache, split)
    mask = calib_mask(scores, fraction, seed)
    info = {"fitted_on": source, "split": split or "whole cohort", "calib_fraction": fraction, "seed": seed,
            "calib_images": int(mask.sum()), "val_report_images": int((~mask).sum())}
    if cohort is not None:  # where its cases were decoded, and (a store's) their content digests: never the cases
        info.update(cohort_cache=str(cache.root.resolve()), cohort_cases=cases,
                    **({"cohort_dates": {"since": since, "until": until}} if since or until else {}))
    return scores, mask, info


def calibrate_run(run: str | Path, data=None, cohort=None, fraction: float = 0.5, seed: int = 0,
                  bins: int = 15, policy: str | None = None, params: dict | None = None,
                  since: str | None = None, until: str | None = None) -> dict:
    """Fit and choose a calibrator per finding (calib → val_report), then refit the thresholds on calib and the
    input gate (on the training split; with a cohort, on the training split and the cohort's calib part, its
    threshold from the cohort's val_report part). A run without training data (imported weights) keeps the
    gate `gate fit` made on local images, or gets one from the cohort alone."""
    paths, predictor = RunPaths(run), Predictor.load(run, raw=True)
    scores, mask, info = validation_scores(predictor, paths, data, cohort, fraction, seed, since, until)
    result = _calibrate(paths, predictor, scores, mask, info, bins, policy, params)
    from chestaid.fitting.gate import current_gate, fit_gate, fit_gate_on_cohort

    trained_here = predictor.cfg.data.path is not None  # imported weights have no training data
    gate = current_gate(paths) if (cohort is None and data is None) or not trained_here else None
    if gate is None and (trained_here or data is not None):
        local = (scores.subset(mask).features, scores.subset(~mask).features) if cohort is not None else None
        gate = fit_gate(paths, predictor, _open_cache(predictor, data), local=local,
                        val=scores.features if cohort is None else None)
    elif gate is None:  # imported weights, no `gate fit` yet: the cohort is all the local images there are
        gate = fit_gate_on_cohort(paths, scores.features[mask], scores.features[~mask], info["fitted_on"])
    result["gate"] = gate.info if gate is not None else {
        "fitted": False, "note": "too few cohort images for an input gate: `chestaid gate fit RUN --images DIR` "
                                 "fits one on unlabelled local images"}
    predictor.load_fitted(run)  # the calibration, thresholds and gate just fitted: the monitor's reference
    write_reference(paths, predictor, scores.logits, scores.features, info["fitted_on"])
    write_model_card(paths.root)
    return result


def _calibrate(paths: RunPaths, predictor: Predictor, scores: Scores, mask: np.ndarray, info: dict, bins: int = 15,
               policy: str | None = None, params: dict | None = None) -> dict:
    labels = predictor.task.labels
    calib, report = scores.subset(mask), scores.subset(~mask)
    chosen, table = {}, []
    for i, name in enumerate(labels):
        chosen[name], candidates = choose(calib.logits[:, i], calib.y[:, i], report.logits[:, i], report.y[:, i], bins)
        table += [{"finding": name, **c, "chosen": c["method"] == chosen[name]["method"]} for c in candidates]
    calibration = Calibration(labels, chosen, {**info, "ece_bins": bins, "selection": "lowest ECE on val_report"})
    calibration.save(paths.calibration)
    paths.metrics.mkdir(exist_ok=True)
    write_text(paths.metrics / "calibration_candidates.csv", pd.DataFrame(table).to_csv(index=False))
    old = Thresholds.load(paths.thresholds) if paths.thresholds.is_file() else None
    policy = policy or (old.policy if old else DEFAULT_POLICY[predictor.task.kind])
    params = params if params is not None else (old.params if old and old.policy == policy else {})
    _fit_and_save_thresholds(paths, labels, calibration(calib.logits), calib.y, policy, params, info)
    return {"calibration": chosen, "candidates": table, **info}


def _fit_and_save_thresholds(paths: RunPaths, labels, scores: np.ndarray, y: np.ndarray, policy: str,
                             params: dict, info: dict) -> Thresholds:
    check_policy(policy, params)
    fitted = thresholds_for(policy, labels, y, scores, {"fitted_on": info["fitted_on"], "part": "calib",
                                                          "images": int(len(y)), "score": "calibrated risk score"},
                            **params)
    fitted.save(paths.thresholds)
    return fitted


def calibration_data(predictor: Predictor, paths: RunPaths, data=None) -> tuple[dict, Scores, np.ndarray, dict]:
    """The validation data a run's calibration was fitted on (its val split, or the local cohort it was
    recalibrated on; the val split with calibrate_run's defaults when it has none yet), split into
    calib/val_report the same way: (calibration info, scores, calib mask, split info)."""
    info = json.loads(paths.calibration.read_text()) if paths.calibration.is_file() else {}
    cohort = info["fitted_on"] if info.get("split") == "whole cohort" and data is None else None
    dates = info.get("cohort_dates") or {}
    return info, *validation_scores(predictor, paths, data, cohort, info.get("calib_fraction", 0.5),
                                    info.get("seed", 0), dates.get("since"), dates.get("until"),
                                    info.get("cohort_cases") or None)


def fit_thresholds(run: str | Path, policy: str, params: dict, data=None) -> Thresholds:
    """Refit thresholds without retraining, on the calib part of validation (same split as calibration)."""
    check_policy(policy, params)
    paths, predictor = RunPaths(run), Predictor.load(run, raw=True)
    info, scores, mask, split_info = calibration_data(predictor, paths, data)
    labels = predictor.task.labels
    calibration = Calibration.load(paths.calibration, labels) if info else Calibration.identity(labels)
    calib = scores.subset(mask)
    return _fit_and_save_thresholds(paths, labels, calibration(calib.logits), calib.y, policy, params, split_info)


def _calibration_rows(name: str, labels, logits: np.ndarray, y: np.ndarray, calibration: Calibration) -> list[dict]:
    before, after = Calibration.identity(labels)(logits), calibration(logits)
    rows = []
    for i, finding in enumerate(labels):
        row = {"set": name, "finding": finding, "method": calibration.params[finding]["method"],
               "positives": int(y[:, i].sum()), "n": int(len(y))}
        for tag, s in (("before", before[:, i]), ("after", after[:, i])):
            defined = 0 < y[:, i].sum() < len(y)
            row.update({f"ece_{tag}": M.ece(y[:, i], s), f"ece_equal_mass_{tag}": M.ece(y[:, i], s, strategy="quantile"),
                        f"brier_{tag}": float(brier_score_loss(y[:, i], s, labels=[0, 1])),
                        f"roc_auc_{tag}": float(roc_auc_score(y[:, i], s)) if defined else None,
                        f"pr_auc_{tag}": float(average_precision_score(y[:, i], s)) if defined else None})
        rows.append(row)
    return rows


def _attach_intervals(summary: dict, per_finding: list[dict], intervals: dict, aucs: dict, binary: bool) -> None:
    """Beside each point estimate its interval (`<metric>_ci_low`, `<metric>_ci_high`): ROC-AUC from clustered
    DeLong on the raw score (`roc_auc_ci_method` says how; the calibrated risk's AUC stays as
    `roc_auc_calibrated`), sensitivity/specificity and the mean AUROC from the patient bootstrap."""
    def bounds(name: str, interval: dict) -> dict:
        return {f"{name}_ci_low": interval["low"], f"{name}_ci_high": interval["high"]}

    for row in per_finding:
        found = intervals["per_finding"][row["finding"]]
        row["roc_auc_calibrated"] = row.get("roc_auc")
        row.update({**aucs[row["finding"]], **bounds("recall", found["sensitivity"]),
                    **bounds("specificity", found["specificity"])})
    if binary:
        found = next(iter(intervals["per_finding"].values()))
        summary["roc_auc_calibrated"] = summary.get("roc_auc")
        summary.update({**next(iter(aucs.values())), **bounds("sensitivity", found["sensitivity"]),
                        **bounds("specificity", found["specificity"])})
    else:
        defined = [a["roc_auc"] for a in aucs.values() if a["roc_auc"] is not None]
        summary["roc_auc_macro_calibrated"] = summary.get("roc_auc_macro")
        summary["roc_auc_macro"] = float(np.mean(defined)) if defined else None
        summary.update(bounds("roc_auc_macro", intervals["mean_roc_auc"]))
        summary["roc_auc_macro_ci_method"] = "patient bootstrap (percentile), raw score"


def evaluate_run(run: str | Path, split: str = "test", data: str | Path | None = None) -> dict:
    """Every metric on `split` (test, or val = the val_report part), with calibration and thresholds fitted on
    validation first when the run has none. Writes RUN/metrics/ and RUN/plots/ and returns the summary."""
    from chestaid.reporting.plots import write_plots

    paths, predictor = RunPaths(run), Predictor.load(run)
    cache = _open_cache(predictor, data)
    refuse_calibration_cohort(paths, cache)
    _, val, mask, split_info = calibration_data(predictor, paths, data)  # the val split, or the recalibration cohort
    if not (predictor.calibrated and predictor.thresholded):
        _calibrate(paths, predictor, val, mask, split_info)  # same data and split as `calibrate_run(run, data)`
        predictor.load_fitted(run)
        write_reference(paths, predictor, val.logits, val.features, split_info["fitted_on"])
    labels, calibration = predictor.task.labels, predictor.calibration
    val_report = val.subset(~mask)
    target = val_report if split == "val" else score_split(predictor, cache, split)  # test is read only now
    scores = predictor.risk_scores(target.logits)
    decisions = predictor.decisions(scores)
    per_finding = M.per_class(target.y, scores, decisions, labels)
    if predictor.task.num_outputs == 1:
        summary = M.binary_summary(target.y[:, 0], scores[:, 0], predictor.thresholds.values[labels[0]])
    else:
        summary = M.multilabel_summary(target.y, scores, decisions)
    patients = target.rows["patient_id"].to_numpy()
    intervals = confidence_intervals(target.y, target.logits, decisions, patients, labels)  # AUC: raw score
    aucs = auc_table(target.y, target.logits, patients, labels)
    _attach_intervals(summary, per_finding, intervals, aucs, binary=predictor.task.num_outputs == 1)
    calibration_table = _calibration_rows("val_report", labels, val_report.logits, val_report.y, calibration)
    if split != "val":
        calibration_table += _calibration_rows(split, labels, target.logits, target.y, calibration)
    distances = predictor.distances(target.features)
    gate = {"fitted": False} if distances is None else {
        "fitted": True, "refused": int((distances > predictor.gate.threshold).sum()), "images": int(len(distances)),
        "share_refused": float((distances > predictor.gate.threshold).mean()) if len(distances) else 0.0,
        "threshold": predictor.gate.threshold, "percentile": predictor.gate.info.get("percentile")}
    result = {"split": "val_report" if split == "val" else split, "task": predictor.task.name, "summary": summary,
              "per_finding": per_finding, "confidence_intervals": intervals,
              "calibration": calibration_table, "input_gate": gate,
              **reviewer_figures(target.y, target.logits, scores, labels),
              "calibration_fitted_on": calibration.info.get("fitted_on"),
              "thresholds": {"policy": predictor.thresholds.policy, "params": predictor.thresholds.params,
                             "values": predictor.thresholds.values}}
    name = result["split"]
    paths.metrics.mkdir(exist_ok=True)
    write_json(paths.split_metrics(name), result)
    write_json(paths.metrics / f"{name}_subgroups.json",
               subgroup_report(target.y, target.logits, decisions, target.rows, labels))
    write_text(paths.metrics / f"{name}_per_finding.csv", pd.DataFrame(per_finding).to_csv(index=False))
    write_text(paths.metrics / f"{name}_calibration.csv", pd.DataFrame(calibration_table).to_csv(index=False))
    thresholds = np.array([predictor.thresholds.values[n] for n in labels])
    table = predictions_table(target, scores, decisions, labels, thresholds)
    write_text(paths.metrics / f"{name}_predictions.csv", table.to_csv(index=False, float_format="%.17g"))
    result["plots"] = [str(p) for p in write_plots(paths, predictor, cache, target, scores, decisions, val_report)]
    from chestaid.reporting.report import build_report

    result["report"] = str(build_report(paths.root, result))
    write_model_card(paths.root)
    return result
