"""What a reviewer asks beyond ECE: per finding, calibration-in-the-large and slope (logistic recalibration)
and Spiegelhalter's z before and after calibration, and the decision curve (net benefit of the calibrated risk
against treat-all and treat-none, Vickers & Elkin 2006) on the split evaluated."""

from __future__ import annotations

import numpy as np
from scipy.special import expit

from chestaid.evaluation.calibration_stats import calibration_in_the_large, calibration_slope, spiegelhalter_z
from chestaid.evaluation.decision_curve import decision_curve


def _finite(value):
    """NaN (an estimate that does not exist, e.g. a slope under separation) as None: JSON has no NaN."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return None if isinstance(value, float) and not np.isfinite(value) else value


def _calibration(y: np.ndarray, risk: np.ndarray) -> dict:
    risk = np.clip(risk, 1e-6, 1 - 1e-6)
    large, slope, spiegel = calibration_in_the_large(y, risk), calibration_slope(y, risk), spiegelhalter_z(y, risk)
    return _finite({"intercept": large._asdict(), "slope": slope._asdict(), "spiegelhalter_z": float(spiegel.z),
                    "spiegelhalter_p": float(spiegel.p)})


def reviewer_figures(y: np.ndarray, logits: np.ndarray, risk: np.ndarray, labels) -> dict:
    """{"calibration_stats": {finding: {before, after}}, "decision_curve": {finding: table}} (JSON-ready)."""
    stats, curves = {}, {}
    for i, name in enumerate(labels):
        truth = np.asarray(y[:, i]).astype(int)
        if truth.min() == truth.max():
            stats[name] = {"note": "one class only"}
            continue
        stats[name] = {"before": _calibration(truth, expit(logits[:, i])), "after": _calibration(truth, risk[:, i])}
        curves[name] = decision_curve(truth, risk[:, i])
    return {"calibration_stats": stats, "decision_curve": curves}
