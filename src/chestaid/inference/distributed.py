"""Scoring files across several processes or GPUs with Lightning's predict loop (`chestaid predict --devices N`).

Every process runs the same command (Lightning's DDP launcher starts processes 1…N-1 by re-running it) and
loads its own Predictor. Lightning gives each process its share of the files (its predict sampler splits the
indices without repeating any); a process decodes and scores its share exactly as one process would
(`Predictor.score_images`), and at the end of the loop every process's results are gathered to all, so that
global rank 0 can write the worklist. The results come back in input order, so the worklist is the same as one
process's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from itertools import chain

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader, Dataset

from chestaid.inference.predictor import Predictor, decode_file
from chestaid.inference.result import Scored

log = logging.getLogger(__name__)


@dataclass
class Shared:
    """What the processes scored, gathered: scored images and (file, reason) for each unreadable one, in input
    order, and whether this process is global rank 0 (the one that writes what follows)."""

    scored: list[Scored]
    failed: list[tuple[str, str]]
    lead: bool


class _Files(Dataset):
    """Index → (index, path, decoded image or None, reason, DICOM header or None); decoding never raises."""

    def __init__(self, paths: list[str], size: int) -> None:
        self.paths, self.size = paths, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple:
        return (index, self.paths[index], *decode_file(self.paths[index], self.size))


def _as_list(items: list) -> list:
    return items


class _Scoring(L.LightningModule):
    """Holds no trainable weights: the process's Predictor (its torch model or ONNX/OpenVINO network) scores.
    Results stay here, as (index, scored or None, reason), until `_Gather` collects them."""

    def __init__(self, predictor: Predictor, patient: dict | None) -> None:
        super().__init__()
        self.predictor, self.patient = predictor, patient
        self.results: list[tuple[int, Scored | None, str]] = []

    def transfer_batch_to_device(self, batch: list, device: torch.device, dataloader_idx: int) -> list:
        return batch  # decoded numpy images and DICOM headers: the Predictor moves the tensors it makes

    def predict_step(self, batch: list, batch_idx: int) -> None:
        good = [item for item in batch if item[2] is not None]
        scored = iter(self.predictor.score_images([i[1] for i in good], [i[2] for i in good], [i[4] for i in good],
                                                  self.patient) if good else [])
        self.results += [(index, next(scored) if image is not None else None, reason)
                         for index, _, image, reason, _ in batch]


class _Gather(Callback):
    """At the end of the predict loop: every process's results, to every process, in input order."""

    def __init__(self) -> None:
        self.items: list[tuple[int, Scored | None, str]] = []

    def on_predict_epoch_end(self, trainer: L.Trainer, pl_module: _Scoring) -> None:
        everyone = [pl_module.results]
        if trainer.world_size > 1:
            everyone = [None] * trainer.world_size
            torch.distributed.all_gather_object(everyone, pl_module.results)
        self.items = sorted(chain.from_iterable(everyone), key=lambda item: item[0])


def rank_device(device: str) -> str:
    """The device this process scores on: the CPU, or the GPU of its local rank ("cuda" → "cuda:LOCAL_RANK")."""
    import os

    return device if device == "cpu" or ":" in device else f"{device}:{int(os.environ.get('LOCAL_RANK') or 0)}"


def score_distributed(predictor: Predictor, paths: list[str], devices: int, batch_size: int = 16,
                      patient: dict | None = None, decode_workers: int = 0) -> Shared:
    """Score `paths` with `devices` processes (a CPU predictor) or GPUs (a predictor on `rank_device("cuda")`)
    through Lightning's predict loop; every process calls this with its own predictor."""
    gather = _Gather()
    trainer = L.Trainer(accelerator="cpu" if predictor.device.type == "cpu" else "gpu", devices=devices,
                        strategy="ddp" if devices > 1 else "auto", callbacks=[gather], logger=False,
                        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
    loader = DataLoader(_Files(paths, predictor.image_size), batch_size=batch_size, shuffle=False,
                        num_workers=decode_workers, collate_fn=_as_list)
    trainer.predict(_Scoring(predictor, patient), loader, return_predictions=False)
    if [index for index, _, _ in gather.items] != list(range(len(paths))):
        raise RuntimeError(f"the predict loop returned {len(gather.items)} results for {len(paths)} files")
    scored = [s for _, s, _ in gather.items if s is not None]
    failed = [(paths[index], reason) for index, s, reason in gather.items if s is None]
    return Shared(scored, failed, trainer.is_global_zero)
