"""Decision-curve analysis (Vickers & Elkin 2006): net benefit of acting on a model's risk across threshold
probabilities, against treating everyone and no one.

At threshold probability pt, a patient is treated when risk ≥ pt, and
NB = TP/N − FP/N · pt/(1 − pt); treat-all: prevalence − (1 − prevalence) · pt/(1 − pt); treat-none: 0;
interventions avoided per 100 patients = (NB_model − NB_all) / (pt/(1 − pt)) · 100.
A binary marker (0/1 decisions) can be passed as the risk: for any pt in (0, 1), risk ≥ pt is exactly marker = 1.
Only numpy and the standard library are used; the table is plain lists of floats (JSON-friendly).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

DEFAULT_THRESHOLDS = np.arange(1, 100) / 100.0  # 0.01 … 0.99


def _check(y_true: np.ndarray, risk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true).reshape(-1)
    risk = np.asarray(risk, dtype=np.float64).reshape(-1)
    if not np.isin(y, (0, 1)).all():
        raise ValueError("y_true must hold only 0 and 1")
    if len(y) != len(risk) or len(y) == 0:
        raise ValueError(f"{len(risk)} risks for {len(y)} labels")
    if np.isnan(risk).any():
        raise ValueError("risk must not be NaN")
    return y.astype(bool), risk


def _check_thresholds(thresholds: Sequence[float] | np.ndarray | None) -> np.ndarray:
    pt = DEFAULT_THRESHOLDS if thresholds is None else np.asarray(thresholds, dtype=np.float64).reshape(-1)
    if ((pt <= 0) | (pt >= 1)).any():
        raise ValueError("threshold probabilities must lie strictly between 0 and 1")
    return pt


def net_benefit(y_true: np.ndarray, risk: np.ndarray, thresholds: Sequence[float] | np.ndarray | None = None
                ) -> np.ndarray:
    """Net benefit of treating when risk ≥ pt, one value per threshold."""
    y, risk = _check(y_true, risk)
    pt = _check_thresholds(thresholds)
    treated = risk[None, :] >= pt[:, None]
    tp = (treated & y[None, :]).sum(axis=1)
    fp = (treated & ~y[None, :]).sum(axis=1)
    return tp / len(y) - fp / len(y) * pt / (1 - pt)


def net_benefit_treat_all(y_true: np.ndarray, thresholds: Sequence[float] | np.ndarray | None = None) -> np.ndarray:
    """Net benefit of treating everyone, one value per threshold."""
    y, _ = _check(y_true, np.zeros(len(np.asarray(y_true).reshape(-1))))
    pt = _check_thresholds(thresholds)
    prevalence = y.mean()
    return prevalence - (1 - prevalence) * pt / (1 - pt)


def decision_curve(y_true: np.ndarray, risk: np.ndarray, thresholds: Sequence[float] | np.ndarray | None = None
                   ) -> dict[str, list[float] | int]:
    """Decision-curve table: threshold, net_benefit (model), treat_all, treat_none and
    interventions_avoided_per_100, one entry per threshold (lists of floats), with n and events."""
    y, risk = _check(y_true, risk)
    pt = _check_thresholds(thresholds)
    model = net_benefit(y, risk, pt)
    treat_all = net_benefit_treat_all(y, pt)
    avoided = (model - treat_all) / (pt / (1 - pt)) * 100
    return {
        "threshold": pt.tolist(),
        "net_benefit": model.tolist(),
        "treat_all": treat_all.tolist(),
        "treat_none": [0.0] * len(pt),
        "interventions_avoided_per_100": avoided.tolist(),
        "n": int(len(y)),
        "events": int(y.sum()),
    }


def decision_curve_rows(table: dict[str, list[float] | int]) -> list[dict[str, float]]:
    """The `decision_curve` table as one dict per threshold."""
    columns = ("threshold", "net_benefit", "treat_all", "treat_none", "interventions_avoided_per_100")
    return [dict(zip(columns, values)) for values in zip(*(table[c] for c in columns))]
