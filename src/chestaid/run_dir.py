"""The run directory: where each file lives, and the weights in safetensors (no Lightning needed to score).

RUN/config.yaml, RUN/model.safetensors, RUN/checkpoints/{last,best}.ckpt, RUN/train_log.csv, RUN/logs/
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from chestaid.config import RunConfig, load_config
from chestaid.errors import ChestaidError
from chestaid.fileio import atomic_write
from chestaid.models.chestnet import ChestNet, build_model


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


def save_weights(model: torch.nn.Module, path: str | Path, task: str) -> None:
    """Weights only, as safetensors (safe to load from strangers), written atomically."""
    from safetensors.torch import save

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    data = save(state, metadata={"format": "chestaid", "task": task})
    atomic_write(path, lambda f: f.write(data))


def load_model(run: str | Path, map_location: str = "cpu") -> tuple[RunConfig, ChestNet]:
    """Rebuild a run's model from config.yaml + model.safetensors alone (no network, no checkpoint)."""
    from safetensors.torch import load_file

    paths = RunPaths(run)
    if not paths.config.is_file() or not paths.weights.is_file():
        raise ChestaidError(f"{paths.root}: not a finished chestaid run (needs config.yaml and model.safetensors)")
    cfg = load_config(paths.config)
    model = build_model(cfg.model.model_copy(update={"weights": "none"}), cfg.require_task().num_outputs)
    try:
        state = load_file(str(paths.weights), device=map_location)
    except Exception as e:
        raise ChestaidError(f"{paths.weights}: cannot be read ({e})") from None
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ChestaidError(f"{paths.weights}: does not match config.yaml ({len(missing)} missing, "
                            f"{len(unexpected)} unexpected tensors)")
    return cfg, model.eval()
