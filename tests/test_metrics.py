"""Metrics equal scikit-learn's; ECE equals a hand computation; ECE² ≤ Brier always (why the seed's figures
ECE 0.27 with Brier 0.007 cannot both be right)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from chestaid.evaluation.metrics import binary_summary, ece, multilabel_summary, per_class


@pytest.fixture()
def fixture():
    rng = np.random.default_rng(7)
    y = (rng.random((300, 5)) < [0.1, 0.3, 0.5, 0.05, 0.2]).astype(int)
    scores = rng.random((300, 5))
    decisions = (scores >= 0.4).astype(int)
    return y, scores, decisions


def test_multilabel_summary_equals_sklearn(fixture):
    y, s, d = fixture
    m = multilabel_summary(y, s, d)
    assert m["exact_match_ratio"] == skm.accuracy_score(y, d)
    assert m["hamming_loss"] == skm.hamming_loss(y, d) and m["accuracy"] == pytest.approx(1 - skm.hamming_loss(y, d))
    assert m["recall_micro"] == skm.recall_score(y, d, average="micro")
    assert m["recall_macro"] == skm.recall_score(y, d, average="macro")
    assert m["f1_micro"] == skm.f1_score(y, d, average="micro") and m["f1_macro"] == skm.f1_score(y, d, average="macro")
    assert m["label_ranking_average_precision"] == skm.label_ranking_average_precision_score(y, s)
    assert m["roc_auc_macro"] == pytest.approx(skm.roc_auc_score(y, s, average="macro"))
    assert m["pr_auc_macro"] == pytest.approx(skm.average_precision_score(y, s, average="macro"))


def test_per_class_equals_sklearn(fixture):
    y, s, d = fixture
    for i, row in enumerate(per_class(y, s, d, tuple("abcde"))):
        assert row["roc_auc"] == skm.roc_auc_score(y[:, i], s[:, i])
        assert row["pr_auc"] == skm.average_precision_score(y[:, i], s[:, i])
        assert row["brier"] == skm.brier_score_loss(y[:, i], s[:, i])
        assert row["f1"] == skm.f1_score(y[:, i], d[:, i])
        assert [[row["tn"], row["fp"]], [row["fn"], row["tp"]]] == skm.confusion_matrix(y[:, i], d[:, i]).tolist()


def test_binary_summary_equals_sklearn_and_hand_counts(fixture):
    y, s, _ = fixture
    y, s = y[:, 1], s[:, 1]
    m = binary_summary(y, s, 0.35)
    d = (s >= 0.35).astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(y, d).ravel()
    assert m["roc_auc"] == skm.roc_auc_score(y, s) and m["pr_auc"] == skm.average_precision_score(y, s)
    assert m["sensitivity"] == tp / (tp + fn) and m["specificity"] == tn / (tn + fp)
    assert m["ppv"] == tp / (tp + fp) and m["npv"] == tn / (tn + fn)
    assert m["balanced_accuracy"] == skm.balanced_accuracy_score(y, d) and m["f1"] == skm.f1_score(y, d)
    assert m["confusion_matrix"] == {"tn": tn, "fp": fp, "fn": fn, "tp": tp}


def test_ece_by_hand():
    # 10 scores in 2 equal-width bins (bins=2): [0, .5) holds .1,.2,.3,.4 (labels 0,0,1,0); [.5, 1] the rest
    p = np.array([0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9, 0.9, 1.0])
    y = np.array([0, 0, 1, 0, 1, 1, 0, 1, 1, 1])
    low = abs(0.25 - 0.25)            # mean label 1/4, mean score 0.25
    high = abs(5 / 6 - 4.9 / 6)       # mean label 5/6, mean score (0.6+0.7+0.8+0.9+0.9+1.0)/6
    assert ece(y, p, bins=2) == pytest.approx(0.4 * low + 0.6 * high)
    # equal mass, 2 bins: the 5 lowest and the 5 highest scores
    assert ece(y, p, bins=2, strategy="quantile") == pytest.approx(
        0.5 * abs(0.4 - 0.32) + 0.5 * abs(0.8 - 0.86))  # {.1,.2,.3,.4,.6} and {.7,.8,.9,.9,1}
    assert ece(np.array([0, 1]), np.array([0.0, 1.0])) == 0.0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1), st.booleans()), min_size=1, max_size=200), st.integers(1, 30))
def test_ece_squared_never_exceeds_brier(pairs, bins):
    p = np.array([a for a, _ in pairs])
    y = np.array([b for _, b in pairs], dtype=float)
    brier = float(np.mean((p - y) ** 2))
    for strategy in ("uniform", "quantile"):
        assert ece(y, p, bins, strategy) ** 2 <= brier + 1e-12
