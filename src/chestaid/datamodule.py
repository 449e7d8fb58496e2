"""The Lightning DataModule over a cache: balanced training rows, validation rows, plain uint8 batches.

Augmentation is not done here: the LightningModule applies it to whole batches on the training device.
"""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from chestaid.config import RunConfig
from chestaid.data.balance import balance
from chestaid.data.cache import Cache
from chestaid.data.dataset import CacheDataset


class CacheDataModule(L.LightningDataModule):
    def __init__(self, cache: Cache, cfg: RunConfig) -> None:
        super().__init__()
        self.cache, self.cfg = cache, cfg
        labels = cache.task.labels
        table = cache.table
        self.train_rows = balance(table[table["split"] == "train"], labels, cfg.data.balance, cfg.train.seed)
        self.val_rows = table[table["split"] == "val"]
        if len(self.train_rows) == 0 or len(self.val_rows) == 0:
            raise ValueError(f"{cache.root}: the cache needs both train and val rows "
                             f"(has {len(self.train_rows)} train, {len(self.val_rows)} val)")

    def pos_weight(self) -> torch.Tensor:
        """BCE pos_weight from the (balanced) training frequencies, then the manual overrides (SPEC A12)."""
        labels = self.cache.task.labels
        targets = self.train_rows[list(labels)].to_numpy(dtype=np.float64)
        n, positives = len(targets), np.maximum(targets.sum(axis=0), 1.0)
        mode = self.cfg.loss.pos_weight
        if mode == "log":
            weight = np.log(n / positives)  # seed 000: rarer findings get larger weights
        elif mode == "ratio":
            weight = (n - positives) / positives  # seed 003: negatives / positives (0.34 on Kaggle)
        elif mode == "none":
            weight = np.ones(len(labels))
        else:
            weight = np.full(len(labels), float(mode))
        for name, value in self.cfg.loss.overrides.items():
            weight[labels.index(name)] = value
        return torch.tensor(np.maximum(weight, 1e-3), dtype=torch.float32)

    def _loader(self, rows, shuffle: bool) -> DataLoader:
        workers = self.cfg.data.num_workers
        return DataLoader(CacheDataset(self.cache, rows=rows), batch_size=self.cfg.data.batch_size, shuffle=shuffle,
                          num_workers=workers, pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0,
                          drop_last=shuffle and len(rows) > self.cfg.data.batch_size)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_rows, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_rows, shuffle=False)
