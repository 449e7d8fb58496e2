"""Calibration statistics for predicted risks: calibration-in-the-large, calibration slope, Spiegelhalter's z and
a reliability table with Wilson intervals.

Calibration-in-the-large: intercept a of logit P(y = 1) = a + logit(p) (slope fixed at 1 through an offset);
0 is ideal, a > 0 means risks are too low. Calibration slope: b of logit P(y = 1) = a + b · logit(p); 1 is ideal,
b < 1 means risks are too extreme. Both are unpenalised maximum-likelihood fits by Newton–Raphson (numpy only), with
SE from the inverse Fisher information and a Wald interval. Separation (an infinite estimate), a singular
information matrix or non-convergence gives NaN estimates with the reason.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import stats
from scipy.special import expit

EPS = 1e-12  # risks are clipped to [EPS, 1 − EPS] before the logit
MAX_ITER = 100
TOL = 1e-10
MAX_COEF = 50.0  # |coefficient| beyond this on the logit scale is taken as divergence (separation)


class CalibrationEstimate(NamedTuple):
    """A calibration coefficient with SE and 1 − alpha Wald interval; reason is "" when the fit succeeded."""

    estimate: float
    se: float
    ci_low: float
    ci_high: float
    reason: str


class SpiegelhalterResult(NamedTuple):
    """Spiegelhalter's z and its two-sided normal p (NaN when the denominator is 0)."""

    z: float
    p: float


def _check(y_true: np.ndarray, risk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true).reshape(-1)
    p = np.asarray(risk, dtype=np.float64).reshape(-1)
    if not np.isin(y, (0, 1)).all():
        raise ValueError("y_true must hold only 0 and 1")
    if len(y) != len(p) or len(y) == 0:
        raise ValueError(f"{len(p)} risks for {len(y)} labels")
    if not ((p >= 0) & (p <= 1)).all():
        raise ValueError("risks must lie in [0, 1]")
    return y.astype(np.float64), p


def _logit_of_risk(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p)


def _failed(reason: str) -> tuple[np.ndarray, np.ndarray, str]:
    return np.array([np.nan]), np.array([[np.nan]]), reason


def fit_logistic(x: np.ndarray, y: np.ndarray, offset: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray, str]:
    """Unpenalised logistic regression of y on the columns of x (include a column of ones for an intercept) by
    Newton–Raphson with step halving: (coefficients, covariance, reason) — reason "" on success, otherwise the
    coefficients and covariance are NaN."""
    x = np.asarray(x, dtype=np.float64)
    offset = np.zeros(len(y)) if offset is None else offset
    if y.min() == y.max():
        return _failed("all outcomes equal: separation, the estimate is infinite")
    beta = np.zeros(x.shape[1])

    def loglik(b: np.ndarray) -> float:
        eta = offset + x @ b
        return float(np.sum(y * eta - np.logaddexp(0.0, eta)))

    current = loglik(beta)
    for _ in range(MAX_ITER):
        mu = expit(offset + x @ beta)
        info = x.T @ (x * (mu * (1 - mu))[:, None])
        try:
            step = np.linalg.solve(info, x.T @ (y - mu))
        except np.linalg.LinAlgError:
            return _failed("singular information matrix")
        for _ in range(30):
            proposal = loglik(beta + step)
            if proposal >= current - 1e-12:
                break
            step = step / 2
        beta, current = beta + step, proposal
        if np.abs(beta).max() > MAX_COEF:
            return _failed("coefficient diverged: separation")
        if np.abs(step).max() < TOL:
            break
    else:
        return _failed(f"no convergence in {MAX_ITER} Newton steps")
    mu = expit(offset + x @ beta)
    info = x.T @ (x * (mu * (1 - mu))[:, None])
    if np.linalg.cond(info) > 1e12:
        return _failed("singular information matrix (separation or a constant predictor)")
    return beta, np.linalg.inv(info), ""


def _estimate(beta: np.ndarray, cov: np.ndarray, index: int, reason: str, alpha: float) -> CalibrationEstimate:
    if reason:
        nan = float("nan")
        return CalibrationEstimate(nan, nan, nan, nan, reason)
    estimate, se = float(beta[index]), float(np.sqrt(cov[index, index]))
    half = float(stats.norm.isf(alpha / 2)) * se
    return CalibrationEstimate(estimate, se, estimate - half, estimate + half, "")


def calibration_in_the_large(y_true: np.ndarray, risk: np.ndarray, alpha: float = 0.05) -> CalibrationEstimate:
    """Intercept of logit P(y = 1) = a + logit(risk), the slope fixed at 1 (0 is ideal)."""
    y, p = _check(y_true, risk)
    beta, cov, reason = fit_logistic(np.ones((len(y), 1)), y, offset=_logit_of_risk(p))
    return _estimate(beta, cov, 0, reason, alpha)


def calibration_slope(y_true: np.ndarray, risk: np.ndarray, alpha: float = 0.05) -> CalibrationEstimate:
    """Slope b of logit P(y = 1) = a + b · logit(risk) (1 is ideal; below 1: risks too extreme)."""
    y, p = _check(y_true, risk)
    x = np.column_stack([np.ones(len(y)), _logit_of_risk(p)])
    beta, cov, reason = fit_logistic(x, y)
    return _estimate(beta, cov, 1, reason, alpha)


def spiegelhalter_z(y_true: np.ndarray, risk: np.ndarray) -> SpiegelhalterResult:
    """Spiegelhalter's z = Σ(y − p)(1 − 2p) / √Σ(1 − 2p)² p(1 − p) and its two-sided p."""
    y, p = _check(y_true, risk)
    denominator = np.sqrt(np.sum((1 - 2 * p) ** 2 * p * (1 - p)))
    if denominator == 0:
        return SpiegelhalterResult(float("nan"), float("nan"))
    z = float(np.sum((y - p) * (1 - 2 * p)) / denominator)
    return SpiegelhalterResult(z, float(2 * stats.norm.sf(abs(z))))


def wilson_interval(events: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Wilson score interval for a proportion events/n (NaN, NaN when n is 0)."""
    if n == 0:
        return float("nan"), float("nan")
    z = float(stats.norm.isf(alpha / 2))
    centre = (events + z * z / 2) / (n + z * z)
    half = z / (n + z * z) * np.sqrt(events * (n - events) / n + z * z / 4)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def reliability_table(y_true: np.ndarray, risk: np.ndarray, n_bins: int = 10, alpha: float = 0.05
                      ) -> list[dict[str, float]]:
    """Equal-count bins of the sorted risks (sizes differ by at most one): per bin n, events, mean predicted risk,
    observed rate, its Wilson interval and the bin's risk range."""
    y, p = _check(y_true, risk)
    order = np.argsort(p, kind="mergesort")
    rows = []
    for index in np.array_split(order, min(n_bins, len(p))):
        n, events = len(index), int(y[index].sum())
        low, high = wilson_interval(events, n, alpha)
        rows.append({"n": n, "events": events, "mean_predicted": float(p[index].mean()),
                     "observed": events / n, "observed_low": low, "observed_high": high,
                     "risk_min": float(p[index].min()), "risk_max": float(p[index].max())})
    return rows
