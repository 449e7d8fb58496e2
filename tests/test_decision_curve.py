"""Decision curves against the published benchmark; calibration-in-the-large, slope, Spiegelhalter, reliability."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.special import expit

from chestaid.evaluation.calibration_stats import (calibration_in_the_large, calibration_slope, reliability_table,
                                                   spiegelhalter_z, wilson_interval)
from chestaid.evaluation.decision_curve import decision_curve, decision_curve_rows, net_benefit


def benchmark_marker() -> tuple[np.ndarray, np.ndarray]:
    """N = 750 with 105 events; the marker is positive in 115 people, 24 of them events."""
    y = np.r_[np.ones(24), np.zeros(91), np.ones(81), np.zeros(554)]
    marker = np.r_[np.ones(115), np.zeros(635)]
    return y, marker


def test_decision_curve_matches_published_benchmark():
    y, marker = benchmark_marker()
    table = decision_curve(y, marker, thresholds=[0.05, 0.10, 0.20])
    np.testing.assert_allclose(table["net_benefit"], [0.0256140351, 0.0185185185, 0.0016666667], atol=1e-9)
    np.testing.assert_allclose(table["treat_all"], [0.0947368421, 0.0444444444, -0.075], atol=1e-9)
    assert table["treat_none"] == [0.0, 0.0, 0.0] and (table["n"], table["events"]) == (750, 105)
    avoided = (np.array(table["net_benefit"]) - table["treat_all"]) / (np.array([0.05, 0.1, 0.2]) / [0.95, 0.9, 0.8])
    np.testing.assert_allclose(table["interventions_avoided_per_100"], avoided * 100, rtol=1e-12)
    assert json.loads(json.dumps(table)) == table
    assert decision_curve_rows(table)[1]["threshold"] == 0.10


def test_decision_curve_default_thresholds_and_risk_scores():
    y, marker = benchmark_marker()
    table = decision_curve(y, marker)
    assert len(table["threshold"]) == 99 and table["threshold"][0] == 0.01 and table["threshold"][-1] == 0.99
    risk = np.where(marker == 1, 0.3, 0.1)  # treated at pt ≤ 0.1 everyone, at 0.1 < pt ≤ 0.3 the marker-positive
    nb = net_benefit(y, risk, [0.05, 0.2, 0.5])
    np.testing.assert_allclose(nb, [0.0947368421, 0.0016666667, 0.0], atol=1e-9)


def test_spiegelhalter_two_people():
    result = spiegelhalter_z(np.array([0, 1]), np.array([0.2, 0.8]))
    assert result.z == pytest.approx(-0.70711, abs=1e-5)
    assert result.p == pytest.approx(0.4795, abs=1e-4)


def simulated(slope: float, seed: int = 7, n: int = 4000) -> tuple[np.ndarray, np.ndarray]:
    """Risks p and outcomes drawn from logit P(y = 1) = slope · logit(p)."""
    rng = np.random.default_rng(seed)
    eta = rng.normal(-1.0, 1.2, n)
    return (rng.random(n) < expit(slope * eta)).astype(int), expit(eta)


def test_calibration_of_well_calibrated_risks():
    y, p = simulated(slope=1.0)
    slope, citl = calibration_slope(y, p), calibration_in_the_large(y, p)
    assert slope.reason == "" and abs(slope.estimate - 1) < 0.1 and slope.ci_low < 1 < slope.ci_high
    assert citl.reason == "" and abs(citl.estimate) < 0.1 and citl.ci_low < 0 < citl.ci_high
    assert 0 < slope.se < 0.1 and citl.ci_high - citl.ci_low == pytest.approx(2 * 1.959964 * citl.se, rel=1e-5)


def test_calibration_detects_miscalibration():
    y, p = simulated(slope=2.0)
    assert abs(calibration_slope(y, p).estimate - 2) < 0.2
    y1, p1 = simulated(slope=1.0)
    too_low = expit(np.log(p1 / (1 - p1)) - 1.0)  # risks too low by 1 on the logit scale
    assert abs(calibration_in_the_large(y1, too_low).estimate - 1) < 0.15


def test_calibration_separation_gives_nan_with_reason():
    y, p = np.r_[np.zeros(20), np.ones(20)], np.r_[np.linspace(0.1, 0.4, 20), np.linspace(0.6, 0.9, 20)]
    slope = calibration_slope(y, p)
    assert np.isnan(slope.estimate) and slope.reason
    citl = calibration_in_the_large(np.zeros(10), np.full(10, 0.2))
    assert np.isnan(citl.estimate) and "equal" in citl.reason


def test_reliability_table_equal_count_bins_with_wilson():
    y, p = simulated(slope=1.0, n=1000)
    rows = reliability_table(y, p, n_bins=10)
    assert [r["n"] for r in rows] == [100] * 10 and sum(r["events"] for r in rows) == y.sum()
    assert all(r["observed_low"] <= r["observed"] <= r["observed_high"] for r in rows)
    assert all(a["risk_max"] <= b["risk_min"] for a, b in zip(rows, rows[1:]))
    low, high = wilson_interval(3, 10)
    assert (low, high) == pytest.approx((0.10779, 0.60322), abs=1e-5)
