"""What a run leaves besides Lightning's own checkpoints and logs: model.safetensors kept equal to the best
checkpoint's weights, the per-epoch table train_log.csv (SPEC A14), and the step time (logged through Lightning,
next to the step loss, into RUN/logs/).

Files are written by global rank 0 only, atomically.
"""

from __future__ import annotations

import math
import time

import lightning as L
import pandas as pd
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from chestaid.core.config import RunConfig
from chestaid.core.fileio import write_text
from chestaid.core.run_paths import RunPaths
from chestaid.models.weights import save_weights

EPOCH_COLUMNS = ["epoch", "train_loss", "val_loss", "precision_mean", "recall_mean", "f1_mean", "macro_f1",
                 "auroc_mean", "lr", "epoch_seconds", "best", "monitor"]


class BestCheckpoint(ModelCheckpoint):
    """checkpoints/best.ckpt by the monitored validation metric, last.ckpt after every validation, and
    model.safetensors with the best weights (safe to load from strangers: what inference reads)."""

    def __init__(self, paths: RunPaths, cfg: RunConfig, monitor: str, mode: str) -> None:
        super().__init__(dirpath=paths.checkpoints, filename="best", monitor=monitor, mode=mode, save_top_k=1,
                         save_last=True, save_on_train_epoch_end=False, enable_version_counter=False,
                         auto_insert_metric_name=False)
        self.paths, self.task = paths, cfg.require_task().name

    def improves(self, trainer: L.Trainer) -> bool:
        """Whether this validation's metric beats the best so far (asked before the checkpoint is saved)."""
        current = trainer.callback_metrics.get(self.monitor)
        return current is not None and bool(self.check_monitor_top_k(trainer, current))

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        improved = self.improves(trainer)
        super().on_validation_end(trainer, module)
        if improved and trainer.is_global_zero:
            save_weights(module.model, self.paths.weights, self.task)

    def on_fit_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not self.paths.weights.is_file() and trainer.is_global_zero:  # the metric was never finite
            save_weights(module.model, self.paths.weights, self.task)


class StepCheckpoint(ModelCheckpoint):
    """last.ckpt every N steps within an epoch, except at its last batch: resumed from there, Lightning would
    skip that epoch's validation. The validation's own last.ckpt follows a moment later."""

    def __init__(self, paths: RunPaths, every: int) -> None:
        super().__init__(dirpath=paths.checkpoints, every_n_train_steps=every, save_top_k=0, save_last=True,
                         enable_version_counter=False)  # one last.ckpt, shared with BestCheckpoint's

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs, batch, batch_idx) -> None:
        if not trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            super().on_train_batch_end(trainer, module, outputs, batch, batch_idx)


class StepTime(Callback):
    """Seconds per optimisation step, logged with the step loss."""

    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, batch, batch_idx: int) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs, batch, batch_idx) -> None:
        module.log("train/step_seconds", time.perf_counter() - self._start, on_step=True, on_epoch=False,
                   batch_size=1)


class EpochTable(Callback):
    """RUN/train_log.csv: one row per epoch, written when its validation ends (before that validation's
    last.ckpt). The rows travel in the checkpoint, so a resumed run continues exactly the table it restored."""

    def __init__(self, paths: RunPaths, best: BestCheckpoint) -> None:
        self.paths, self.best = paths, best
        self.rows: list[dict] = []
        self._start = 0.0

    def state_dict(self) -> dict:
        return {"rows": self.rows}

    def load_state_dict(self, state: dict) -> None:
        self.rows = list(state["rows"])

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._write(trainer)  # after a resume: drops rows of epochs past the checkpoint

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = trainer.callback_metrics
        self.rows.append({
            "epoch": trainer.current_epoch, "train_loss": _num(metrics.get("train/epoch_loss")),
            "val_loss": _num(metrics.get("val/loss")), "precision_mean": _num(metrics.get("val/precision")),
            "recall_mean": _num(metrics.get("val/recall")), "f1_mean": _num(metrics.get("val/f1")),
            "macro_f1": _num(metrics.get("val/macro_f1")), "auroc_mean": _num(metrics.get("val/auroc")),
            "lr": trainer.optimizers[0].param_groups[0]["lr"],
            "epoch_seconds": round(time.perf_counter() - self._start, 2), "best": self.best.improves(trainer),
            "monitor": _num(metrics.get(self.best.monitor))})
        self._write(trainer)

    def _write(self, trainer: L.Trainer) -> None:
        if trainer.is_global_zero:
            write_text(self.paths.train_log, pd.DataFrame(self.rows, columns=EPOCH_COLUMNS).to_csv(index=False))


def read_steps(paths: RunPaths) -> pd.DataFrame:
    """Every optimisation step's loss and time from the CSV logger (RUN/logs/version_*/metrics.csv), one row per
    step: where a resumed run did a step again, its later record is kept."""
    frames = []
    for version in sorted(paths.logs.glob("version_*"), key=lambda p: int(p.name.split("_")[1])):
        if (version / "metrics.csv").is_file():
            frame = pd.read_csv(version / "metrics.csv")
            if "train/loss" in frame:
                frames.append(frame.dropna(subset=["train/loss"]))
    columns = {"step": "step", "epoch": "epoch", "train/loss": "loss", "train/step_seconds": "step_seconds"}
    if not frames:
        return pd.DataFrame(columns=list(columns.values()))
    steps = pd.concat(frames).rename(columns=columns)[list(columns.values())]
    return steps.drop_duplicates("step", keep="last").sort_values("step").reset_index(drop=True)


def _num(value) -> float:
    if value is None:
        return math.nan
    return round(float(value), 6)
