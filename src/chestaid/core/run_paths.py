"""The run directory: the one place that names its files (importing it loads nothing heavy).

RUN/config.yaml, RUN/model.safetensors, RUN/checkpoints/{last,best}.ckpt, RUN/train_log.csv, RUN/logs/
"""

from __future__ import annotations

import json
from pathlib import Path


class RunPaths:
    """Names of the files of a run directory."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.config = self.root / "config.yaml"
        self.weights = self.root / "model.safetensors"
        self.checkpoints = self.root / "checkpoints"
        self.last = self.checkpoints / "last.ckpt"
        self.best = self.checkpoints / "best.ckpt"
        self.train_log = self.root / "train_log.csv"
        self.logs = self.root / "logs"  # Lightning's loggers: version_N/ per start (a resume is a new one)
        self.calibration = self.root / "calibration.json"
        self.thresholds = self.root / "thresholds.json"
        self.metrics = self.root / "metrics"
        self.plots = self.root / "plots"
        self.report = self.root / "report.html"
        self.explain = self.root / "explain"

    def pointing_game(self) -> float | None:
        """The mean Grad-CAM pointing game of `chestaid explain` (RUN/explain), or None when not scored."""
        located = self.explain / "localisation.json"
        if not located.is_file():
            return None
        findings = json.loads(located.read_text())["findings"]
        return next(f["pointing_game"] for f in findings if f["finding"] == "mean")
