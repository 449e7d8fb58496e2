"""Every metric of both source documents, computed with scikit-learn (SPEC A18, B7, B8).

Scores passed in are the calibrated risk scores; decisions are scores >= the fitted thresholds.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (accuracy_score, average_precision_score, balanced_accuracy_score, brier_score_loss,
                             confusion_matrix, f1_score, hamming_loss, label_ranking_average_precision_score,
                             multilabel_confusion_matrix, precision_score, recall_score, roc_auc_score)


def ece(y: np.ndarray, p: np.ndarray, bins: int = 15, strategy: str = "uniform") -> float:
    """Expected calibration error of a binary score: Σ_b (n_b / N) |mean(y)_b − mean(p)_b|.

    strategy 'uniform' uses equal-width bins on [0, 1] (a score of exactly 1 falls in the last bin);
    'quantile' uses equal-mass bins (each holds about N / bins scores)."""
    y, p = np.asarray(y, dtype=float).ravel(), np.asarray(p, dtype=float).ravel()
    if len(p) == 0:
        return float("nan")
    if strategy == "uniform":
        index = np.minimum((p * bins).astype(int), bins - 1)
    elif strategy == "quantile":
        index = np.minimum((np.argsort(np.argsort(p, kind="stable"), kind="stable") * bins) // len(p), bins - 1)
    else:
        raise ValueError(f"unknown ECE strategy {strategy!r}")
    total = 0.0
    for b in np.unique(index):
        in_bin = index == b
        total += in_bin.sum() * abs(y[in_bin].mean() - p[in_bin].mean())
    return float(total / len(p))


def _defined(y: np.ndarray) -> bool:
    return 0 < y.sum() < len(y)


def per_class(y: np.ndarray, scores: np.ndarray, decisions: np.ndarray, labels: tuple[str, ...]) -> list[dict]:
    """One row per finding: support, ROC-AUC, PR-AUC, Brier, ECE (both kinds), precision, recall (sensitivity),
    specificity, F1, accuracy and the 2×2 confusion matrix [[TN, FP], [FN, TP]]. AUCs are None where a finding
    lacks positives or negatives."""
    rows = []
    for i, name in enumerate(labels):
        yi, si, di = y[:, i], scores[:, i], decisions[:, i]
        tn, fp, fn, tp = confusion_matrix(yi, di, labels=[0, 1]).ravel()
        rows.append({
            "finding": name, "positives": int(yi.sum()), "n": int(len(yi)),
            "roc_auc": float(roc_auc_score(yi, si)) if _defined(yi) else None,
            "pr_auc": float(average_precision_score(yi, si)) if _defined(yi) else None,
            "brier": float(brier_score_loss(yi, si, labels=[0, 1])),
            "ece": ece(yi, si), "ece_equal_mass": ece(yi, si, strategy="quantile"),
            "precision": float(precision_score(yi, di, zero_division=0)),
            "recall": float(recall_score(yi, di, zero_division=0)),
            "specificity": float(tn / (tn + fp)) if tn + fp else None,
            "f1": float(f1_score(yi, di, zero_division=0)),
            "accuracy": float(accuracy_score(yi, di)),
            "tn": int(tn), "fp": int(fp), "fn": int(fn), "tp": int(tp),
        })
    return rows


def multilabel_summary(y: np.ndarray, scores: np.ndarray, decisions: np.ndarray) -> dict:
    """SPEC A18's global figures. `accuracy` is the mean per-label accuracy (= 1 − Hamming loss), as in seed 000."""
    defined = [i for i in range(y.shape[1]) if _defined(y[:, i])]
    return {
        "n": int(len(y)),
        "exact_match_ratio": float(accuracy_score(y, decisions)),
        "hamming_loss": float(hamming_loss(y, decisions)),
        "accuracy": float(1.0 - hamming_loss(y, decisions)),
        "recall_micro": float(recall_score(y, decisions, average="micro", zero_division=0)),
        "recall_macro": float(recall_score(y, decisions, average="macro", zero_division=0)),
        "precision_micro": float(precision_score(y, decisions, average="micro", zero_division=0)),
        "precision_macro": float(precision_score(y, decisions, average="macro", zero_division=0)),
        "f1_micro": float(f1_score(y, decisions, average="micro", zero_division=0)),
        "f1_macro": float(f1_score(y, decisions, average="macro", zero_division=0)),
        "label_ranking_average_precision": float(label_ranking_average_precision_score(y, scores))
        if len(y) else float("nan"),
        "roc_auc_macro": float(np.mean([roc_auc_score(y[:, i], scores[:, i]) for i in defined])) if defined else None,
        "pr_auc_macro": float(np.mean([average_precision_score(y[:, i], scores[:, i]) for i in defined]))
        if defined else None,
        "brier_mean": float(np.mean([brier_score_loss(y[:, i], scores[:, i], labels=[0, 1])
                                     for i in range(y.shape[1])])),
        "ece_mean": float(np.mean([ece(y[:, i], scores[:, i]) for i in range(y.shape[1])])),
        "findings_with_auc": len(defined),
    }


def binary_summary(y: np.ndarray, score: np.ndarray, threshold: float) -> dict:
    """SPEC B7/B8 at the operating point: discrimination, calibration, and the clinical table."""
    y, score = np.asarray(y).ravel().astype(int), np.asarray(score, dtype=float).ravel()
    decision = (score >= threshold).astype(int)
    tn, fp, fn, tp = confusion_matrix(y, decision, labels=[0, 1]).ravel()
    defined = _defined(y)
    return {
        "n": int(len(y)), "positives": int(y.sum()), "threshold": float(threshold),
        "roc_auc": float(roc_auc_score(y, score)) if defined else None,
        "pr_auc": float(average_precision_score(y, score)) if defined else None,
        "brier": float(brier_score_loss(y, score, labels=[0, 1])),
        "ece": ece(y, score), "ece_equal_mass": ece(y, score, strategy="quantile"),
        "sensitivity": float(recall_score(y, decision, zero_division=0)),
        "specificity": float(tn / (tn + fp)) if tn + fp else float("nan"),
        "accuracy": float(accuracy_score(y, decision)),
        "ppv": float(precision_score(y, decision, zero_division=0)),
        "npv": float(tn / (tn + fn)) if tn + fn else float("nan"),
        "f1": float(f1_score(y, decision, zero_division=0)),
        "balanced_accuracy": float(balanced_accuracy_score(y, decision)) if defined else None,
        "confusion_matrix": {"tn": int(tn), "fp": int(fp), "fn": int(fn), "tp": int(tp)},
    }


def confusion_matrices(y: np.ndarray, decisions: np.ndarray) -> np.ndarray:
    """Per-class [[TN, FP], [FN, TP]] matrices, shape [labels, 2, 2]."""
    return multilabel_confusion_matrix(y, decisions)
