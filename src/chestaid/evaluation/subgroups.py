"""Subgroups and underdiagnosis (Seyyed-Kalantari et al., Nat Med 2021; Larrazabal et al., PNAS 2020): per sex,
age band and view, each finding's counts, ROC-AUC on the raw score with its clustered DeLong interval, and
sensitivity/specificity at the operating point with Wilson intervals; the underdiagnosis rate (multi-label:
images with at least one true finding and none flagged; binary: the false-negative rate) per group, with the
largest gap between groups of one attribute. Groups too small to say anything are reported as such."""

from __future__ import annotations

import numpy as np
import pandas as pd

from chestaid.evaluation.bootstrap import wilson_interval
from chestaid.evaluation.discrimination import auc_with_interval

AGE_BANDS = ((0, 20), (20, 40), (40, 60), (60, 80), (80, 200))
MIN_PER_CLASS = 5  # fewer positives or negatives in a group: no AUC, sensitivity or specificity is reported


def groups_of(rows: pd.DataFrame) -> dict[str, dict[str, np.ndarray]]:
    """{attribute: {group: boolean mask}} for sex (M/F), age band and view (PA/AP); unknown values join no group."""
    age = pd.to_numeric(rows["age"], errors="coerce").to_numpy()
    bands = {f"{lo}-{hi}" if hi < 200 else f"{lo}+": (age >= lo) & (age < hi) for lo, hi in AGE_BANDS}
    return {"sex": {g: (rows["sex"] == g).to_numpy() for g in ("M", "F")}, "age_band": bands,
            "view": {g: (rows["view"] == g).to_numpy() for g in ("PA", "AP")}}


def _rate(hits: int, n: int) -> dict:
    if n == 0:
        return {"value": None, "ci_low": None, "ci_high": None, "n": 0}
    low, high = wilson_interval(hits / n, n, 0.95)
    return {"value": hits / n, "ci_low": float(low), "ci_high": float(high), "n": int(n)}


def _difference(a: dict, b: dict) -> dict:
    """a − b of two rates with Newcombe's hybrid Wilson interval (his method 10; independent groups)."""
    d = a["value"] - b["value"]
    low = d - np.hypot(a["value"] - a["ci_low"], b["ci_high"] - b["value"])
    high = d + np.hypot(a["ci_high"] - a["value"], b["value"] - b["ci_low"])
    return {"difference": float(d), "ci_low": float(max(-1.0, low)), "ci_high": float(min(1.0, high)),
            "ci_method": "Newcombe hybrid score (Wilson) interval"}


def _finding(y: np.ndarray, raw: np.ndarray, decided: np.ndarray, patients: np.ndarray) -> dict:
    pos, neg = int(y.sum()), int(len(y) - y.sum())
    row = {"positives": pos, "negatives": neg}
    if min(pos, neg) < MIN_PER_CLASS:
        return {**row, "note": f"too small: fewer than {MIN_PER_CLASS} positives or negatives"}
    row.update(auc_with_interval(y, raw, patients))
    row["sensitivity"] = _rate(int((decided & (y == 1)).sum()), pos)
    row["specificity"] = _rate(int((~decided & (y == 0)).sum()), neg)
    return row


def subgroup_report(y: np.ndarray, raw: np.ndarray, decisions: np.ndarray, rows: pd.DataFrame,
                    labels: list[str] | tuple[str, ...]) -> dict:
    """The report for one split (`y`, `raw` logits and `decisions` [N, labels], `rows` with age/sex/view)."""
    y, decisions = np.asarray(y).astype(int), np.asarray(decisions).astype(bool)
    patients = rows["patient_id"].astype(str).to_numpy()
    sick = y.any(axis=1)
    missed = sick & ~decisions.any(axis=1)  # binary: a positive not flagged (the false-negative rate)
    out = {"rate": "false-negative rate" if len(labels) == 1 else
           "underdiagnosis: images with a true finding and none flagged, over images with a true finding",
           "min_per_class": MIN_PER_CLASS, "attributes": {}}
    for attribute, groups in groups_of(rows).items():
        table = {}
        for group, mask in groups.items():
            entry = {"images": int(mask.sum()), "patients": int(len(set(patients[mask])))}
            entry["underdiagnosis"] = _rate(int(missed[mask].sum()), int(sick[mask].sum()))
            entry["findings"] = {name: _finding(y[mask, i], raw[mask, i], decisions[mask, i], patients[mask])
                                 for i, name in enumerate(labels)}
            table[group] = entry
        rates = {g: e["underdiagnosis"] for g, e in table.items() if e["underdiagnosis"]["n"] >= MIN_PER_CLASS}
        gap = None
        if len(rates) >= 2:
            high = max(rates, key=lambda g: rates[g]["value"])
            low = min(rates, key=lambda g: rates[g]["value"])
            gap = {"highest": high, "lowest": low, **_difference(rates[high], rates[low])}
        out["attributes"][attribute] = {"groups": table, "largest_gap": gap}
    return out
