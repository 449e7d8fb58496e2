"""comparison.html: `chestaid compare`'s table as a page (every value escaped; nothing from a file is markup)."""

from __future__ import annotations

import html
from pathlib import Path

from chestaid.core.fileio import write_text


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if value == value else "–"
    return html.escape(str(value)) if value is not None else "–"


def write_comparison_page(path: str | Path, result: dict) -> Path:
    """Write the page of a comparison dict (workflows.compare.compare_runs) to `path`."""
    head = ("finding", "positives", "AUC A", "AUC B", "B − A", "95% CI", "z", "p", "p (Holm)", "McNemar p")
    rows = []
    for name, r in result["findings"].items():
        if "delta" not in r:
            rows.append([name, r["positives"], *["–"] * 8])
            continue
        rows.append([name, r["positives"], r["auc_a"], r["auc_b"], r["delta"],
                     f"{_cell(r['ci_low'])} to {_cell(r['ci_high'])}", r["z"], r["p"], r.get("p_holm"),
                     r["mcnemar"]["p"]])
    mean = result["mean"]
    body = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    summary = (f"Mean AUROC over {mean['findings']} findings: A {mean['auc_a']:.4f}, B {mean['auc_b']:.4f}, "
               f"B − A {mean['delta']:+.4f} (95% CI {mean['ci_low']:+.4f} to {mean['ci_high']:+.4f}, "
               f"{html.escape(mean['ci_method'])})" if "delta" in mean else html.escape(mean.get("note", "")))
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>chestaid comparison</title>"
        "<style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto}td,th{padding:.2em .6em;"
        "text-align:right}td:first-child{text-align:left}</style></head><body>"
        f"<h1>Run B against run A</h1><p>A: <code>{html.escape(Path(result['run_a']).name)}</code>, B: "
        f"<code>{html.escape(Path(result['run_b']).name)}</code>; {result['images']} {html.escape(result['split'])} "
        f"images of {result['patients']} patients. Differences are {html.escape(result['differences'])}; intervals: "
        f"{html.escape(result['ci_method'])}; p adjusted over findings by Holm's method.</p><p>{summary}</p>"
        "<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + f"</tr>{body}</table>"
        "<p>McNemar: exact test on the images one run decides right and the other wrong, each at its own "
        "operating point.</p></body></html>")
    write_text(path, page)
    return Path(path)
