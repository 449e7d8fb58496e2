"""The monitor's page (`chestaid monitor STORE --html PAGE`): per model, one section per window with its times and
counts, each signal's statistic, p-value and Holm-adjusted p-value (alarms marked), performance against the
clinicians' verdicts with 95% intervals, the false-alarm statement and the disclaimer. Every value is escaped."""

from __future__ import annotations

import html
from datetime import datetime, timezone
from pathlib import Path

from chestaid.core.fileio import write_text

DISCLAIMER = ("Triage support, not diagnosis. A drift alarm says the images or the model's outputs differ from its "
              "validation data, not that the model is wrong; performance is measured only where clinicians gave "
              "verdicts, and on few verdicts its intervals are wide.")
STYLE = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}table{border-collapse:collapse;"
         "margin:.5em 0 1.5em}td,th{border:1px solid #bbb;padding:3px 8px;text-align:left;font-size:14px}"
         "th{background:#eee}.alarm{background:#fdd;font-weight:bold}.note{color:#555}h3{margin-bottom:.2em}")


def when(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def figure(value) -> str:
    """An estimate with its interval ("0.91 (0.85–0.95)"), or the reason there is none."""
    if not isinstance(value, dict):
        return html.escape(str(value))
    low, high = value.get("ci_low"), value.get("ci_high")
    interval = f" ({low:.2f}–{high:.2f})" if low is not None and high is not None else ""
    return f"{value['estimate']:.2f}{interval}"


def _p(value) -> str:
    return "–" if value is None else f"{value:.3g}"


def _signals(window: dict) -> str:
    rows = "".join(
        f"<tr{' class=alarm' if s['name'] in window['alarms'] else ''}><td>{html.escape(s['name'])}</td>"
        f"<td>{html.escape(str(s.get('test', '')))}</td><td>{_p(s.get('statistic'))}</td><td>{_p(s.get('p'))}</td>"
        f"<td>{_p(s.get('p_holm'))}</td><td>{html.escape(str(s.get('window', '')))}</td>"
        f"<td>{html.escape(str(s.get('reference', '')))}</td><td>{'ALARM' if s['name'] in window['alarms'] else ''}"
        f"</td></tr>" for s in window["signals"])
    return ("<table><tr><th>signal</th><th>test</th><th>statistic</th><th>p</th><th>Holm p</th><th>this window</th>"
            f"<th>reference</th><th></th></tr>{rows}</table>")


def _performance(window: dict, key: str = "performance", unit: str = "image") -> str:
    found = window.get(key) or {}
    if not found:
        return f"<p class=note>Performance per {unit}: no verdicts in this window.</p>" if unit == "image" else ""
    rows = "".join(f"<tr><td>{html.escape(name)}</td><td>{p['verdicts']}</td><td>{p['positives']}</td>"
                   f"<td>{figure(p['sensitivity'])}</td><td>{figure(p['specificity'])}</td><td>{figure(p['ppv'])}</td>"
                   f"<td>{p['agreement']:.2f}</td></tr>" for name, p in found.items())
    return (f"<p>Performance per {unit}" + (" (flagged when any read image is; present when any image's verdict "
                                             "is, absent when all are)" if unit == "study" else "") + "</p>"
            "<table><tr><th>finding</th><th>verdicts</th><th>present</th><th>sensitivity (95% CI)</th>"
            "<th>specificity (95% CI)</th><th>PPV (95% CI)</th><th>agreement</th></tr>" + rows + "</table>")


def monitor_page(result: dict) -> str:
    """The page as text."""
    level = result["level"]
    parts = [f"<!doctype html><meta charset=utf-8><title>chestaid monitor</title><style>{STYLE}</style>"
             "<h1>Monitoring</h1>",
             f"<p>Windows of {html.escape(str(result['window']))}. In each window the signals are tested together "
             f"with Holm's method: the chance of any false alarm in a window is at most {level:g}.</p>",
             f"<p class=note>{html.escape(DISCLAIMER)}</p>"]
    if not result["windows"]:
        parts.append(f"<p><b>Nothing monitored.</b> {html.escape(result.get('status_detail', ''))}</p>")
    model = None
    for k, w in enumerate(result["windows"]):
        if w["model"] != model:
            model = w["model"]
            parts.append(f"<h2>{html.escape(model)}</h2>")
        states = ", ".join(f"{n} {state}" for state, n in sorted(w["states"].items()))
        alarms = html.escape(", ".join(w["alarms"])) if w["alarms"] else "none"
        parts.append(f"<h3>Window {w.get('index', k)}: {when(w['start'])} to {when(w['end'])}</h3>"
                     f"<p>{w['n']} instance(s): {html.escape(states)}. Alarms: "
                     f"<span{' class=alarm' if w['alarms'] else ''}>{alarms}</span></p>"
                     + _signals(w) + _performance(w) + _performance(w, "performance_by_study", "study"))
    for skipped in result["not_monitored"]:
        parts.append(f"<p><b>Not monitored</b>: {skipped['instances']} instance(s) of {html.escape(skipped['model'])}:"
                     f" {html.escape(skipped['why'])}</p>")
    return "".join(parts)


def write_monitor_page(result: dict, out: str | Path) -> Path:
    write_text(out, monitor_page(result))
    return Path(out)
