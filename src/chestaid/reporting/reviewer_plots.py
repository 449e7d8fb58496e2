"""The reviewer's figures: a reliability diagram of equal-count bins with a Wilson interval per bin, and decision
curves (net benefit of the calibrated risk against treat-all and treat-none)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from chestaid.core.figures import save, subplots
from chestaid.evaluation.calibration_stats import reliability_table
from chestaid.evaluation.decision_curve import decision_curve

MAX_PANELS = 6


def _findings(y: np.ndarray, labels) -> list[int]:
    """The findings with positives and negatives, most positives first (at most MAX_PANELS)."""
    defined = [i for i in range(len(labels)) if 0 < y[:, i].sum() < len(y)]
    return sorted(defined, key=lambda i: -y[:, i].sum())[:MAX_PANELS]


def reliability_wilson(y: np.ndarray, risk: np.ndarray, name: str, path: Path, bins: int = 10) -> Path:
    """Pooled over findings: observed rate against mean calibrated risk in equal-count bins, with 95% Wilson
    intervals (a bin of few images shows a wide bar, not a confident point)."""
    fig, ax = subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="perfectly calibrated")
    table = reliability_table(y.ravel(), risk.ravel(), n_bins=bins)
    mean = np.array([b["mean_predicted"] for b in table])
    observed = np.array([b["observed"] for b in table])
    low, high = np.array([b["observed_low"] for b in table]), np.array([b["observed_high"] for b in table])
    # a Wilson bound can sit a rounding error past its own rate (e.g. 0 events): bars never negative
    ax.errorbar(mean, observed, yerr=np.clip([observed - low, high - observed], 0, None), fmt="o", capsize=3,
                label=f"{bins} equal-count bins, 95% Wilson")
    ax.set(xlabel="mean calibrated risk score in bin", ylabel="observed frequency", xlim=(0, 1), ylim=(0, 1),
           title=f"Reliability on {name} (calibrated)")
    ax.legend(fontsize=8)
    return save(fig, path)


def decision_curves(y: np.ndarray, risk: np.ndarray, labels, name: str, path: Path) -> Path | None:
    """Net benefit over thresholds 0.01–0.99 per finding (model, treat all, treat none); None when no finding has
    both classes."""
    shown = _findings(y, labels)
    if not shown:
        return None
    cols = min(3, len(shown))
    rows = (len(shown) + cols - 1) // cols
    fig, axes = subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax in axes.ravel()[len(shown):]:
        ax.set_visible(False)
    for ax, i in zip(axes.ravel(), shown):
        curve = decision_curve(y[:, i], risk[:, i])
        t = np.asarray(curve["threshold"])
        ax.plot(t, curve["net_benefit"], label="model (calibrated risk)")
        ax.plot(t, curve["treat_all"], "--", label="treat all")
        ax.axhline(0, color="k", lw=0.8, label="treat none")
        top = max(max(curve["net_benefit"]), max(curve["treat_all"]), 0.01)
        ax.set(ylim=(-0.1 * top, 1.15 * top), xlabel="threshold probability", ylabel="net benefit",
               title=f"{labels[i]} ({name})")
    axes.ravel()[0].legend(fontsize=7)
    return save(fig, path)
