"""Threshold policies of SPEC A16 and the target-sensitivity operating point (B8)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score, precision_score, recall_score, roc_curve

from chestaid.fitting.thresholds import GRID, fit_threshold, thresholds_for
from chestaid.inference.thresholds import Thresholds


@pytest.fixture()
def scores():
    rng = np.random.default_rng(3)
    y = (rng.random(500) < 0.3).astype(int)
    s = np.clip(rng.normal(0.35 + 0.3 * y, 0.15), 0, 1)
    return y, s


def test_youden(scores):
    y, s = scores
    fpr, tpr, cut = roc_curve(y, s)
    assert fit_threshold("youden", y, s) == cut[np.argmax(tpr - fpr)]
    assert fit_threshold("youden", np.zeros(10), s[:10]) == 0.5 and fit_threshold("youden", np.ones(10), s[:10]) == 0.5


def test_f1_with_precision_floor(scores):
    y, s = scores
    t = fit_threshold("f1-precision", y, s, p_min=0.3)
    valid = [g for g in GRID if precision_score(y, s >= g, zero_division=0) >= 0.3]
    assert t == max(valid, key=lambda g: f1_score(y, s >= g))
    assert fit_threshold("f1-precision", y, s, p_min=1.01) == 0.5  # nothing meets the floor


def test_seed000_lowers_weak_thresholds():
    rng = np.random.default_rng(0)
    y = (rng.random(400) < 0.1).astype(int)
    s = rng.random(400)  # useless scores: best F1 < 0.30
    best = fit_threshold("f1-precision", y, s, p_min=0.0)
    assert fit_threshold("seed000", y, s, p_min=0.0) == pytest.approx(best - 0.05)


def test_sensitivity_reaches_the_target(scores):
    y, s = scores
    for target in (0.8, 0.9, 0.95):
        t = fit_threshold("sensitivity", y, s, target=target)
        assert recall_score(y, s >= t) >= target
        assert recall_score(y, s >= t + 1e-9) < target or t == s[y == 1].min()


def test_save_load_and_decide(tmp_path, scores):
    y, s = scores
    fitted = thresholds_for("youden", ("A", "B"), np.stack([y, y], 1), np.stack([s, s], 1), {"fitted_on": "x"})
    fitted.save(tmp_path / "t.json")
    again = Thresholds.load(tmp_path / "t.json")
    assert again.values == fitted.values and again.policy == "youden" and again.info["fitted_on"] == "x"
    assert again.decide(np.stack([s, s], 1), ("A", "B")).shape == (500, 2)
