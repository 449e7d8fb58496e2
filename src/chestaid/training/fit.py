"""Training: the Trainer wiring and the run directory, in one process or several (DDP).

RUN/config.yaml, RUN/checkpoints/{last,best}.ckpt (Lightning's ModelCheckpoint: last every
`train.checkpoint_every_n_steps` steps and after each validation), RUN/model.safetensors (= best),
RUN/train_log.csv (one row per epoch), RUN/logs/ (Lightning's CSV logger, per step; TensorBoard when asked).
Under DDP every process runs this same function (Lightning relaunches the command for ranks 1…N-1); only global
rank 0 creates the run directory and writes its files. What follows a fit (the input gate, the manifest, the
model card) is composed by chestaid.workflows.train; thresholds and calibrators are fitted later, not here.
"""

from __future__ import annotations

import io
import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO

from chestaid.core.config import RunConfig, load_config, save_config, with_task
from chestaid.data.cache import Cache, prepare, source_or_cache
from chestaid.training.datamodule import CacheDataModule
from chestaid.core.errors import ChestaidError
from chestaid.core.fileio import atomic_write, write_json
from chestaid.training.module import MONITORS, ChestModule
from chestaid.training.precision import choose_precision
from chestaid.core.run_paths import RunPaths
from chestaid.training.run_log import BestCheckpoint, EpochTable, StepCheckpoint, StepTime


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
    """While fitting only: hide a deprecation raised inside Lightning itself and its advert for litlogger.
    Warning filters and the logger are restored afterwards."""
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    logger.addFilter(_without_litlogger_tip)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
            yield
    finally:
        logger.removeFilter(_without_litlogger_tip)


def _open_cache(cfg: RunConfig, data: str | Path, found, out: Path, lead: bool) -> Cache:
    """The cache `data` is (`found`: what source_or_cache read there), or the one built from the source folder
    `data` into RUN/cache (by rank 0 only: other processes find it ready when Lightning launches them; under
    torchrun or SLURM, prepare it first)."""
    if isinstance(found, Cache):
        cache = found
    else:
        cache_dir = out / "cache"
        if lead:
            prepare(data, cache_dir, size=cfg.data.cache_size)
        elif not (cache_dir / "meta.json").is_file():
            raise ChestaidError(f"{data}: a source folder; with several processes, run `chestaid prepare` first "
                                "and pass the cache as --data")
        cache = Cache.open(cache_dir)
    if cfg.task is not None and cache.task != cfg.task:
        raise ChestaidError(f"{data}: holds data of task {cache.task.name!r} ({', '.join(cache.task.labels)}) but "
                            f"the config's task is {cfg.task.name!r} ({', '.join(cfg.task.labels)})")
    return cache


def is_global_zero() -> bool:
    """Whether this process is (or will be) global rank 0, before any Trainer exists: the launcher of a
    Lightning DDP run, torchrun's and SLURM's rank 0, or a plain single process."""
    return all(int(os.environ.get(name) or 0) == 0 for name in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))


@dataclass(frozen=True)
class Fitted:
    """A finished fit: the run's files, the cache it was trained on, the resolved config, and whether this
    process is global rank 0 (the one that writes whatever comes next)."""

    paths: RunPaths
    cache: Cache
    cfg: RunConfig
    lead: bool


WRITTEN_BY_TRAIN = ("config", "weights", "checkpoints", "train_log", "logs", "manifest", "training_precision",
                    "model_card", "gate", "calibration", "thresholds", "metrics", "plots", "report", "explain",
                    "onnx", "backends", "cohort_cache", "compare", "external")


def _progress(path: Path) -> tuple[int, int, int]:
    """(global step, epoch, 1 for last.ckpt) of a checkpoint, read without loading its tensors (mmap); a file that
    cannot be read counts as no progress."""
    try:
        state = torch.load(path, map_location="cpu", mmap=True, weights_only=False)  # the run's own checkpoint
        return int(state.get("global_step", -1)), int(state.get("epoch", -1)), int(path.name == "last.ckpt")
    except Exception:  # noqa: BLE001 - a damaged checkpoint is never the one to resume from
        return -1, -1, -1


def newest_checkpoint(paths: RunPaths) -> Path | None:
    """The checkpoint a resume continues from: the further of last.ckpt and best.ckpt by the step and epoch they
    hold (an interruption between the two writes of an epoch leaves best.ckpt the further; a copy of the run
    that changed the files' times changes nothing), last.ckpt on a tie; None when there is neither."""
    found = [p for p in (paths.last, paths.best) if p.is_file()]
    return max(found, key=_progress) if found else None


def check_fresh_out(paths: RunPaths) -> None:
    """A new run may go into `paths.root` only when no run (finished or interrupted) is there."""
    if not paths.config.exists():
        return
    state = "a finished run" if paths.model_card.is_file() else "an interrupted run"
    how = "" if paths.model_card.is_file() else f"continue it with `chestaid train --resume {paths.root}`, or "
    raise ChestaidError(f"{paths.root}: already holds {state}; {how}start over with --force (removes only what "
                        "train wrote), or choose another --out")


def made_by_train(paths: RunPaths) -> bool:
    """Whether the folder holds what `train` writes first (config.yaml with training_precision.json beside it):
    --force never clears a folder that merely has a config.yaml of its own."""
    return paths.config.is_file() and paths.training_precision.is_file()


