"""The Lightning DataModule over a cache: balanced training rows, validation rows, uint8 batches that become
augmented (train) or centre-cropped (val), normalised float batches on the training device
(`on_after_batch_transfer`), so a GPU is not starved by per-image CPU transforms.

Under DDP, Lightning shards the training rows; validation rows are split without padding (each image scored
once, on one process), and each process draws its own augmentations.
"""

from __future__ import annotations

import logging

import lightning as L
import numpy as np
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader

from chestaid.core.config import RunConfig
from chestaid.core.errors import ChestaidError
from chestaid.data.augment import eval_transform, train_transform
from chestaid.data.balance import balance
from chestaid.data.cache import Cache
from chestaid.data.dataset import CacheDataset

log = logging.getLogger(__name__)


class CacheDataModule(L.LightningDataModule):
    def __init__(self, cache: Cache, cfg: RunConfig) -> None:
        super().__init__()
        self.cache, self.cfg = cache, cfg
        labels = cache.task.labels
        table = cache.table
        self.train_rows = balance(table[table["split"] == "train"], labels, cfg.data.balance, cfg.train.seed)
        self.val_rows = table[table["split"] == "val"]
        if len(self.train_rows) == 0 or len(self.val_rows) == 0:
            raise ChestaidError(f"{cache.root}: the cache needs both train and val rows "
                                f"(has {len(self.train_rows)} train, {len(self.val_rows)} val)")
        one_class = [n for n in labels if self.val_rows[n].nunique() < 2]
        if one_class:
            log.warning("validation has no positives (or no negatives) for %s: mean AUROC and the best "
                        "checkpoint are computed without them", ", ".join(one_class))
        self.augment = cfg.data.augment

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

    def _loader(self, dataset: CacheDataset, shuffle: bool, sampler=None) -> DataLoader:
        workers = self.cfg.data.num_workers
        return DataLoader(dataset, batch_size=self.cfg.data.batch_size,
                          shuffle=shuffle if sampler is None else False, sampler=sampler, num_workers=workers,
                          pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0,
                          drop_last=shuffle and len(dataset) > self.cfg.data.batch_size)

    def train_dataloader(self) -> DataLoader:  # Lightning adds a DistributedSampler under DDP
        return self._loader(CacheDataset(self.cache, rows=self.train_rows), shuffle=True)

    def val_dataloader(self) -> DataLoader:
        dataset = CacheDataset(self.cache, rows=self.val_rows)
        world = self.trainer.world_size if self.trainer is not None else 1
        sampler = None if world == 1 else UnrepeatedDistributedSampler(
            dataset, num_replicas=world, rank=self.trainer.global_rank,
            shuffle=False)  # Lightning's own sampler would pad with repeated images to even the shards
        return self._loader(dataset, shuffle=False, sampler=sampler)

    def setup(self, stage: str) -> None:
        """Under DDP, ranks 1…N-1 reseed torch's generator (the models are already built, and identical), so
        that each process draws its own augmentations; rank 0 draws exactly as a single process would."""
        rank = self.trainer.global_rank if self.trainer is not None else 0
        if rank > 0:
            torch.manual_seed(self.cfg.train.seed + 1000 * rank)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        images, tabular, target = batch
        size = self.cfg.data.image_size
        if self.trainer is not None and self.trainer.training:
            x = train_transform(images, size, self.augment)
        else:
            x = eval_transform(images, size, self.augment.crop)
        if self.cfg.train.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, tabular, target
