"""RUN/report.html: one self-contained page (figures embedded) that a person can read."""

from __future__ import annotations

import base64
import html
import json
import time
from pathlib import Path

import pandas as pd

from chestaid.evaluation.bootstrap import with_interval
from chestaid.core.fileio import write_text
from chestaid.core.run_paths import RunPaths
from chestaid.reporting.reviewer_sections import (calibration_stats_section, reporting_section,
                                                  subgroups_section)

STATEMENTS = [
    "The numbers are <b>calibrated risk scores</b>, not clinical probabilities: a score of 0.8 does not mean "
    "an 80% chance of disease in your patients, and calibration fitted on one population drifts on another "
    "(recalibrate on a local cohort with <code>chestaid calibrate RUN --cohort DIR</code>).",
    "Heat maps are <b>qualitative explanations</b> of where the network looked, not lesion masks.",
    "chestaid <b>supports triage and double-checking; it does not diagnose</b>. Every decision stays with a "
    "clinician.",
]
SYNTHETIC = ("<b>Synthetic data</b>: this run was trained and evaluated on phantom images drawn by "
             "<code>chestaid synth</code>. The figures show that each part works, not how well a model reads "
             "real chest X-rays.")
UNKNOWN_DATA = ("<b>Training data not recorded</b>: this run has no manifest.json and its training cache is not "
                "here, so nothing is known about what it was trained on (real or synthetic images).")
CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{margin-bottom:.2em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;font-size:13px;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%;margin:.5em 0}
.warn{background:#fff6e0;border-left:5px solid #e0a800;padding:.6em 1em}.muted{color:#666;font-size:13px}
.grid{display:flex;flex-wrap:wrap;gap:10px}.grid img{max-width:48%}"""


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" data-file="{html.escape(path.name)}" src="data:image/png;base64,{data}">'


def _table(frame: pd.DataFrame, digits: int = 3) -> str:
    return frame.to_html(index=False, float_format=lambda v: f"{v:.{digits}f}", na_rep="–", border=0)


def _synthetic_note(paths: RunPaths) -> list[str]:
    from chestaid.data.provenance import manifest_of

    manifest = manifest_of(paths)
    if manifest is None:
        return [UNKNOWN_DATA]
    return [SYNTHETIC] if manifest.synthetic else []


def _per_finding_table(rows: list[dict]) -> pd.DataFrame:
    """Per-finding metrics with the bootstrap intervals folded into their columns."""
    table = pd.DataFrame(rows)
    shown = table.drop(columns=[c for c in table.columns if "_ci_" in c] + ["n"])
    for name, title in (("roc_auc", "roc_auc (95% CI)"), ("recall", "sensitivity (95% CI)"),
                        ("specificity", "specificity (95% CI)")):
        if f"{name}_ci_low" in table:
            shown[name] = [with_interval(row, name) for row in rows]
            shown = shown.rename(columns={name: title})
    return shown


def _glance(result: dict, calib_mean: pd.DataFrame, paths: RunPaths) -> str:
    """The headline figures first: discrimination (95% CIs resampling patients), calibration, localisation."""
    summary, split = result["summary"], result["split"]
    if "roc_auc" in summary:
        rows = [("ROC-AUC (95% CI)", with_interval(summary, "roc_auc")),
                ("sensitivity at the operating point (95% CI)", with_interval(summary, "sensitivity")),
                ("specificity at the operating point (95% CI)", with_interval(summary, "specificity"))]
    else:
        rows = [("ROC-AUC, mean over findings (95% CI)", with_interval(summary, "roc_auc_macro")),
                ("macro F1 at the thresholds", summary["f1_macro"])]
    ece = calib_mean[calib_mean["set"] == split]
    if len(ece):
        rows.append(("ECE raw → calibrated (mean over findings)",
                     f"{ece['ece_before'].iloc[0]:.3f} → {ece['ece_after'].iloc[0]:.3f}"))
    pointing = paths.pointing_game()
    if pointing is not None:
        rows.append(("Grad-CAM pointing game, mean over findings", pointing))
    gate = result.get("input_gate", {})
    rows.append(("images the input gate would refuse (unlike the training images)",
                 f"{gate['refused']} of {gate['images']} (threshold {gate['threshold']:.1f}, the "
                 f"{gate['percentile']}th percentile of validation; metrics include them)" if gate.get("fitted")
                 else "no input gate fitted (chestaid calibrate RUN fits one)"))
    table = pd.DataFrame([{f"on {split}": name, "value": value} for name, value in rows])
    return "<h2>At a glance</h2>" + _table(table, 3)


def _localisation(paths: RunPaths) -> str:
    """The Grad-CAM localisation section, when `chestaid explain` has scored the run against boxes."""
    found = paths.localisation
    if not found.is_file():
        return ""
    result = json.loads(found.read_text())
    table = pd.DataFrame(result["findings"])
    examples = paths.explain / "localisation_examples.png"
    return ("<h2>Grad-CAM localisation</h2><p>Heat maps are qualitative explanations. Scored against the "
            f"annotated boxes of the <b>{html.escape(str(result['split']))}</b> split: pointing game (is the map's "
            "maximum inside a box of that finding?) and the share of boxes whose IoBB with the map thresholded at "
            f"{result['threshold']} exceeds 0.1, 0.25 and 0.5 (Wang et al. 2017). Target layer(s): "
            f"<code>{html.escape(', '.join(result['target_layers']))}</code>.</p>" + _table(table, 2)
            + (_img(examples, "localisation examples") if examples.is_file() else ""))


def _bootstrap_text(result: dict) -> str:
    found = result.get("confidence_intervals") or {}
    return f"{found.get('resamples', '?')} resamples of {found.get('patients', '?')} patients"


def build_report(run: str | Path, result: dict) -> Path:
    """Write RUN/report.html from the evaluation result and every PNG in RUN/plots/."""
    paths = RunPaths(run)
    plots = {p.stem: p for p in sorted(paths.plots.glob("*.png"))}
    used: set[str] = set()

    def figure(*names: str, wide: bool = False) -> str:
        present = [n for n in names if n in plots]
        used.update(present)
        images = "".join(_img(plots[n], n.replace("_", " ")) for n in present)
        return f"<div>{images}</div>" if wide else f'<div class="grid">{images}</div>'

    def value(v) -> str:
        if v is None:
            return "–"
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    cfg = (paths.config.read_text() if paths.config.is_file() else "")
    found = result["summary"]
    summary = pd.DataFrame([{"metric": k + (" (95% CI)" if f"{k}_ci_low" in found else ""),
                             "value": with_interval(found, k) if f"{k}_ci_low" in found else value(v)}
                            for k, v in found.items() if not isinstance(v, dict) and "_ci_" not in k])
    matrix = result["summary"].get("confusion_matrix")
    if matrix:
        summary.loc[len(summary)] = ["confusion matrix at the operating point",
                                     "TN {tn} · FP {fp} · FN {fn} · TP {tp}".format(**matrix)]
    per_finding = _per_finding_table(result["per_finding"])
    calibration = pd.DataFrame(result["calibration"])
    calib_mean = calibration.groupby("set")[["ece_before", "ece_after", "ece_equal_mass_before",
                                             "ece_equal_mass_after", "brier_before", "brier_after",
                                             "roc_auc_before", "roc_auc_after"]].mean().reset_index()
    thresholds = result["thresholds"]
    threshold_table = pd.DataFrame([{"finding": k, "threshold": v} for k, v in thresholds["values"].items()])
    log = pd.read_csv(paths.train_log) if paths.train_log.is_file() else pd.DataFrame()
    parts = [
        f"<h1>chestaid run report</h1><p class='muted'>{html.escape(str(paths.root.resolve()))} · task "
        f"<b>{result['task']}</b> · evaluated on <b>{result['split']}</b> · {time.strftime('%Y-%m-%d %H:%M')}</p>",
        "<div class='warn'>" + "<br>".join(_synthetic_note(paths) + STATEMENTS) + "</div>",
        _glance(result, calib_mean, paths),
        f"<h2>Results on {result['split']}</h2><p>Computed on calibrated risk scores, decisions at the thresholds "
        "below. AUCs are omitted (–) where a finding has no positives or no negatives. In brackets: 95% "
        "confidence intervals: ROC-AUC on the raw score (logit) by DeLong's method clustered by patient, on the "
        "logit scale (an exact rank bound when a finding is perfectly separated); the mean ROC-AUC, sensitivity "
        f"and specificity from a bootstrap that resamples patients ({_bootstrap_text(result)}; sensitivity and "
        "specificity: Wilson score intervals on the effective count); narrow only when the split is large.</p>"
        + _table(summary, 4)
        + _table(per_finding, 3) + figure("roc_curves", "pr_curves")
        + figure("confusion_matrices", wide=True),
        "<h2>Calibration</h2><p>Temperature, Platt and isotonic calibrators (and none) were fitted per finding on "
        "the <code>calib</code> part of validation and the lowest ECE on <code>val_report</code> was kept, so "
        "val_report figures are optimistic; the test figures are the unbiased ones. ECE uses 15 equal-width "
        "bins; the equal-mass variant is shown beside it. Fitted on "
        f"<code>{html.escape(str(result.get('calibration_fitted_on')))}</code>. Means over findings:</p>"
        + _table(calib_mean, 4)
        + _table(calibration[["set", "finding", "method", "positives", "ece_before", "ece_after", "brier_before",
                              "brier_after", "roc_auc_before", "roc_auc_after"]], 3)
        + figure("reliability_val_report", "reliability_test", f"reliability_wilson_{result['split']}")
        + calibration_stats_section(result, _table),
        "<h2>Decision curves</h2><p>Net benefit of acting on the calibrated risk score at each threshold "
        "probability, against treating everyone and no one (Vickers &amp; Elkin 2006); the table is in "
        "test_metrics.json (decision_curve).</p>" + figure(f"decision_curves_{result['split']}"),
        subgroups_section(paths, result["split"], _table),
        f"<h2>Thresholds</h2><p>Policy <b>{html.escape(thresholds['policy'])}</b> with parameters "
        f"<code>{html.escape(json.dumps(thresholds['params']))}</code>, fitted on the calib part of validation "
        "only (never on test), applied to calibrated risk scores. Refit with "
        "<code>chestaid thresholds RUN --policy …</code>.</p>" + _table(threshold_table, 3),
        _localisation(paths),
        "<h2>Examples</h2>" + figure("examples"),
        "<h2>Data</h2><p>Label distribution (train part before and after balancing when a recipe was used), age "
        "and sex of the whole table of studies.</p>" + figure("label_distribution", "age_histogram", "sex_proportion"),
        "<h2>Training</h2><p>Per-epoch table (SPEC A14; validation decisions at 0.5, AUROC averaged over "
        "findings with positives and negatives in validation).</p>" + (_table(log, 4) if len(log) else "<p>no log</p>")
        + figure("training_loss", "training_metrics")
        + f"<details><summary>config.yaml</summary><pre>{html.escape(cfg)}</pre></details>",
    ]
    parts.append(reporting_section(result, paths, _table))
    rest = [n for n in plots if n not in used]
    if rest:
        parts.append("<h2>Other figures</h2>" + figure(*rest))
    parts.append("<h2>What this is</h2><ul>" + "".join(f"<li>{s}</li>" for s in STATEMENTS) + "</ul>")
    page = f"<!doctype html><html><head><meta charset='utf-8'><title>chestaid report</title><style>{CSS}</style>" \
           f"</head><body>{''.join(parts)}</body></html>"
    write_text(paths.report, page)
    return paths.report
