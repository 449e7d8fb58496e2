"""`chestaid evaluate RUN --data STORE [--since DAY] [--until DAY]`: is this model any good on our patients?

The cases are the store's scored instances with clinicians' verdicts (workflows.local_cases). Where every case was
scored by this very run (same weights, calibration and thresholds), what is evaluated is what the node recorded;
otherwise the run scores the stored images itself. A run needs no calibration for this: an uncalibrated run
(imported weights, day one) gets discrimination — ROC-AUC per finding with its clustered DeLong interval, the mean
with a patient bootstrap interval — and what needs a calibrated score or a fitted threshold (sensitivity and
specificity at the operating point, ECE) is marked not applicable, never computed at 0.5 as if meaningful.

A run version calibrated on cases of a store is evaluated on the others: the cases it was calibrated on (by
content digest, so also in a copy of the store) are left out, and when nothing else remains it is refused. The
figures and the per-case table go to STORE/evaluations/, beside the patients' images, never into the run.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from chestaid.core.errors import ChestaidError
from chestaid.core.fileio import write_json, write_text
from chestaid.core.run_paths import RunPaths
from chestaid.evaluation import metrics as M
from chestaid.evaluation.bootstrap import confidence_intervals, wilson_interval
from chestaid.evaluation.discrimination import auc_table
from chestaid.inference.identity import run_identity, same_model
from chestaid.inference.predictor import Predictor
from chestaid.reporting.external_report import write_external_report
from chestaid.store import Store
from chestaid.workflows.local_cases import (finding_counts, local_cases, selection_digest, store_cases_cache,
                                            too_few)

MIN_EACH = 2  # present and absent cases a finding needs for an AUROC with an interval
NOT_APPLICABLE = ("not applicable: the run's scores are uncalibrated and it has no fitted thresholds "
                  "(chestaid calibrate RUN --cohort STORE --out NEW fits them on local cases)")


def calibration_cases(paths: RunPaths) -> set[str]:
    """The content digests of the local cases the run's calibration was fitted on (empty when none)."""
    if not paths.calibration.is_file():
        return set()
    return set(json.loads(paths.calibration.read_text()).get("cohort_cases") or [])


def _refuse_unrecorded_calibration(paths: RunPaths, store: Path) -> None:
    """A run calibrated on this store by a chestaid that did not record which cases: any of them may be here."""
    if not paths.calibration.is_file():
        return
    info = json.loads(paths.calibration.read_text())
    if (info.get("split") == "whole cohort" and "cohort_cases" not in info
            and str(info.get("fitted_on")) == str(store)):
        raise ChestaidError(f"{store}: {paths.root.name} was calibrated on the cases of a store "
                            f"({info['fitted_on']}) by an earlier chestaid that did not record which: it cannot be "
                            "told apart from its calibration cases; recalibrate it (calibrate --cohort … --out NEW)")


