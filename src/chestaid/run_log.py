"""The training log of a run: train_log.csv (one row per epoch, SPEC A14) and steps.csv (loss, step time),
last.ckpt every N steps and at each epoch end, and model.safetensors kept equal to the best weights.

Every file is rewritten atomically; on resume the logs are read back and rows past the checkpoint dropped.
"""

from __future__ import annotations

import math
import time

import lightning as L
import pandas as pd
from lightning.pytorch.callbacks import Callback

from chestaid.config import RunConfig
from chestaid.fileio import write_text
from chestaid.run_dir import RunPaths, save_weights

EPOCH_COLUMNS = ["epoch", "train_loss", "val_loss", "precision_mean", "recall_mean", "f1_mean", "macro_f1",
                 "auroc_mean", "lr", "epoch_seconds", "best", "monitor"]


class RunLog(Callback):
    def __init__(self, paths: RunPaths, cfg: RunConfig, monitor: str, mode: str) -> None:
        self.paths, self.cfg, self.monitor, self.mode = paths, cfg, monitor, mode
        self.epochs: list[dict] = []
        self.steps: list[dict] = []
        self._epoch_start = self._step_start = 0.0
        self._best_score: float | None = None

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        step, epoch = trainer.global_step, trainer.current_epoch  # restored from the checkpoint by now
        if self.paths.train_log.is_file():
            self.epochs = [r for r in pd.read_csv(self.paths.train_log).to_dict("records") if r["epoch"] < epoch]
        if self.paths.steps.is_file():
            self.steps = [r for r in pd.read_csv(self.paths.steps).to_dict("records") if r["step"] <= step]
        kept = [r["monitor"] for r in self.epochs if "monitor" in r and not math.isnan(r["monitor"])]
        self._best_score = (max(kept) if self.mode == "max" else min(kept)) if kept else None

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._epoch_start = time.perf_counter()

    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, batch, batch_idx) -> None:
        self._step_start = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs, batch, batch_idx) -> None:
        self.steps.append({"step": trainer.global_step, "epoch": trainer.current_epoch,
                           "loss": _num(trainer.callback_metrics.get("train/loss_step")),
                           "step_seconds": round(time.perf_counter() - self._step_start, 4)})
        every = self.cfg.train.checkpoint_every_n_steps
        if every and trainer.global_step % every == 0:
            self._save_last(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        """Runs after this epoch's validation, when both train and val aggregates are known."""
        metrics = trainer.callback_metrics
        score = _num(metrics.get(self.monitor))
        improved = not math.isnan(score) and (self._best_score is None or (
            score > self._best_score if self.mode == "max" else score < self._best_score))  # strict, as best.ckpt
        if improved:
            self._best_score = score
            if trainer.is_global_zero:
                save_weights(module.model, self.paths.weights, self.cfg.require_task().name)
        self.epochs.append({
            "epoch": trainer.current_epoch, "train_loss": _num(metrics.get("train/loss_epoch")),
            "val_loss": _num(metrics.get("val/loss")), "precision_mean": _num(metrics.get("val/precision")),
            "recall_mean": _num(metrics.get("val/recall")), "f1_mean": _num(metrics.get("val/f1")),
            "macro_f1": _num(metrics.get("val/macro_f1")), "auroc_mean": _num(metrics.get("val/auroc")),
            "lr": trainer.optimizers[0].param_groups[0]["lr"],
            "epoch_seconds": round(time.perf_counter() - self._epoch_start, 2), "best": bool(improved),
            "monitor": score})
        self._save_last(trainer)  # writes the logs, then last.ckpt

    def on_fit_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._write_logs(trainer)
        if not self.paths.weights.is_file() and trainer.is_global_zero:
            save_weights(module.model, self.paths.weights, self.cfg.require_task().name)

    def _save_last(self, trainer: L.Trainer) -> None:
        self._write_logs(trainer)
        trainer.save_checkpoint(self.paths.last, weights_only=False)

    def _write_logs(self, trainer: L.Trainer) -> None:
        if not trainer.is_global_zero:
            return
        write_text(self.paths.train_log, pd.DataFrame(self.epochs, columns=EPOCH_COLUMNS).to_csv(index=False))
        write_text(self.paths.steps, pd.DataFrame(self.steps, columns=["step", "epoch", "loss", "step_seconds"])
                   .to_csv(index=False))


def _num(value) -> float:
    if value is None:
        return math.nan
    return round(float(value), 6)
