"""A run's calibration (RUN/calibration.json): per finding, a fitted map from logit to calibrated risk score.

Applied by the Predictor; fitted by chestaid.fitting.calibration (on the `calib` part of validation only).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy.special import expit

from chestaid.core.fileio import write_json


def apply(params: dict, logits: np.ndarray) -> np.ndarray:
    """Calibrated risk scores in [0, 1] from logits."""
    logits = np.asarray(logits, dtype=float)
    method = params["method"]
    if method == "identity":
        return expit(logits)
    if method == "temperature":
        return expit(logits / params["temperature"])
    if method == "platt":
        return expit(params["a"] * logits + params["b"])
    if method == "isotonic":
        return np.interp(expit(logits), params["x"], params["y"])
    raise ValueError(f"unknown calibration method {method!r}")


def score_name(calibrated: bool) -> str:
    """What a run's scores are, as every output names them: "calibrated risk score" once `calibrate` has fitted
    them on validation or local cases, else "uncalibrated score" (a sigmoid of the logit: it ranks, it is no risk)."""
    return "calibrated risk score" if calibrated else "uncalibrated score"


class Calibration:
    """Per-finding calibrators: logits [N, L] → calibrated risk scores [N, L]."""

    def __init__(self, labels: tuple[str, ...], params: dict[str, dict], info: dict | None = None) -> None:
        self.labels, self.params, self.info = labels, params, info or {}

    def __call__(self, logits: np.ndarray) -> np.ndarray:
        logits = np.asarray(logits, dtype=float).reshape(-1, len(self.labels))
        return np.stack([apply(self.params[name], logits[:, i]) for i, name in enumerate(self.labels)], axis=1)

    @classmethod
    def identity(cls, labels: tuple[str, ...]) -> "Calibration":
        return cls(labels, {name: {"method": "identity"} for name in labels}, {"note": "not calibrated"})

    def save(self, path: str | Path) -> None:
        write_json(path, {**self.info, "findings": self.params})

    @classmethod
    def load(cls, path: str | Path, labels: tuple[str, ...]) -> "Calibration":
        data = json.loads(Path(path).read_text())
        params = data.pop("findings")
        return cls(labels, {name: params[name] for name in labels}, data)
