"""Training end to end on tiny synthetic data: the run directory, reloading, SIGKILL then --resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from chestaid.core.config import load_config
from chestaid.core.errors import ChestaidError
from chestaid.core.run_paths import RunPaths
from chestaid.models.weights import load_model, save_weights
from chestaid.training.run_log import read_steps
from chestaid.workflows.train import train

from conftest import CONFIGS, TINY

pytestmark = pytest.mark.trains


def test_run_directory_holds_the_expected_files(tiny_run):
    for path in (tiny_run.config, tiny_run.weights, tiny_run.last, tiny_run.best, tiny_run.train_log,
                 tiny_run.logs / "version_0" / "metrics.csv", tiny_run.logs / "version_0" / "hparams.yaml"):
        assert path.is_file() and path.stat().st_size > 0, path
    log = pd.read_csv(tiny_run.train_log)
    assert list(log["epoch"]) == [0, 1] and log["best"].iloc[0]  # the first epoch is the best so far
    for column in ("train_loss", "val_loss", "precision_mean", "recall_mean", "f1_mean", "macro_f1", "auroc_mean"):
        assert np.isfinite(log[column]).all(), column
    steps = read_steps(tiny_run)
    batches = len(pd.read_csv(load_config(tiny_run.config).data.path + "/studies.csv").query("split == 'train'")) // 16
    assert list(steps["step"]) == list(range(2 * batches)) and (steps["step_seconds"] > 0).all()
    assert steps["loss"].notna().all()


def test_config_and_safetensors_alone_rebuild_the_model_bit_identically(tiny_run, tmp_path):
    cfg, model = load_model(tiny_run.root)
    stored = load_file(str(tiny_run.weights))
    assert all(torch.equal(stored[k], v) for k, v in model.state_dict().items())
    save_weights(model, tmp_path / "again.safetensors", cfg.task.name)
    again = load_file(str(tmp_path / "again.safetensors"))
    assert stored.keys() == again.keys() and all(torch.equal(stored[k], again[k]) for k in stored)
    x, tab = torch.randn(2, 3, 64, 64), torch.rand(2, 3)
    with torch.no_grad():
        assert torch.equal(model(x, tab), load_model(tiny_run.root)[1](x, tab))


def test_best_weights_match_best_checkpoint(tiny_run):
    best = torch.load(tiny_run.best, map_location="cpu", weights_only=False)["state_dict"]
    weights = load_file(str(tiny_run.weights))
    assert all(torch.equal(best["model." + k], v) for k, v in weights.items())


def test_an_existing_run_is_never_overwritten(tiny_run, nih_cache):
    with pytest.raises(ChestaidError, match="already holds a finished run; start over with --force"):
        train(load_config(CONFIGS / "demo.yaml", TINY), nih_cache, tiny_run.root)


def test_sigkill_mid_epoch_then_resume_finishes(nih_cache, tmp_path):
    run = tmp_path / "killed"
    sets = [f"--set={s}" for s in ["data.image_size=64", "data.batch_size=8", "train.epochs=3",
                                   "train.checkpoint_every_n_steps=1"]]
    cmd = [sys.executable, "-m", "chestaid.apps.cli", "train", "--config", str(CONFIGS / "demo.yaml"),
           "--data", str(nih_cache), "--out", str(run), *sets]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    paths = RunPaths(run)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:  # kill in epoch 1, between two steps
        if paths.train_log.is_file() and len(pd.read_csv(paths.train_log)) >= 1 and len(read_steps(paths)) >= 12:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "training ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = torch.load(paths.last, map_location="cpu", weights_only=False)["global_step"]
    assert killed_at >= 1
    result = subprocess.run([sys.executable, "-m", "chestaid.apps.cli", "train", "--resume", str(run)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    log = pd.read_csv(paths.train_log)
    assert list(log["epoch"]) == [0, 1, 2]
    steps = read_steps(paths)  # one row per step, the steps redone after the kill recorded once
    assert list(steps["step"]) == list(range(len(steps))) and len(list(paths.logs.glob("version_*"))) == 2
    assert torch.load(paths.last, map_location="cpu", weights_only=False)["global_step"] > killed_at
    load_model(run)
    assert not list(run.rglob("*.tmp"))


def test_pneumonia_model_learns_on_tiny_synthetic_data(pneumonia_run):
    from sklearn.metrics import roc_auc_score

    from chestaid.data.cache import Cache
    from chestaid.inference.predictor import Predictor

    predictor = Predictor.load(pneumonia_run.root, raw=True)
    logits, _, rows = predictor.cache_outputs(Cache.open(predictor.cfg.data.path), "val")
    auroc = roc_auc_score(rows["Pneumonia"], logits[:, 0])
    assert auroc >= 0.8, f"validation ROC-AUC {auroc:.3f}; an untrained model scores about 0.6 here"
    assert np.nanmax(pd.read_csv(pneumonia_run.train_log)["auroc_mean"]) >= 0.8


def test_rank_zero_is_read_from_the_launchers_environment(monkeypatch):
    from chestaid.training.fit import is_global_zero

    for name in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"):
        monkeypatch.delenv(name, raising=False)
    assert is_global_zero()  # a plain process, or the launcher of a Lightning DDP run
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert is_global_zero()
    for name, value in (("LOCAL_RANK", "1"), ("NODE_RANK", "1"), ("RANK", "3")):  # Lightning's child, node 1, torchrun
        monkeypatch.setenv(name, value)
        assert not is_global_zero()
        monkeypatch.setenv(name, "0")


def test_loggers_follow_the_config(tmp_path):
    import importlib.util

    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    from chestaid.training.fit import _loggers

    paths = RunPaths(tmp_path)
    assert _loggers(load_config("demo", ["train.logger=none"]), paths) is False
    assert [type(x) for x in _loggers(load_config("demo"), paths)] == [CSVLogger]
    tensorboard = load_config("demo", ["train.logger=tensorboard"])
    if importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX"):
        assert [type(x) for x in _loggers(tensorboard, paths)] == [CSVLogger, TensorBoardLogger]
    else:
        with pytest.raises(ChestaidError, match="pip install tensorboard"):
            _loggers(tensorboard, paths)
