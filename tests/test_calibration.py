"""Calibrators: temperature scaling recovers a known temperature; Platt and isotonic behave; selection."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit

from chestaid.fitting.calibration import choose, fit, fit_temperature
from chestaid.inference.calibration import Calibration, apply
from chestaid.evaluation.metrics import ece


def _sample(temperature: float, n: int = 400_000, seed: int = 0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, n)
    y = (rng.random(n) < expit(logits / temperature)).astype(int)
    return logits, y


@pytest.mark.parametrize("temperature", [0.6, 1.171, 2.5])
def test_temperature_scaling_recovers_the_temperature(temperature):
    logits, y = _sample(temperature)
    assert fit_temperature(logits, y) == pytest.approx(temperature, rel=0.02)


def test_platt_recovers_slope_and_intercept():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 2, 40_000)
    y = (rng.random(len(logits)) < expit(0.5 * logits - 1.0)).astype(int)
    params = fit("platt", logits, y)
    assert params["a"] == pytest.approx(0.5, abs=0.03) and params["b"] == pytest.approx(-1.0, abs=0.05)


def test_isotonic_is_monotone_and_bounded():
    logits, y = _sample(2.0, n=2000)
    params = fit("isotonic", logits, y)
    grid = np.linspace(-12, 12, 500)
    out = apply(params, grid)
    assert np.all(np.diff(out) >= 0) and out.min() >= 0 and out.max() <= 1


def test_choice_fixes_an_overconfident_model_and_round_trips(tmp_path):
    logits, y = _sample(2.0, n=6000)
    params, table = choose(logits[:3000], y[:3000], logits[3000:], y[3000:])
    assert params["method"] != "identity"
    assert ece(y[3000:], apply(params, logits[3000:])) < ece(y[3000:], expit(logits[3000:]))
    assert {row["method"] for row in table} == {"identity", "temperature", "platt", "isotonic"}
    cal = Calibration(("A",), {"A": params}, {"note": "x"})
    cal.save(tmp_path / "calibration.json")
    again = Calibration.load(tmp_path / "calibration.json", ("A",))
    np.testing.assert_allclose(again(logits[:10].reshape(-1, 1)), cal(logits[:10].reshape(-1, 1)))


def test_isotonic_needs_enough_cases_of_each_class():
    logits, y = _sample(2.0, n=120, seed=5)
    _, table = choose(logits[:60], y[:60], logits[60:], y[60:])
    assert "isotonic" not in {row["method"] for row in table}


def test_a_finding_without_positives_stays_uncalibrated():
    params, table = choose(np.zeros(20), np.zeros(20), np.zeros(20), np.zeros(20))
    assert params == {"method": "identity"} and len(table) == 1


def test_separable_calibration_data_give_a_finite_fit_not_certainty():
    """Platt's smoothed targets: on separable data 0/1 targets would send temperature scaling to its bound (55x)
    and Platt's slope to infinity; the fits must stay near the sample's own confidence (N+ + 1)/(N+ + 2)."""
    from chestaid.fitting.calibration import STEEP_GAIN, gain

    rng = np.random.default_rng(3)
    logits = np.concatenate([rng.uniform(1, 4, 50), rng.uniform(-4, -1, 50)])
    y = np.r_[np.ones(50), np.zeros(50)]
    for method in ("temperature", "platt"):
        params = fit(method, logits, y)
        assert gain(params) < STEEP_GAIN, (method, params)
        risks = apply(params, logits)
        assert risks.max() < 0.999 and risks.min() > 0.001, method
    isotonic = apply(fit("isotonic", logits, y), logits)
    assert isotonic.max() == pytest.approx(51 / 52) and isotonic.min() == pytest.approx(1 / 52)
