"""Decision thresholds per finding, fitted on validation data only (SPEC A16, B8).

Policies:
  youden        maximise TPR − FPR on the ROC curve; 0.5 when a finding is all-0 or all-1
  f1-precision  best F1 over thresholds 0.10…0.85 (step 0.05) with precision ≥ p_min (default 0.30)
  seed000       as f1-precision with p_min 0.40; if the best F1 < 0.30, lower the threshold by 0.05
  sensitivity   the highest threshold whose sensitivity reaches the target (default 0.90)
Thresholds apply to the calibrated risk scores. Stored in RUN/thresholds.json with policy and parameters.
"""

from __future__ import annotations

import difflib

import numpy as np
from sklearn.metrics import f1_score, precision_score, roc_curve

from chestaid.core.errors import ChestaidError
from chestaid.inference.thresholds import Thresholds

POLICIES = ("youden", "f1-precision", "seed000", "sensitivity")
GRID = np.round(np.arange(0.10, 0.85 + 1e-9, 0.05), 2)
DEFAULT_PARAMS = {"youden": {}, "f1-precision": {"p_min": 0.30}, "seed000": {"p_min": 0.40, "f1_floor": 0.30, "step": 0.05},
                  "sensitivity": {"target": 0.90}}


def check_policy(policy: str, params: dict) -> None:
    """A one-line error for an unknown policy or parameter, before any data is read."""
    if policy not in POLICIES:
        close = difflib.get_close_matches(policy, POLICIES, n=1)
        raise ChestaidError(f"unknown threshold policy {policy!r}" + (f"; did you mean {close[0]}?" if close else "")
                            + f" (policies: {', '.join(POLICIES)})")
    unknown = sorted(set(params) - set(DEFAULT_PARAMS[policy]))
    if unknown:
        known = ", ".join(DEFAULT_PARAMS[policy]) or "none"
        raise ChestaidError(f"policy {policy} takes no parameter {unknown[0]!r} (its parameters: {known})")


def _youden(y: np.ndarray, s: np.ndarray) -> float:
    if not 0 < y.sum() < len(y):
        return 0.5
    fpr, tpr, cut = roc_curve(y, s)
    best = int(np.argmax(tpr - fpr))
    return float(min(cut[best], 1.0))


def _f1_with_precision(y: np.ndarray, s: np.ndarray, p_min: float) -> tuple[float, float]:
    """(threshold, F1) of the best-F1 grid threshold meeting the precision floor; (0.5, 0) when none does."""
    best_t, best_f1 = 0.5, -1.0
    for t in GRID:
        decision = (s >= t).astype(int)
        if precision_score(y, decision, zero_division=0) >= p_min:
            f1 = f1_score(y, decision, zero_division=0)
            if f1 > best_f1:
                best_t, best_f1 = float(t), float(f1)
    return best_t, max(best_f1, 0.0)


def _sensitivity(y: np.ndarray, s: np.ndarray, target: float) -> float:
    positives = np.sort(s[y == 1])[::-1]
    if len(positives) == 0:
        return 0.5
    k = int(np.ceil(target * len(positives)))  # need at least k positives at or above the threshold
    return float(positives[max(k, 1) - 1])


def fit_threshold(policy: str, y: np.ndarray, s: np.ndarray, **params) -> float:
    """One finding's threshold under a policy (labels y, calibrated scores s; validation data only)."""
    y, s = np.asarray(y).astype(int), np.asarray(s, dtype=float)
    p = {**DEFAULT_PARAMS[policy], **params} if policy in DEFAULT_PARAMS else params
    if policy == "youden":
        return _youden(y, s)
    if policy == "f1-precision":
        return _f1_with_precision(y, s, p["p_min"])[0]
    if policy == "seed000":
        t, f1 = _f1_with_precision(y, s, p["p_min"])
        return round(max(t - p["step"], 0.0), 4) if f1 < p["f1_floor"] else t
    if policy == "sensitivity":
        return _sensitivity(y, s, p["target"])
    raise ValueError(f"unknown threshold policy {policy!r}; choose one of {POLICIES}")


def thresholds_for(policy: str, labels: tuple[str, ...], y: np.ndarray, scores: np.ndarray,
                   info: dict | None = None, **params) -> Thresholds:
    """Thresholds for every label under one policy (labels y [N, L], calibrated scores [N, L]; validation only)."""
    merged = {**DEFAULT_PARAMS.get(policy, {}), **params}
    values = {name: fit_threshold(policy, y[:, i], scores[:, i], **merged) for i, name in enumerate(labels)}
    return Thresholds(values, policy, merged, info)
