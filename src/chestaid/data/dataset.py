"""A torch Dataset over the cache: (image uint8 [1,S,S], patient vector float32 [3], target float32 [L])."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from chestaid.data.cache import Cache
from chestaid.data.sources import patient_info


class CacheDataset(Dataset):
    """Rows of a cache (one split, or any table of cache rows, e.g. a balanced one with a `flip` column)."""

    def __init__(self, cache: Cache, split: str | None = None, rows: pd.DataFrame | None = None) -> None:
        if rows is None:
            rows = cache.table if split is None else cache.table[cache.table["split"] == split]
        self.images_path = cache.root / "images.npy"
        self._images: np.ndarray | None = None
        self.rows = rows.reset_index(drop=True)
        self.index = self.rows["row"].to_numpy()
        self.flip = self.rows["flip"].to_numpy().astype(bool) if "flip" in self.rows else np.zeros(len(rows), bool)
        self.tabular = torch.from_numpy(patient_info(self.rows))
        self.targets = torch.tensor(self.rows[list(cache.task.labels)].to_numpy(dtype=np.float32))

    @property
    def images(self) -> np.ndarray:
        if self._images is None:  # opened per process: a memmap must not be pickled into workers
            self._images = np.load(self.images_path, mmap_mode="r")
        return self._images

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_images": None}

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pixels = self.images[self.index[i]]
        pixels = np.array(pixels[:, ::-1] if self.flip[i] else pixels)  # a copy: the memmap is read-only
        return torch.from_numpy(pixels).unsqueeze(0), self.tabular[i], self.targets[i]
