"""DDP on CPU as a user would run it: `chestaid train ... --set train.devices=2 --set train.strategy=ddp` with two
processes (gloo), killed with SIGKILL mid-run, resumed, evaluated; one run directory, and the validation ROC-AUC
of a one-process run with the same global batch within the noise measured by benchmarks/ddp_parity.py."""

from __future__ import annotations

import pytest

import os
import signal
import subprocess
import sys
import time

import pandas as pd
import torch

from chestaid.core.config import load_config
from chestaid.training.module import ChestModule
from chestaid.core.run_paths import RunPaths
from chestaid.models.weights import load_model
from chestaid.training.run_log import read_steps

pytestmark = pytest.mark.trains

# benchmarks/results/ddp_parity.json: best validation ROC-AUC, 3 seeds each, one process vs two
PARITY_TOLERANCE = 0.05


def test_two_processes_train_survive_sigkill_resume_and_evaluate(pneumonia_run, tmp_path):
    cache = load_config(pneumonia_run.config).data.path
    run, paths = tmp_path / "ddp", RunPaths(tmp_path / "ddp")
    sets = ["data.image_size=64", "train.epochs=6", "data.batch_size=16", "train.devices=2", "train.strategy=ddp",
            "train.checkpoint_every_n_steps=2"]  # the fixture's recipe and global batch (32), on two processes
    cli = [sys.executable, "-m", "chestaid.apps.cli"]
    proc = subprocess.Popen([*cli, "train", "--config", "demo_pneumonia", "--data", cache, "--out", str(run),
                             *[f"--set={s}" for s in sets]], cwd=tmp_path, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:  # kill both processes once epoch 1 is logged
        if paths.train_log.is_file() and len(pd.read_csv(paths.train_log)) >= 2:
            break
        time.sleep(0.2)
    assert proc.poll() is None, f"training ended before it could be killed: {proc.stderr.read()[-2000:]}"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = torch.load(paths.last, map_location="cpu", weights_only=False)["global_step"]

    resumed = subprocess.run([*cli, "train", "--resume", str(run)], cwd=tmp_path, capture_output=True, text=True,
                             timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Starting with 2 processes" in resumed.stderr + resumed.stdout
    assert resumed.stdout.count(f"run {run}:") == 1  # one process speaks
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp"]  # nothing written outside the run directory
    for path in (paths.config, paths.weights, paths.last, paths.best, paths.train_log, run / "model_card.md",
                 run / "gate.safetensors"):
        assert path.is_file(), path
    log = pd.read_csv(paths.train_log)
    assert list(log["epoch"]) == list(range(len(log))) and len(log) >= 3
    assert torch.load(paths.last, map_location="cpu", weights_only=False)["global_step"] > killed_at
    assert read_steps(paths)["step"].is_monotonic_increasing
    assert not list(run.rglob("*.tmp"))

    evaluated = subprocess.run([*cli, "evaluate", str(run)], cwd=tmp_path, capture_output=True, text=True,
                               timeout=600)
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    one_process = pd.read_csv(pneumonia_run.train_log)["auroc_mean"].max()
    assert abs(log["auroc_mean"].max() - one_process) <= PARITY_TOLERANCE, (log["auroc_mean"].max(), one_process)

    best = ChestModule.load_from_checkpoint(paths.best, map_location="cpu")  # the config is its hyperparameters
    _, model = load_model(run)
    assert all(torch.equal(best.model.state_dict()[k], v) for k, v in model.state_dict().items())