def _day(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d")


def evaluate_on_store(run: str | Path, store: str | Path, since: str | None = None,
                      until: str | None = None, by_study: bool = False) -> dict:
    """The run on the store's labelled cases; see the module docstring."""
    paths, predictor = RunPaths(run).require(), Predictor.load(run, backend="torch")
    store = Path(store).resolve()
    opened = Store.open(store)
    try:
        given = {f for verdicts in opened.latest_verdicts().values() for f, v in verdicts.items()
                 if v in ("present", "absent")}
    finally:
        opened.close()
    counts = finding_counts(store, since, until)  # a finding few cases speak of does not cut the others' cases
    labels = [f for f in predictor.task.labels if f in given and min(counts.get(f, (0, 0))) >= MIN_EACH] or [
        f for f in predictor.task.labels if f in given]
    if not labels:
        raise ChestaidError(f"{store}: no present/absent verdict on any of the run's findings "
                            f"({', '.join(predictor.task.labels)})")
    _refuse_unrecorded_calibration(paths, store)
    cases, left_out = local_cases(store, labels, since, until)
    overlap = cases["case"].isin(calibration_cases(paths))
    used = int(overlap.sum())
    if used:
        days = f"{_day(cases['received_at'][overlap].min())} to {_day(cases['received_at'][overlap].max())}"
        cases = cases[~overlap].reset_index(drop=True)
        if cases.empty:
            raise ChestaidError(f"{store}: all {used} labelled case(s) here were used to calibrate "
                                f"{paths.root.name} (received {days}): evaluate it on other cases (e.g. --since "
                                "a later day)")
    if cases.empty:
        raise ChestaidError(f"{store}: no labelled case to evaluate on ({_left_out(left_out)})")
    problem = too_few(cases, labels, MIN_EACH)
    if problem:
        raise ChestaidError(f"{store}: {problem}; add verdicts (the page's worklist, chestaid verdicts import)")
    applicable = predictor.calibrated and predictor.thresholded
    own = run_identity(run, "torch")
    recorded = all(same_model(model, own) for model in cases["model"])
    y = cases[labels].to_numpy(dtype=int)
    if recorded:
        risk = np.array([[s[f].risk for f in labels] for s in cases["scores"]], dtype=np.float64)
        decisions = np.array([[s[f].decision for f in labels] for s in cases["scores"]], dtype=bool)
        logged = all(s[f].logit is not None for s in cases["scores"] for f in labels)  # ranks as when rescored
        raw = np.array([[s[f].logit for f in labels] for s in cases["scores"]], dtype=np.float64) if logged else risk
        how = "the scores the node recorded with this run"
    else:
        raw, risk, decisions, cases, y = _rescored(predictor, store, cases, labels)
        how = "this run's scores of the stored images (they were scored by another model, or none)"
    images, digest = len(cases), selection_digest(cases)
    if by_study:
        cases, y, raw, risk, decisions = _by_study(cases, y, raw, risk, decisions)
    patients = cases["patient_id"].astype(str).to_numpy()
    aucs = auc_table(y, raw, patients, labels)
    intervals = confidence_intervals(y, raw, decisions, patients, tuple(labels))
    per_finding = [_finding(name, y[:, i], risk[:, i], decisions[:, i], aucs[name], applicable)
                   for i, name in enumerate(labels)]
    out = store / "evaluations" / (f"{paths.root.name}-{str(own['weights_sha256'])[:8]}-{digest}"
                                   + ("-by-study" if by_study else ""))
    result = {"external": True, "local": True, "run": paths.root.name, "data": str(store), "data_task": "local cases",
              "split": "all labelled cases" + (f" received {since or '…'} to {until or '…'}" if since or until else ""),
              "images": images, "patients": int(len(set(patients))),
              **({"studies": int(len(cases)), "unit": "study (per finding the highest score of its read images, "
                                                     "flagged when any is; present when any verdict is)"}
                 if by_study else {}),
              "label_map": {f: f for f in labels}, "scores": how, "score_name": predictor.score_name,
              "calibration_cases_left_out": used, "left_out": left_out,
              "received": {"from": _day(cases["received_at"].min()), "to": _day(cases["received_at"].max())},
              "mean_roc_auc": _mean(per_finding, intervals), "per_finding": per_finding,
              "input_gate": {"fitted": False, "refused": None, "images": int(len(cases))},
              "note": ("discrimination only: " + NOT_APPLICABLE) if not applicable else
              "the run's own calibration and thresholds, as fitted"}
    write_json(out / "metrics.json", result)
    table = cases[["study_uid", "sop_uid", "patient_id", "received_at"]].copy()
    for i, name in enumerate(labels):
        table[name], table[f"{name} score"], table[f"{name} decision"] = y[:, i], risk[:, i], decisions[:, i]
    write_text(out / "predictions.csv", table.to_csv(index=False, float_format="%.17g"))
    result["report"] = str(write_external_report(out / "report.html", result))
    return result


def _finding(name: str, y: np.ndarray, risk: np.ndarray, decisions: np.ndarray, auc: dict,
             applicable: bool) -> dict:
    pos, neg = int(y.sum()), int(len(y) - y.sum())
    entry = {"finding": name, "data_label": name, "positives": pos, "negatives": neg, **auc,
             "too_few": pos < MIN_EACH or neg < MIN_EACH}
    if not applicable:
        return {**entry, "sensitivity": None, "sensitivity_ci": [None, None], "specificity": None,
                "specificity_ci": [None, None], "ece": None, "not_applicable": NOT_APPLICABLE}
    tp, tn = int((decisions & (y == 1)).sum()), int((~decisions & (y == 0)).sum())
    return {**entry, "ece": M.ece(y, risk),
            "sensitivity": tp / pos if pos else None,
            "sensitivity_ci": list(wilson_interval(tp / pos, pos, 0.95)) if pos else [None, None],
            "specificity": tn / neg if neg else None,
            "specificity_ci": list(wilson_interval(tn / neg, neg, 0.95)) if neg else [None, None]}


def _mean(per_finding: list[dict], intervals: dict) -> dict:
    """The mean ROC-AUC over the findings that have one, with its patient bootstrap interval."""
    values = [f["roc_auc"] for f in per_finding if f["roc_auc"] is not None]
    bounds = intervals["mean_roc_auc"]
    return {"estimate": float(np.mean(values)) if values else None, "ci_low": bounds["low"],
            "ci_high": bounds["high"], "method": "mean over findings; patients resampled with replacement "
                                                  f"({intervals['resamples']} times, percentile interval)"}


def _rescored(predictor: Predictor, store: Path, cases, labels: list[str]):
    """(raw logits, risk, decisions, cases, y) of the run scoring the cases' images from a cache in the store."""
    cache = store_cases_cache(store, cases, labels, predictor.image_size, predictor.task.name, "evaluate")
    logits, _, rows = predictor.cache_outputs(cache, None)
    index = [predictor.task.labels.index(f) for f in labels]
    kept = cases.set_index("path").loc[rows["path"].astype(str)].reset_index()  # an unreadable image drops out
    risk = predictor.risk_scores(logits)
    return (logits[:, index], risk[:, index], predictor.decisions(risk)[:, index], kept,
            kept[labels].to_numpy(dtype=int))


def _by_study(cases: pd.DataFrame, y, raw, risk, decisions):
    """One case per study: per finding the highest raw score and risk of its read images (calibration is monotone,
    so both pick the same image), flagged when any image is, present when any image's verdict is."""
    groups = cases.groupby("study_uid", sort=False).indices
    index = list(groups.values())
    studies = pd.DataFrame([{"study_uid": uid, "sop_uid": "|".join(cases["sop_uid"].iloc[rows]),
                             "patient_id": cases["patient_id"].iloc[rows[0]],
                             "received_at": cases["received_at"].iloc[rows].max()} for uid, rows in groups.items()])
    return (studies, np.array([y[rows].max(axis=0) for rows in index]),
            np.array([raw[rows].max(axis=0) for rows in index]), np.array([risk[rows].max(axis=0) for rows in index]),
            np.array([decisions[rows].any(axis=0) for rows in index]))


def _left_out(left_out: dict) -> str:
    said = [f"{n} {why.replace('_', ' ')}" for why, n in left_out.items() if n]
    return "; ".join(said) if said else "no instance has a verdict yet"
