"""Training: a LightningModule holding model, loss and optimiser; the Trainer wiring; the run directory.

Per step the loss and step time are logged; per epoch the seed's table (SPEC A14): train loss, val loss,
mean precision, mean recall, mean F1 (pooled over all decisions), macro F1 and mean AUROC (over findings
with positives and negatives in val), decisions at 0.5. Validation thresholds are fitted later, not here.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch import nn
from torchmetrics import MeanMetric, Metric
from torchmetrics.classification import (BinaryAUROC, BinaryF1Score, BinaryPrecision, BinaryRecall,
                                         MultilabelAUROC, MultilabelF1Score, MultilabelPrecision,
                                         MultilabelRecall)

from chestaid.config import RunConfig, load_config, save_config, with_task
from chestaid.data.augment import AugmentConfig, eval_transform, train_transform
from chestaid.data.cache import Cache, prepare, source_or_cache
from chestaid.datamodule import CacheDataModule
from chestaid.errors import ChestaidError
from chestaid.fileio import atomic_write
from chestaid.model_card import write_model_card
from chestaid.models.chestnet import build_model
from chestaid.run_dir import RunPaths
from chestaid.run_log import RunLog


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
    def __init__(self, cfg: RunConfig, pos_weight: torch.Tensor) -> None:
        super().__init__()
        self.cfg = cfg
        n = cfg.require_task().num_outputs
        self.model = build_model(cfg.model, n)
        self.loss_fn = nn.BCEWithLogitsLoss(pos_weight=pos_weight)
        self.augment = AugmentConfig(**cfg.data.augment.model_dump())
        self.val_loss = MeanMetric()
        self.val_counts = LabelCounts(n)
        self.binary = n == 1
        if self.binary:  # torchmetrics' multilabel classes need two labels or more
            self.val_auroc, self.val_precision = BinaryAUROC(), BinaryPrecision(zero_division=0)
            self.val_recall, self.val_f1 = BinaryRecall(zero_division=0), BinaryF1Score(zero_division=0)
            self.val_macro_f1 = BinaryF1Score(zero_division=0)
        else:
            self.val_auroc = MultilabelAUROC(num_labels=n, average=None)
            self.val_precision = MultilabelPrecision(num_labels=n, average="macro", zero_division=0)
            self.val_recall = MultilabelRecall(num_labels=n, average="macro", zero_division=0)
            self.val_f1 = MultilabelF1Score(num_labels=n, average="micro", zero_division=0)
            self.val_macro_f1 = MultilabelF1Score(num_labels=n, average="macro", zero_division=0)

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

    def forward(self, x: torch.Tensor, tabular: torch.Tensor) -> torch.Tensor:
        return self.model(x, tabular if self.cfg.model.tabular else None)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, tabular, target = batch
        loss = self.loss_fn(self(x, tabular).float(), target)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(x))
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        x, tabular, target = batch
        logits = self(x, tabular).float()
        self.val_loss.update(self.loss_fn(logits, target), weight=len(x))
        probs, labels = torch.sigmoid(logits), target.int()
        if self.binary:
            probs, labels = probs.view(-1), labels.view(-1)
        self.val_counts.update(target)
        for metric in (self.val_auroc, self.val_precision, self.val_recall, self.val_f1, self.val_macro_f1):
            metric.update(probs, labels)

    def on_validation_epoch_end(self) -> None:
        positives, count = self.val_counts.compute()
        valid = (positives > 0) & (positives < count)
        auroc = self.val_auroc.compute().view(-1)
        mean_auroc = auroc[valid].mean() if valid.any() else torch.tensor(float("nan"))
        self.log_dict({"val/loss": self.val_loss.compute(), "val/precision": self.val_precision.compute(),
                       "val/recall": self.val_recall.compute(), "val/f1": self.val_f1.compute(),
                       "val/macro_f1": self.val_macro_f1.compute(), "val/auroc": mean_auroc}, prog_bar=True)
        for metric in (self.val_loss, self.val_counts, self.val_auroc, self.val_precision,
                       self.val_recall, self.val_f1, self.val_macro_f1):
            metric.reset()

    def configure_optimizers(self):
        cfg = self.cfg.train
        params = [p for p in self.parameters() if p.requires_grad]
        optimiser_cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
        optimiser = optimiser_cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimiser, mode="min", factor=cfg.plateau_factor,
                                                             patience=cfg.plateau_patience)
        return {"optimizer": optimiser,
                "lr_scheduler": {"scheduler": plateau, "monitor": "val/loss", "interval": "epoch"}}


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoints written to a temporary file and renamed: a kill never leaves a torn .ckpt."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        atomic_write(path, lambda f: f.write(buffer.getbuffer()))


def _without_litlogger_tip(record: logging.LogRecord) -> bool:
    return "litlogger" not in record.getMessage()


@contextmanager
def _quiet_lightning() -> Iterator[None]:
    """While fitting only: hide two Lightning notices that do not apply (augmentation lives in
    on_after_batch_transfer on purpose: it runs on the training device; a deprecation inside Lightning itself)
    and its advert for litlogger. Warning filters and the logger are restored afterwards."""
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    logger.addFilter(_without_litlogger_tip)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*overridden `on_after_batch_transfer`.*")
            warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
            yield
    finally:
        logger.removeFilter(_without_litlogger_tip)


def resolve_precision(cfg: RunConfig) -> str:
    """bf16 autocast on a GPU that has it; fp32 elsewhere (bf16 on CPU is ~450× slower here)."""
    if cfg.train.precision != "auto":
        return cfg.train.precision
    on_gpu = torch.cuda.is_available() and cfg.train.accelerator in ("auto", "gpu", "cuda")
    return "bf16-mixed" if on_gpu and torch.cuda.is_bf16_supported() else "32-true"


def _open_cache(cfg: RunConfig, data: str | Path, out: Path) -> Cache:
    found = source_or_cache(data)
    if isinstance(found, Cache):
        cache = found
    else:
        cache_dir = out / "cache"
        prepare(data, cache_dir, size=cfg.data.cache_size)
        cache = Cache.open(cache_dir)
    if cfg.task is not None and cache.task != cfg.task:
        raise ChestaidError(f"{data}: holds data of task {cache.task.name!r} ({', '.join(cache.task.labels)}) but "
                            f"the config's task is {cfg.task.name!r} ({', '.join(cfg.task.labels)})")
    return cache


def train(cfg: RunConfig, data: str | Path | None, out: str | Path, resume: bool = False) -> RunPaths:
    """Train into a run directory (or continue one from checkpoints/last.ckpt when resume=True)."""
    paths = RunPaths(out)
    if resume:
        if not paths.config.is_file():
            raise ChestaidError(f"{paths.root}: no config.yaml; nothing to resume")
        cfg = load_config(paths.config)
        data = cfg.data.path
        for stale in paths.root.rglob(".*.tmp"):  # half-written temporaries of a killed run; originals are intact
            stale.unlink()
    elif paths.config.exists():
        raise ChestaidError(f"{paths.root}: already holds a run; use --resume {paths.root} or another --out")
    if data is None:
        raise ChestaidError("no data: pass --data ROOT_OR_CACHE")
    paths.root.mkdir(parents=True, exist_ok=True)
    cache = _open_cache(cfg, data, paths.root)
    cfg = with_task(cfg, cache.task).model_copy(update={"data": cfg.data.model_copy(update={  # what inference
        "path": str(cache.root.resolve()), "cache_size": int(cache.meta["size"])})})             # must reproduce
    save_config(cfg, paths.config)
    L.seed_everything(cfg.train.seed, workers=True, verbose=False)
    datamodule = CacheDataModule(cache, cfg)
    module = ChestModule(cfg, datamodule.pos_weight())
    metric, mode = MONITORS[cfg.train.monitor]
    best = ModelCheckpoint(dirpath=paths.checkpoints, filename="best", monitor=metric, mode=mode, save_top_k=1,
                           enable_version_counter=False, auto_insert_metric_name=False)
    callbacks = [best, RunLog(paths, cfg, metric, mode)]
    if cfg.train.early_stopping_patience:
        callbacks.append(EarlyStopping(metric, mode=mode, patience=cfg.train.early_stopping_patience))
    trainer = L.Trainer(
        max_epochs=cfg.train.epochs, accelerator=cfg.train.accelerator, devices=cfg.train.devices,
        strategy=cfg.train.strategy, precision=resolve_precision(cfg), callbacks=callbacks, logger=False,
        default_root_dir=paths.root, plugins=[AtomicCheckpointIO()], log_every_n_steps=1,
        limit_train_batches=cfg.train.limit_train_batches if cfg.train.limit_train_batches != 1.0 else None,
        num_sanity_val_steps=0, enable_model_summary=False)
    ckpt = paths.last if resume and paths.last.is_file() else None
    if resume and ckpt is None:
        raise ChestaidError(f"{paths.root}: no checkpoints/last.ckpt to resume from")
    with _quiet_lightning():
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt)
    if trainer.is_global_zero:
        _fit_input_gate(paths, cache, cfg)
        write_model_card(paths.root)
    return paths


def _fit_input_gate(paths: RunPaths, cache: Cache, cfg: RunConfig) -> None:
    """The out-of-distribution statistics of the finished model (RUN/gate.safetensors, chestaid.inference.gate)."""
    from chestaid.evaluation.gate_fit import fit_gate
    from chestaid.inference.gate import GATE_NAME
    from chestaid.inference.predictor import Predictor

    device = "cuda" if torch.cuda.is_available() and cfg.train.accelerator in ("auto", "gpu", "cuda") else "cpu"
    try:
        fit_gate(paths, Predictor.load(paths.root, device, raw=True, backend="torch"), cache)
    except ChestaidError as e:  # a run too small for the gate is still a run; it says "no input gate" when used
        (paths.root / GATE_NAME).unlink(missing_ok=True)  # a gate of earlier weights must not stay
        warnings.warn(f"{paths.root}: no input gate fitted ({e})", stacklevel=2)
