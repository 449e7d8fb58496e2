"""RUN/external/NAME/report.html: a run evaluated on another dataset, marked external, with its label map."""

from __future__ import annotations

import html
from pathlib import Path

from chestaid.core.fileio import write_text


def _num(value, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, float) and value == value else "–"


def write_external_report(path: str | Path, result: dict) -> Path:
    """One page: what was scored on what, per shared finding the AUC (clustered DeLong interval), sensitivity and
    specificity at the run's own operating point (Wilson intervals), ECE; every value escaped."""
    rows = "".join(
        "<tr>" + "".join(f"<td>{c}</td>" for c in (
            html.escape(r["finding"]), html.escape(r["data_label"]), r["positives"], r["negatives"],
            f"{_num(r['roc_auc'])} ({_num(r['roc_auc_ci_low'])}–{_num(r['roc_auc_ci_high'])})",
            f"{_num(r['sensitivity'])} ({_num(r['sensitivity_ci'][0])}–{_num(r['sensitivity_ci'][1])})",
            f"{_num(r['specificity'])} ({_num(r['specificity_ci'][0])}–{_num(r['specificity_ci'][1])})",
            _num(r["ece"]))) + "</tr>" for r in result["per_finding"])
    gate = result["input_gate"]
    refused = (f"{gate['refused']} of {gate['images']} images would be refused by the input gate (they are "
               "included here)" if gate["fitted"] else "the run has no input gate")
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>chestaid external evaluation</title><style>"
        "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto}td,th{padding:.2em .6em}</style>"
        f"</head><body><h1>External evaluation: run <code>{html.escape(result['run'])}</code> on "
        f"<code>{html.escape(Path(result['data']).name)}</code></h1>"
        f"<p><b>External data</b> ({html.escape(result['data_task'])} task, {html.escape(result['split'])} split: "
        f"{result['images']} images"
        + (f" in {result['studies']} studies, one case per study: {html.escape(result['unit'])}" if "studies" in result
           else "") + f" of {result['patients']} patients). Only the labels both share are scored; "
        f"label map: {html.escape(', '.join(f'{k} = {v}' for k, v in result['label_map'].items()))}. "
        f"{html.escape(result['note'])}; {html.escape(refused)}. Risk scores are calibrated risk scores, not "
        "probabilities; this is triage support, not a diagnosis.</p>"
        "<table><tr><th>finding</th><th>data label</th><th>positives</th><th>negatives</th>"
        "<th>ROC-AUC, raw score (95% CI, clustered DeLong)</th><th>sensitivity (95% CI)</th>"
        "<th>specificity (95% CI)</th><th>ECE</th></tr>" + rows + "</table>"
        "<p>Subgroups: subgroups.json; per image: predictions.csv; calibration slope and decision curves: "
        "metrics.json.</p></body></html>")
    write_text(path, page)
    return Path(path)
