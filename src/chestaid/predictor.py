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
from chestaid.models.chestnet import ChestNet
from chestaid.run_dir import load_model
from chestaid.tasks import Task, get_task


class Predictor:
    """A trained model ready to score images: `Predictor.load(RUN)`."""

    def __init__(self, cfg: RunConfig, model: ChestNet, device: str = "cpu") -> None:
        self.cfg, self.device = cfg, torch.device(device)
        self.task: Task = get_task(cfg.task)
        self.model = model.to(self.device).eval()
        if cfg.train.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)

    @classmethod
    def load(cls, run: str | Path, device: str = "cpu") -> "Predictor":
        cfg, model = load_model(run)
        return cls(cfg, model, device)

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
