"""The run directory: the one place that names its files (importing it loads nothing heavy).

Every command finds a run's files through RunPaths; no other module spells a file name of a run.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from chestaid.core.errors import ChestaidError


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
        self.localisation = self.explain / "localisation.json"
        self.manifest = self.root / "manifest.json"  # what the run is and was trained on (core.manifest)
        self.training_precision = self.root / "training_precision.json"  # what train.precision: auto chose, why
        self.model_card = self.root / "model_card.md"
        self.gate = self.root / "gate.safetensors"  # the input gate (inference.gate)
        self.monitor_reference = self.root / "monitor_reference.json"  # what `monitor` compares with (calibrate)
        self.onnx = self.root / "model.onnx"  # `chestaid export` (inference.onnx_backend)
        self.backends = self.root / "backends"  # `chestaid export`: backends.json, int8.xml/.bin (inference.backends)
        self.cohort_cache = self.root / "cohort_cache"  # written by chestaid before 2026-12: local cases, removed
        self.compare = self.root / "compare"  # `chestaid compare RUN OTHER`: RUN/compare/OTHER/
        self.external = self.root / "external"  # `evaluate --data OTHER`: RUN/external/NAME-DIGEST/

    def require(self) -> "RunPaths":
        """These paths, when they are a run (config.yaml and model.safetensors); else a one-line error."""
        if not self.config.is_file() or not self.weights.is_file():
            what = "no such folder" if not self.root.exists() else (
                "an unfinished run (no model.safetensors yet: `chestaid train --resume` continues it)"
                if self.config.is_file() else "not a chestaid run (no config.yaml)")
            raise ChestaidError(f"{self.root}: {what}")
        return self

    def external_for(self, cache: Path) -> Path:
        """RUN/external/<cache name>-<8 hex of its absolute path's SHA-256>/: two caches of one name (the demo's
        are both `cache`) never share a folder."""
        digest = hashlib.sha256(str(Path(cache).resolve()).encode()).hexdigest()[:8]
        return self.external / f"{Path(cache).name}-{digest}"

    def split_metrics(self, split: str) -> Path:
        """RUN/metrics/{split}_metrics.json (`evaluate`)."""
        return self.metrics / f"{split}_metrics.json"

    def pointing_game(self) -> float | None:
        """The mean Grad-CAM pointing game of `chestaid explain` (RUN/explain), or None when not scored."""
        if not self.localisation.is_file():
            return None
        findings = json.loads(self.localisation.read_text())["findings"]
        return next(f["pointing_game"] for f in findings if f["finding"] == "mean")
