"""How the CLI prints a local validation (`evaluate RUN --data STORE`)."""

from __future__ import annotations

from rich.markup import escape

from chestaid.apps.cli_output import console


def print_local(result: dict) -> None:
    """Local validation on a node's store: per finding and mean ROC-AUC with intervals, and what does not apply."""
    from chestaid.api import with_interval

    cases = (f"{result['studies']} local stud(ies) ({result['images']} image(s); {result['unit']})"
             if "studies" in result else f"{result['images']} local case(s)")
    console.print(f"{cases} of {result['patients']} patient(s), received "
                  f"{result['received']['from']} to {result['received']['to']}; scores: {escape(result['scores'])}"
                  + (f"; {result['calibration_cases_left_out']} case(s) this version was calibrated on left out"
                     if result["calibration_cases_left_out"] else ""), highlight=False)
    for row in result["per_finding"]:
        rates = ("" if row["sensitivity"] is None else
                 f", sensitivity {row['sensitivity']:.3f} ({row['sensitivity_ci'][0]:.3f}–{row['sensitivity_ci'][1]:.3f})"
                 f", specificity {row['specificity']:.3f} ({row['specificity_ci'][0]:.3f}–"
                 f"{row['specificity_ci'][1]:.3f})")
        console.print(f"{escape(row['finding'])}: ROC-AUC {with_interval(row, 'roc_auc')}{rates}, {row['positives']} "
                      f"present / {row['negatives']} absent" + (" (too few for a stable figure)" if row["too_few"]
                                                               else ""), highlight=False)
    mean = result["mean_roc_auc"]
    interval = (f" ({mean['ci_low']:.3f}–{mean['ci_high']:.3f}, patient bootstrap)"
                if mean["ci_low"] is not None else "")
    console.print(f"mean ROC-AUC {mean['estimate']:.3f}{interval}" if mean["estimate"] is not None
                  else "mean ROC-AUC: undefined", highlight=False)
    if "not_applicable" in result["per_finding"][0]:
        console.print(f"sensitivity, specificity, ECE: {escape(result['per_finding'][0]['not_applicable'])}")
    console.print(f"report {result['report']}")
