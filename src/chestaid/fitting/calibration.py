"""Post-hoc calibration per finding (SPEC B5, B6, C2): temperature scaling, Platt scaling, isotonic regression.

Each calibrator maps a logit to a calibrated risk score. The choice per finding is the lowest ECE on
`val_report` (ties broken by Brier); calibrators are fitted on `calib` only. Stored in RUN/calibration.json.

Every fit uses Platt's (1999) smoothed targets instead of 0 and 1: (N+ + 1)/(N+ + 2) for positives and
1/(N- + 2) for negatives (as scikit-learn's sigmoid calibration does). A finite calibration set never shows
certainty, so no calibrator may claim it: on (nearly) separable data 0/1 targets drive temperature scaling to
its bound and Platt's slope to infinity (risks of 0 and 1, and a tiny logit change swinging a risk by 0.5),
while smoothed targets give the finite fit the sample supports.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize, minimize_scalar
from scipy.special import expit
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import brier_score_loss

from chestaid.evaluation.metrics import ece
from chestaid.inference.calibration import apply

METHODS = ("identity", "temperature", "platt", "isotonic")
# Isotonic regression overfits small sets (seed 003 saw it too): it becomes a few-step function whose steps
# then make odd thresholds (e.g. exactly 1.0). It is offered only with this many positives and negatives.
MIN_ISOTONIC_CLASS = 30


LOG_TEMPERATURE_BOUNDS = (-4.0, 4.0)  # T in [0.018, 55]
STEEP_GAIN = 10.0  # a calibrator multiplying logits by this much turns a 0.1 logit change into up to 0.25 of risk


def gain(params: dict) -> float | None:
    """How much a fitted calibrator multiplies logit differences (1/T, Platt's |a|, 1); None where it is not one
    number (isotonic: a step function) or the parameters are missing."""
    method = params.get("method")
    if method == "temperature" and params.get("temperature"):
        return 1.0 / float(params["temperature"])
    if method == "platt" and params.get("a") is not None:
        return abs(float(params["a"]))
    return 1.0 if method == "identity" else None


def smoothed_targets(y: np.ndarray) -> np.ndarray:
    """Platt's targets: (N+ + 1)/(N+ + 2) for positives, 1/(N- + 2) for negatives."""
    y = np.asarray(y, float)
    positives, negatives = float(np.sum(y > 0.5)), float(np.sum(y <= 0.5))
    return np.where(y > 0.5, (positives + 1) / (positives + 2), 1 / (negatives + 2))


def _nll(z: np.ndarray, targets: np.ndarray) -> float:
    return float(np.mean(np.logaddexp(0, z) - targets * z))


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The T > 0 minimising the binary NLL of sigmoid(logits / T) against smoothed targets (searched on log T)."""
    logits, targets = np.asarray(logits, float), smoothed_targets(y)
    best = minimize_scalar(lambda log_t: _nll(logits / np.exp(log_t), targets), bounds=LOG_TEMPERATURE_BOUNDS,
                           method="bounded", options={"xatol": 1e-6})
    return float(np.exp(best.x))


def fit_platt(logits: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(a, b) minimising the binary NLL of sigmoid(a * logit + b) against smoothed targets."""
    logits, targets = np.asarray(logits, float), smoothed_targets(y)

    def loss(ab: np.ndarray) -> tuple[float, np.ndarray]:
        z = ab[0] * logits + ab[1]
        residual = expit(z) - targets
        return _nll(z, targets), np.array([np.mean(residual * logits), np.mean(residual)])

    best = minimize(loss, np.array([1.0, 0.0]), jac=True, method="L-BFGS-B")
    return float(best.x[0]), float(best.x[1])


def fit(method: str, logits: np.ndarray, y: np.ndarray) -> dict:
    """Fit one calibrator on (logits, labels); returns its JSON-ready parameters."""
    if method == "identity":
        return {"method": "identity"}
    if method == "temperature":
        return {"method": "temperature", "temperature": fit_temperature(logits, y)}
    if method == "platt":
        a, b = fit_platt(logits, y)
        return {"method": "platt", "a": a, "b": b}
    if method == "isotonic":
        model = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(expit(logits),
                                                                                  smoothed_targets(y))
        return {"method": "isotonic", "x": model.X_thresholds_.tolist(), "y": model.y_thresholds_.tolist()}
    raise ValueError(f"unknown calibration method {method!r}; choose one of {METHODS}")


def choose(calib_logits: np.ndarray, calib_y: np.ndarray, report_logits: np.ndarray, report_y: np.ndarray,
           bins: int = 15) -> tuple[dict, list[dict]]:
    """Fit every method on calib, score each on val_report, keep the lowest ECE (then Brier).

    A finding without both classes in calib keeps 'identity'; without both in val_report, 'temperature'
    (one parameter, the least able to overfit) is kept when it could be fitted. Isotonic needs
    MIN_ISOTONIC_CLASS positives and negatives in calib."""
    candidates = []
    positives = int(np.sum(calib_y))
    both_in_calib = 0 < positives < len(calib_y)
    methods = [m for m in METHODS if m != "isotonic" or min(positives, len(calib_y) - positives) >= MIN_ISOTONIC_CLASS]
    for method in methods if both_in_calib else ("identity",):
        params = fit(method, calib_logits, calib_y)
        scores = apply(params, report_logits)
        candidates.append({"method": method, "ece": ece(report_y, scores, bins),
                           "brier": float(brier_score_loss(report_y, scores, labels=[0, 1])), "params": params})
    if both_in_calib and not 0 < report_y.sum() < len(report_y):
        best = next(c for c in candidates if c["method"] == "temperature")
    else:
        best = min(candidates, key=lambda c: (round(c["ece"], 12), c["brier"]))
    return best["params"], [{k: v for k, v in c.items() if k != "params"} for c in candidates]
