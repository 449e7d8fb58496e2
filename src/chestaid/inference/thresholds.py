"""A run's decision thresholds (RUN/thresholds.json): per finding, the calibrated risk score at or above which
the image is flagged. Applied by the Predictor; fitted by chestaid.fitting.thresholds (validation data only)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from chestaid.core.fileio import write_json


class Thresholds:
    """{finding: threshold} with the policy and parameters that made them."""

    def __init__(self, values: dict[str, float], policy: str, params: dict, info: dict | None = None) -> None:
        self.values, self.policy, self.params, self.info = values, policy, params, info or {}

    def decide(self, scores: np.ndarray, labels: tuple[str, ...]) -> np.ndarray:
        return (np.asarray(scores) >= np.array([self.values[n] for n in labels])).astype(int)

    def save(self, path: str | Path) -> None:
        write_json(path, {"policy": self.policy, "params": self.params, **self.info, "thresholds": self.values})

    @classmethod
    def load(cls, path: str | Path) -> "Thresholds":
        data = json.loads(Path(path).read_text())
        values = data.pop("thresholds")
        return cls(values, data.pop("policy"), data.pop("params"), data)
