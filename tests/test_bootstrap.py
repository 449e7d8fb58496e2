"""Bootstrap confidence intervals: they resample patients, hold the point estimate, and narrow as n grows."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from chestaid.evaluation.bootstrap import confidence_intervals, weighted_auc, wilson_interval

LABELS = ("A", "B")


def _cohort(patients: int, images_per_patient: int = 1, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.random((patients, 2)) < [0.3, 0.1]
    scores = np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0, 1)
    repeat = np.repeat(np.arange(patients), images_per_patient)
    return y[repeat], scores[repeat], scores[repeat] >= 0.5, np.array([f"p{i}" for i in repeat])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 5), st.integers(0, 3)), min_size=2, max_size=40))
def test_weighted_auc_equals_sklearn_with_weights(items):
    y = np.array([i[0] for i in items])
    score = np.array([i[1] for i in items], float)  # few distinct values: many ties
    weight = np.array([i[2] for i in items], float)
    auc = weighted_auc(y, score, weight[None])[0]
    if weight[y].sum() == 0 or weight[~y].sum() == 0:
        assert np.isnan(auc)
    else:
        assert np.isclose(auc, roc_auc_score(y, score, sample_weight=weight))


def test_intervals_hold_the_point_estimate_and_narrow_as_patients_grow():
    widths = []
    for patients in (100, 400, 1600):
        y, scores, decisions, ids = _cohort(patients)
        ci = confidence_intervals(y, scores, decisions, ids, LABELS, resamples=1000)
        point = np.mean([roc_auc_score(y[:, i], scores[:, i]) for i in range(2)])
        assert ci["mean_roc_auc"]["low"] <= point <= ci["mean_roc_auc"]["high"]
        for i, name in enumerate(LABELS):
            found = ci["per_finding"][name]
            sensitivity = decisions[y[:, i], i].mean()
            specificity = (~decisions[~y[:, i], i]).mean()
            assert found["roc_auc"]["low"] <= roc_auc_score(y[:, i], scores[:, i]) <= found["roc_auc"]["high"]
            assert found["sensitivity"]["low"] <= sensitivity <= found["sensitivity"]["high"]
            assert found["specificity"]["low"] <= specificity <= found["specificity"]["high"]
        widths.append(ci["mean_roc_auc"]["high"] - ci["mean_roc_auc"]["low"])
    assert widths[0] > widths[1] > widths[2] and widths[2] < 0.6 * widths[0]  # 16× the patients: 0.25-0.45×


def test_several_images_of_one_patient_do_not_narrow_the_interval():
    """Four copies of each patient's image carry no more information than one: resampling patients keeps the
    width (resampling images would halve it)."""
    once = confidence_intervals(*_cohort(300, 1), LABELS, resamples=1000)
    four = confidence_intervals(*_cohort(300, 4), LABELS, resamples=1000)
    width = [c["mean_roc_auc"]["high"] - c["mean_roc_auc"]["low"] for c in (once, four)]
    assert 0.8 < width[1] / width[0] < 1.25
    for rate in ("sensitivity", "specificity"):
        width = [c["per_finding"]["A"][rate]["high"] - c["per_finding"]["A"][rate]["low"] for c in (once, four)]
        assert 0.8 < width[1] / width[0] < 1.25


def test_wilson_interval_matches_the_published_values():
    assert np.allclose(wilson_interval(0.5, 100, 0.95), (0.4038, 0.5962), atol=1e-4)
    assert np.allclose(wilson_interval(1.0, 14, 0.95), (0.7847, 1.0), atol=1e-4)


def test_a_rate_of_one_on_few_patients_is_not_certain():
    """14 positive patients (two images each), all found: the percentile bootstrap would say 1.000 (1.000–1.000);
    the interval must be Wilson's on 14 patients, not on 28 images."""
    y, scores, decisions, ids = _cohort(200, 2, seed=3)
    y[:, 1] = np.arange(len(y)) < 28  # patients p0…p13, two images each
    decisions[:, 1] = y[:, 1] | decisions[:, 1]
    found = confidence_intervals(y, scores, decisions, ids, LABELS, resamples=500)["per_finding"]["B"]
    assert decisions[y[:, 1], 1].all() and found["sensitivity"]["high"] == 1.0
    assert abs(found["sensitivity"]["low"] - wilson_interval(1.0, 14, 0.95)[0]) < 1e-6
