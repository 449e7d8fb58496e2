"""ROC-AUC per finding on the raw score (the logit): DeLong clustered by patient, interval on the logit scale
(evaluation.delong). Ranks of the raw score are what the network learned; a calibrator can tie them (isotonic)
or reverse them (a Platt fit with a negative slope), so the calibrated risk's AUC is reported beside it."""

from __future__ import annotations

import numpy as np

from chestaid.evaluation.delong import auc_interval, delong_auc


def auc_with_interval(y: np.ndarray, raw: np.ndarray, patients: np.ndarray, alpha: float = 0.05) -> dict:
    """{roc_auc, roc_auc_se, roc_auc_ci_low, roc_auc_ci_high, roc_auc_ci_method} for one finding; None values
    when the finding has no positives or no negatives."""
    y = np.asarray(y).astype(int)
    if y.min(initial=1) == y.max(initial=0):
        return {"roc_auc": None, "roc_auc_se": None, "roc_auc_ci_low": None, "roc_auc_ci_high": None,
                "roc_auc_ci_method": "undefined (one class only)"}
    result = delong_auc(y, np.asarray(raw, dtype=np.float64), patients)
    low, high, method = auc_interval(result, alpha)

    def number(x: float) -> float | None:  # JSON has no NaN: an undefined bound is None
        return float(x) if np.isfinite(x) else None

    return {"roc_auc": float(result.auc), "roc_auc_se": number(result.se), "roc_auc_ci_low": number(low),
            "roc_auc_ci_high": number(high), "roc_auc_ci_method": method}


def auc_table(y: np.ndarray, raw: np.ndarray, patients: np.ndarray, labels: tuple[str, ...] | list[str],
              alpha: float = 0.05) -> dict[str, dict]:
    """auc_with_interval for every finding, keyed by name."""
    return {name: auc_with_interval(y[:, i], raw[:, i], patients, alpha) for i, name in enumerate(labels)}
