"""The one inference path: load a run directory, turn uint8 images into logits with the evaluation transform.

Evaluation, `predict`, the web page and the API all score images through `Predictor`.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.special import expit
from torch.utils.data import DataLoader

from chestaid.config import RunConfig
from chestaid.data.augment import eval_transform
from chestaid.data.cache import Cache
from chestaid.data.dataset import CacheDataset
from chestaid.data.images import dicom_patient_info, is_dicom, read_grey, resize_square
from chestaid.data.sources import patient_vectors
from chestaid.errors import ImageDecodeError
from chestaid.evaluate.calibration import Calibration
from chestaid.evaluate.thresholds import Thresholds
from chestaid.models.chestnet import ChestNet
from chestaid.run_dir import RunPaths, load_model
from chestaid.tasks import Task, get_task


@dataclass
class Scored:
    """One image's result: per finding the raw score (sigmoid of the logit), the calibrated risk score and the
    decision at the threshold; the patient data used and which of it was assumed."""

    path: str
    logits: np.ndarray
    risk: np.ndarray
    decisions: np.ndarray
    patient: dict = field(default_factory=dict)
    assumed: list[str] = field(default_factory=list)
    tabular: np.ndarray | None = None  # the patient vector the model was given
    image: np.ndarray | None = None  # the preprocessed uint8 image (cache size), for heat maps

    @property
    def raw(self) -> np.ndarray:
        return expit(self.logits)


def patient_for(path: str | Path, given: dict | None = None) -> tuple[dict, list[str]]:
    """Age/sex/view for an image: given values first, then DICOM tags, else neutral (documented) defaults."""
    found = {"age": None, "sex": None, "view": None}
    if is_dicom(path):
        found.update(dicom_patient_info(path))
    for key, value in (given or {}).items():
        if value not in (None, "", "unknown"):
            found[key] = value
    assumed = [key for key, value in found.items() if value is None]
    return found, assumed


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
        cfg, model = load_model(run)
        predictor = cls(cfg, model, device)
        if not raw:
            predictor.load_fitted(run)
        return predictor

    def load_fitted(self, run: str | Path) -> None:
        """(Re)read the run's calibration.json and thresholds.json; what is absent stays sigmoid / 0.5."""
        paths = RunPaths(run)
        if paths.calibration.is_file():
            self.calibration, self.calibrated = Calibration.load(paths.calibration, self.task.labels), True
        if paths.thresholds.is_file():
            self.thresholds, self.thresholded = Thresholds.load(paths.thresholds), True

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

    @property
    def image_size(self) -> int:
        """The size images are resized to before the evaluation transform: the training cache's size."""
        return self.cfg.data.cache_size

    def load_image(self, path: str | Path) -> np.ndarray:
        """Decode any supported file and resize it exactly as the cache did (raises ImageDecodeError)."""
        return resize_square(read_grey(path, draft_size=self.image_size), self.image_size)

    def score_arrays(self, images: np.ndarray, tabular: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """uint8 [B,S,S] images + patient vectors [B,3] → (logits, calibrated risk scores, decisions)."""
        logits = self.logits(torch.from_numpy(np.ascontiguousarray(images)).unsqueeze(1),
                             torch.from_numpy(tabular)).numpy()
        risk = self.risk_scores(logits)
        return logits, risk, self.decisions(risk)

    def score_files(self, paths: list[str | Path], batch_size: int = 16, patient: dict | None = None,
                    keep_images: bool = False, progress=None) -> tuple[list[Scored], list[tuple[str, str]]]:
        """Score files in batches. Returns the scored images and (file, reason) for each unreadable one."""
        scored, failed = [], []
        workers = min(8, os.cpu_count() or 1)

        def load(path):
            try:
                return self.load_image(path), ""
            except ImageDecodeError as e:
                return None, e.reason

        with ThreadPoolExecutor(max_workers=workers) as pool:
            for start in range(0, len(paths), batch_size):
                batch = [str(p) for p in paths[start:start + batch_size]]
                loaded = list(pool.map(load, batch))
                good = [(p, img) for p, (img, _) in zip(batch, loaded) if img is not None]
                failed += [(p, reason) for p, (img, reason) in zip(batch, loaded) if img is None]
                if good:
                    metas = [patient_for(p, patient) for p, _ in good]
                    tabular = patient_vectors([m for m, _ in metas])
                    logits, risk, decisions = self.score_arrays(np.stack([img for _, img in good]), tabular)
                    for k, (p, img) in enumerate(good):
                        scored.append(Scored(p, logits[k], risk[k], decisions[k],
                                             metas[k][0], metas[k][1], tabular[k], img if keep_images else None))
                if progress is not None:
                    progress(len(batch))
        return scored, failed

    def predict_cache(self, cache: Cache, split: str | None, batch_size: int = 64) -> tuple[np.ndarray, pd.DataFrame]:
        """Logits [N, labels] for one split of a cache, with the rows they belong to (targets included)."""
        dataset = CacheDataset(cache, split)
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
        out = [self.logits(images, tabular).numpy() for images, tabular, _ in loader]
        logits = np.concatenate(out) if out else np.zeros((0, self.task.num_outputs), np.float32)
        return logits, dataset.rows
