"""The report's sections a reviewer asks for: subgroups and underdiagnosis, calibration beyond ECE, decision
curves, and a "Reporting" section that maps each figure to the TRIPOD+AI (Collins et al., BMJ 2024) or CLAIM
(Tejani et al., Radiol AI 2024) topic it answers. Every value from a file is escaped."""

from __future__ import annotations

import html
import json

import pandas as pd

from chestaid.core.run_paths import RunPaths
from chestaid.data.provenance import manifest_of


def _rate(r: dict) -> str:
    if r.get("value") is None:
        return "–"
    return f"{r['value']:.3f} ({r['ci_low']:.3f}–{r['ci_high']:.3f}), n={r['n']}"


def subgroups_section(paths: RunPaths, split: str, table) -> str:
    """Per sex, age band and view: images, the underdiagnosis (or false-negative) rate and each finding's AUC."""
    found = paths.metrics / f"{split}_subgroups.json"
    if not found.is_file():
        return ""
    report = json.loads(found.read_text())
    parts = [f"<h2>Subgroups and underdiagnosis</h2><p>Rate: {html.escape(report['rate'])} (95% Wilson). ROC-AUC on "
             f"the raw score per group; groups with fewer than {report['min_per_class']} positives or negatives "
             "are marked <i>small</i> instead of given a number. Largest gap: the difference between the highest "
             "and lowest rate of one attribute (Newcombe interval).</p>"]
    for attribute, entry in report["attributes"].items():
        rows = []
        for group, g in entry["groups"].items():
            aucs = {name: ("small" if "note" in f else f"{f['roc_auc']:.3f}" if f.get("roc_auc") is not None else "–")
                    for name, f in g["findings"].items()}
            rows.append({"group": group, "images": g["images"], "patients": g["patients"],
                         "rate (95% CI)": _rate(g["underdiagnosis"]), **aucs})
        gap = entry["largest_gap"]
        note = (f"largest gap {gap['highest']} − {gap['lowest']}: {gap['difference']:+.3f} "
                f"({gap['ci_low']:+.3f} to {gap['ci_high']:+.3f})" if gap else "too few groups with enough cases")
        parts.append(f"<h3>{html.escape(attribute)}</h3><p>{html.escape(note)}</p>" + table(pd.DataFrame(rows)))
    return "".join(parts)


def calibration_stats_section(result: dict, table) -> str:
    """Calibration-in-the-large, slope and Spiegelhalter's test per finding, before and after calibration."""
    stats = result.get("calibration_stats") or {}
    rows = []
    for name, s in stats.items():
        if "note" in s:
            continue
        for when in ("before", "after"):
            c = s[when]
            slope, large = c["slope"], c["intercept"]
            rows.append({"finding": name, "scores": when,
                         "slope (95% CI)": "–" if slope["estimate"] is None else
                         f"{slope['estimate']:.2f} ({slope['ci_low']:.2f}–{slope['ci_high']:.2f})",
                         "calibration-in-the-large (95% CI)": "–" if large["estimate"] is None else
                         f"{large['estimate']:+.2f} ({large['ci_low']:+.2f} to {large['ci_high']:+.2f})",
                         "Spiegelhalter z": c["spiegelhalter_z"], "p": c["spiegelhalter_p"],
                         "why none": slope.get("reason") or ""})
    if not rows:
        return ""
    return ("<h3>Calibration beyond ECE</h3><p>Logistic recalibration of the outcome on logit(score): slope 1 and "
            "intercept 0 (with the slope fixed at 1) mean calibrated; Spiegelhalter's z tests calibration as a "
            "whole. Before = sigmoid of the logit, after = the chosen calibrator.</p>" + table(pd.DataFrame(rows)))


def reporting_section(result: dict, paths: RunPaths, table) -> str:
    """Where each figure a checklist asks for is, with the data's counts and demographics per split."""
    manifest = manifest_of(paths)
    data = manifest.data if manifest else {}
    splits = data.get("splits", {})
    counts = pd.DataFrame([{"split": s, "images": v.get("images"), "patients": v.get("patients")}
                           for s, v in splits.items()]) if splits else pd.DataFrame()
    thresholds = result["thresholds"]
    externals = sorted(p.name for p in paths.external.iterdir()) if paths.external.is_dir() else []
    items = [
        ("TRIPOD+AI data sources; CLAIM data", "synthetic phantoms" if data.get("synthetic") else
         f"layout {data.get('layout', 'not recorded')}, source {data.get('source_name', 'not recorded')}"),
        ("TRIPOD+AI participants; CLAIM data partitions", "images and patients per split below; splits are by "
         "patient (no patient in two splits)"),
        ("TRIPOD+AI participants (demographics); missing data",
         f"age {data.get('age', {})}, sex {data.get('sex', {})}, view {data.get('view', {})}; unknown values "
         "reach the model as the neutral value"),
        ("TRIPOD+AI outcome", f"task {result['task']}: " + ", ".join(r["finding"] for r in result["per_finding"])),
        ("TRIPOD+AI sample size / class imbalance", f"positives in train: {data.get('positives_train', {})}"),
        ("TRIPOD+AI analytical methods (calibration, thresholds); CLAIM validation",
         f"calibrators chosen on the val_report part, fitted on the calib part of "
         f"{result.get('calibration_fitted_on')}; thresholds: policy {thresholds['policy']} on calib; the test "
         "split is never used to fit anything"),
        ("TRIPOD+AI performance with uncertainty; CLAIM statistical measures", "every figure above with a 95% "
         "interval: ROC-AUC clustered DeLong (logit scale, exact rank bound at perfect separation), sensitivity/"
         "specificity Wilson on the patient bootstrap's effective count, mean AUROC patient bootstrap"),
        ("TRIPOD+AI fairness", f"Subgroups and underdiagnosis above (metrics/{result['split']}_subgroups.json)"),
        ("TRIPOD+AI model performance (calibration)", "Calibration section: ECE, slope, intercept, Spiegelhalter, "
         "reliability with Wilson intervals"),
        ("TRIPOD+AI clinical utility", "decision curves (net benefit against treat-all and treat-none)"),
        ("TRIPOD+AI / CLAIM external validation", ", ".join(externals) or "none yet (chestaid evaluate RUN "
         "--data OTHER_CACHE)"),
        ("reproducibility", f"per-image truth, logit and risk: metrics/{result['split']}_predictions.csv"),
    ]
    checklist = pd.DataFrame([{"checklist topic": k, "where / what": v} for k, v in items])
    return ("<h2>Reporting</h2><p>What the TRIPOD+AI and CLAIM checklists ask a paper to report, and where this run "
            "answers it.</p>" + table(checklist) + (table(counts) if len(counts) else
                                                       "<p>Counts per split: not recorded (no manifest).</p>"))