def remove_run(paths: RunPaths) -> None:
    """--force: remove what `train` and the commands after it wrote into the run folder, nothing else. A cache
    train prepared there (RUN/cache) stays: `prepare` reuses it when it matches the source and size, and
    decoding a real dataset again would take hours."""
    import shutil

    for name in WRITTEN_BY_TRAIN:
        target = getattr(paths, name)
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


def fit(cfg: RunConfig, data: str | Path | None, out: str | Path, resume: bool = False,
        force: bool = False) -> Fitted:
    """Train into a run directory, or continue one (resume=True) from its newest checkpoint; a run interrupted
    before its first checkpoint starts again from its saved config. force=True starts over in `out`."""
    paths, lead = RunPaths(out), is_global_zero()
    checkpoint = None
    if resume:
        if not paths.config.is_file():
            hint = (" (interrupted before training started: run the same `chestaid train` command again)"
                    if paths.root.is_dir() else "")
            raise ChestaidError(f"{paths.root}: not a run (no config.yaml); nothing to resume{hint}")
        cfg = load_config(paths.config)
        data = cfg.data.path
        checkpoint = newest_checkpoint(paths)
        if lead:
            for stale in paths.root.rglob(".*.tmp"):  # half-written temporaries of a killed run; originals intact
                stale.unlink()
            if checkpoint is None:
                logging.getLogger(__name__).info("%s: no checkpoint yet; training starts again from epoch 0",
                                                 paths.root)
    elif lead and not (force and paths.config.exists()):
        check_fresh_out(paths)
    if data is None:
        raise ChestaidError("no data: pass --data ROOT_OR_CACHE")
    found = source_or_cache(data)  # a missing or unreadable --data fails here, before anything is made or removed
    if lead and force and not resume and paths.config.exists():
        if not made_by_train(paths):
            raise ChestaidError(f"{paths.root}: its config.yaml was not written by chestaid train; --force clears "
                                "only a run's own files: choose another --out")
        remove_run(paths)
    if lead:
        paths.root.mkdir(parents=True, exist_ok=True)
    cache = _open_cache(cfg, data, found, paths.root, lead)
    cfg = with_task(cfg, cache.task).model_copy(update={"data": cfg.data.model_copy(update={  # what inference
        "path": str(cache.root.resolve()), "cache_size": int(cache.meta["size"])})})             # must reproduce
    precision = choose_precision(cfg)  # `auto` resolved once: a resumed run keeps what was chosen
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"precision": precision.precision})})
    if lead and not resume:
        save_config(cfg, paths.config)
        write_json(paths.training_precision, precision.to_json())
    L.seed_everything(cfg.train.seed, workers=True, verbose=False)
    datamodule = CacheDataModule(cache, cfg)
    module = ChestModule(cfg, datamodule.pos_weight().tolist())
    with _quiet_lightning():
        trainer = L.Trainer(
            max_epochs=cfg.train.epochs, accelerator=cfg.train.accelerator, devices=cfg.train.devices,
            num_nodes=cfg.train.num_nodes,
            strategy=cfg.train.strategy, precision=cfg.train.precision, callbacks=_callbacks(cfg, paths),
            logger=_loggers(cfg, paths), default_root_dir=paths.root, plugins=[AtomicCheckpointIO()],
            log_every_n_steps=1, num_sanity_val_steps=0, enable_model_summary=False,
            limit_train_batches=cfg.train.limit_train_batches if cfg.train.limit_train_batches != 1.0 else None)
        trainer.fit(module, datamodule=datamodule, ckpt_path=checkpoint)
    return Fitted(paths, cache, cfg, trainer.is_global_zero)


def _callbacks(cfg: RunConfig, paths: RunPaths) -> list:
    metric, mode = MONITORS[cfg.train.monitor]
    best = BestCheckpoint(paths, cfg, metric, mode)  # + last.ckpt after each validation
    callbacks = [best, EpochTable(paths, best), StepTime()]
    if cfg.train.checkpoint_every_n_steps:
        callbacks.append(StepCheckpoint(paths, cfg.train.checkpoint_every_n_steps))
    if cfg.train.early_stopping_patience:
        callbacks.append(EarlyStopping(metric, mode=mode, patience=cfg.train.early_stopping_patience,
                                       check_on_train_epoch_end=False))  # at validation end, as the checkpoints
    return callbacks


def _loggers(cfg: RunConfig, paths: RunPaths) -> list[Logger] | bool:
    """Lightning's CSV logger (RUN/logs/version_N/metrics.csv: every step's loss and time, every epoch's
    metrics; a resumed run starts a new version), with TensorBoard's beside it when asked."""
    if cfg.train.logger == "none":
        return False
    loggers: list[Logger] = [CSVLogger(paths.root, name="logs", flush_logs_every_n_steps=1)]  # a kill loses none
    if cfg.train.logger == "tensorboard":
        try:
            loggers.append(TensorBoardLogger(paths.root, name="logs"))
        except ModuleNotFoundError as exc:
            raise ChestaidError("train.logger=tensorboard needs TensorBoard: pip install tensorboard") from exc
    return loggers
