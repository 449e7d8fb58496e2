"""The one inference path: load a run directory, turn uint8 images into logits with the evaluation transform.

Evaluation, `predict`, the web page and the API all score images through `Predictor`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from chestaid.config import RunConfig
from chestaid.data.augment import eval_transform
from chestaid.data.cache import Cache
from chestaid.data.dataset import CacheDataset
from chestaid.evaluate.calibration import Calibration
from chestaid.evaluate.thresholds import Thresholds
from chestaid.models.chestnet import ChestNet
from chestaid.run_dir import RunPaths, load_model
from chestaid.tasks import Task, get_task


class Predictor:
    """A trained model ready to score images: `Predictor.load(RUN)`.

    Raw logits → calibrated risk scores (RUN/calibration.json; plain sigmoid when absent) → decisions at
    RUN/thresholds.json (0.5 when absent). `calibrated` and `thresholded` say which the run had."""

    def __init__(self, cfg: RunConfig, model: ChestNet, device: str = "cpu", calibration: Calibration | None = None,
                 thresholds: Thresholds | None = None) -> None:
        self.cfg, self.device = cfg, torch.device(device)
        self.task: Task = get_task(cfg.task)
        self.model = model.to(self.device).eval()
        if cfg.train.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.calibrated, self.thresholded = calibration is not None, thresholds is not None
        self.calibration = calibration or Calibration.identity(self.task.labels)
        self.thresholds = thresholds or Thresholds({n: 0.5 for n in self.task.labels}, "default", {})

    @classmethod
    def load(cls, run: str | Path, device: str = "cpu", raw: bool = False) -> "Predictor":
        """Load a run; raw=True ignores its calibration and thresholds (used while fitting them)."""
        paths = RunPaths(run)
        cfg, model = load_model(run)
        labels = get_task(cfg.task).labels
        calibration = None if raw or not paths.calibration.is_file() else Calibration.load(paths.calibration, labels)
        thresholds = None if raw or not paths.thresholds.is_file() else Thresholds.load(paths.thresholds)
        return cls(cfg, model, device, calibration, thresholds)

    def risk_scores(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated risk scores [N, labels] in [0, 1]: a risk score, not a clinical probability."""
        return self.calibration(logits)

    def decisions(self, scores: np.ndarray) -> np.ndarray:
        return self.thresholds.decide(scores, self.task.labels)

    @torch.inference_mode()
    def logits(self, images: torch.Tensor, tabular: torch.Tensor) -> torch.Tensor:
        """uint8 images [B,1,H,W] + patient vectors [B,3] → logits [B, labels] (on the CPU)."""
        x = eval_transform(images.to(self.device), self.cfg.data.image_size, self.cfg.data.augment.crop)
        if self.cfg.train.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        tab = tabular.to(self.device) if self.cfg.model.tabular else None
        return self.model(x, tab).float().cpu()

    def predict_cache(self, cache: Cache, split: str | None, batch_size: int = 64) -> tuple[np.ndarray, pd.DataFrame]:
        """Logits [N, labels] for one split of a cache, with the rows they belong to (targets included)."""
        dataset = CacheDataset(cache, split)
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
        out = [self.logits(images, tabular).numpy() for images, tabular, _ in loader]
        logits = np.concatenate(out) if out else np.zeros((0, self.task.num_outputs), np.float32)
        return logits, dataset.rows
