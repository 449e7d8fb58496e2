"""The LightningModule: model, loss, optimiser, and the validation metrics of the seed's epoch table (SPEC A14):
val loss, mean precision, mean recall, mean F1 (pooled over all decisions), macro F1 and mean AUROC (over findings
with positives and negatives in val), decisions at 0.5. Under DDP every metric is reduced over all processes'
validation images (torchmetrics), so the table and the best checkpoint mean what they mean in one process.
"""

from __future__ import annotations

import math
from functools import partial

import lightning as L
import torch
from torch import nn
from torchmetrics import CatMetric, MeanMetric, Metric
from torchmetrics.functional.classification import binary_auroc
from torchmetrics.classification import (BinaryF1Score, BinaryPrecision, BinaryRecall,
                                         MultilabelF1Score, MultilabelPrecision,
                                         MultilabelRecall)

from chestaid.core.config import RunConfig
from chestaid.models.chestnet import build_model

MONITORS = {"macro_f1": ("val/macro_f1", "max"), "auroc": ("val/auroc", "max"),
            "precision": ("val/precision", "max"), "loss": ("val/loss", "min")}


class LabelCounts(Metric):
    """Positives per label and images seen (summed across DDP processes)."""

    def __init__(self, num_labels: int) -> None:
        super().__init__()
        self.add_state("positives", torch.zeros(num_labels), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, target: torch.Tensor) -> None:
        self.positives += target.sum(0)
        self.count += target.shape[0]

    def compute(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.positives, self.count


class ChestModule(L.LightningModule):
    """Model, loss, validation metrics and optimiser. Its hyperparameters are the run's whole config, so
    `ChestModule.load_from_checkpoint(RUN/checkpoints/best.ckpt)` rebuilds it (without fetching start weights:
    the checkpoint holds them all)."""

    def __init__(self, config: dict | RunConfig, pos_weight: list[float], pretrained: bool = True) -> None:
        super().__init__()
        cfg = config if isinstance(config, RunConfig) else RunConfig.model_validate(config)
        self.save_hyperparameters({"config": cfg.model_dump(mode="json"), "pos_weight": list(pos_weight),
                                   "pretrained": False})
        self.cfg = cfg
        n = cfg.require_task().num_outputs
        model_cfg = cfg.model if pretrained else cfg.model.model_copy(update={"weights": "none"})
        self.model = build_model(model_cfg, n)
        self.loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos_weight, dtype=torch.float32))
        self.train_loss, self.val_loss = MeanMetric(), MeanMetric()
        self.val_counts = LabelCounts(n)
        self.binary = n == 1
        # AUROC from the gathered scores, only over labels with positives and negatives (torchmetrics' AUROC
        # classes warn at every validation for a label without positives; the DataModule says so once)
        self.val_probs, self.val_targets = CatMetric(), CatMetric()
        if self.binary:  # torchmetrics' multilabel classes need two labels or more
            self.val_precision = BinaryPrecision(zero_division=0)
            self.val_recall, self.val_f1 = BinaryRecall(zero_division=0), BinaryF1Score(zero_division=0)
            self.val_macro_f1 = BinaryF1Score(zero_division=0)
        else:
            self.val_precision = MultilabelPrecision(num_labels=n, average="macro", zero_division=0)
            self.val_recall = MultilabelRecall(num_labels=n, average="macro", zero_division=0)
            self.val_f1 = MultilabelF1Score(num_labels=n, average="micro", zero_division=0)
            self.val_macro_f1 = MultilabelF1Score(num_labels=n, average="macro", zero_division=0)

    def forward(self, x: torch.Tensor, tabular: torch.Tensor) -> torch.Tensor:
        return self.model(x, tabular if self.cfg.model.tabular else None)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, tabular, target = batch
        loss = self.loss_fn(self(x, tabular).float(), target)
        self.train_loss.update(loss.detach(), weight=len(x))
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=len(x))
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        x, tabular, target = batch
        logits = self(x, tabular).float()
        self.val_loss.update(self.loss_fn(logits, target), weight=len(x))
        probs, labels = torch.sigmoid(logits), target.int()
        if self.binary:
            probs, labels = probs.view(-1), labels.view(-1)
        self.val_counts.update(target)
        self.val_probs.update(probs.reshape(len(x), -1))
        self.val_targets.update(labels.reshape(len(x), -1))
        for metric in (self.val_precision, self.val_recall, self.val_f1, self.val_macro_f1):
            metric.update(probs, labels)

    def on_validation_epoch_end(self) -> None:
        positives, count = self.val_counts.compute()
        valid = (positives > 0) & (positives < count)
        mean_auroc = torch.tensor(float("nan"), device=self.device)
        if valid.any():
            probs, targets = self.val_probs.compute(), self.val_targets.compute()
            mean_auroc = torch.stack([binary_auroc(probs[:, k], targets[:, k].int())
                                      for k in torch.nonzero(valid.view(-1)).view(-1).tolist()]).mean()
        self.log_dict({"train/epoch_loss": self.train_loss.compute(),  # this epoch's, so far (all processes)
                       "val/loss": self.val_loss.compute(), "val/precision": self.val_precision.compute(),
                       "val/recall": self.val_recall.compute(), "val/f1": self.val_f1.compute(),
                       "val/macro_f1": self.val_macro_f1.compute(), "val/auroc": mean_auroc}, prog_bar=True)
        for metric in (self.train_loss, self.val_loss, self.val_counts, self.val_probs, self.val_targets,
                       self.val_precision,
                       self.val_recall, self.val_f1, self.val_macro_f1):
            metric.reset()

    def configure_optimizers(self):
        cfg = self.cfg.train
        params = [p for p in self.parameters() if p.requires_grad]
        optimiser_cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
        optimiser = optimiser_cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        steps = max(int(self.trainer.estimated_stepping_batches), 1) if self._trainer is not None else 1
        warmup = int(round(cfg.warmup_epochs * steps / cfg.epochs))
        if cfg.schedule == "cosine":
            cosine = torch.optim.lr_scheduler.LambdaLR(optimiser, partial(lr_factor, warmup=warmup, total=steps))
            return {"optimizer": optimiser, "lr_scheduler": {"scheduler": cosine, "interval": "step"}}
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimiser, mode="min", factor=cfg.plateau_factor,
                                                             patience=cfg.plateau_patience)
        return {"optimizer": optimiser,
                "lr_scheduler": {"scheduler": plateau, "monitor": "val/loss", "interval": "epoch"}}


def lr_factor(step: int, warmup: int, total: int) -> float:
    """The cosine schedule's multiplier of lr at `step`: a linear warm-up from 1/100 over `warmup` steps, then
    a cosine decay to 0 at step `total`."""
    if step < warmup:
        return 0.01 + 0.99 * step / warmup
    return 0.5 * (1 + math.cos(math.pi * min(step - warmup, total - warmup) / max(total - warmup, 1)))
