"""Interrupt anywhere: a tiny training stopped by SIGINT, SIGTERM or kill -9 at many moments (during an epoch,
during validation, between the two checkpoint writes of an epoch, right after an epoch's row, after the
weights export, before the gate and the card) is always finished by `chestaid train --resume`, with the whole
epoch table and exactly one last.ckpt and one best.ckpt; the same `train` command on such a folder says in one
line how to resume or start over."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import chestaid
from chestaid.core.errors import ChestaidError
from chestaid.core.run_paths import RunPaths
from conftest import CONFIGS

pytestmark = pytest.mark.trains
HERE = Path(__file__).parent
SETS = ["data.image_size=64", "data.batch_size=16", "train.epochs=2", "train.precision=32-true"]  # fp32 as
# chosen: no precision measurement in each of the many starts
# (where, the Nth time it happens, signal, checkpoint every N steps): with 5 training and 2 validation batches an
# epoch and step checkpoints every 2 steps, checkpoint writes 1-2 are epoch 0's step checkpoints, 3 its best.ckpt
# (its last.ckpt not yet written), 4 that last.ckpt; without step checkpoints, write 1 is epoch 0's best.ckpt,
# the only checkpoint there is (the Ctrl-C between the two writes)
MOMENTS = [("batch", 1, "SIGKILL", 2), ("batch", 4, "SIGINT", 2), ("ckpt", 1, "SIGTERM", 2),
           ("ckpt", 3, "SIGKILL", 2), ("ckpt", 1, "SIGKILL", 0), ("ckpt", 4, "SIGTERM", 2), ("val", 2, "SIGKILL", 2),
           ("val", 3, "SIGINT", 2), ("weights", 1, "SIGKILL", 2), ("gate", 1, "SIGTERM", 2), ("card", 1, "SIGKILL", 2)]


@pytest.mark.parametrize("kind, n, sig, steps", MOMENTS, ids=[f"{k}{n}-{s}-every{e}" for k, n, s, e in MOMENTS])
def test_interrupted_training_always_resumes_to_completion(kind, n, sig, steps, nih_cache, tmp_path):
    run = tmp_path / "run"
    sets = [*SETS, f"train.checkpoint_every_n_steps={steps}"]
    args = ["train", "--config", str(CONFIGS / "demo.yaml"), "--data", str(nih_cache), "--out", str(run),
            *(f"--set={s}" for s in sets)]
    stopped = subprocess.run([sys.executable, str(HERE / "interrupted_train.py"), kind, str(n), sig, "--", "chestaid",
                              *args], capture_output=True, text=True, timeout=600)
    assert stopped.returncode != 0, f"the training was not interrupted: {stopped.stderr[-1500:]}"
    assert "Traceback" not in stopped.stderr, stopped.stderr[-3000:]
    if sig == "SIGINT" or (sig == "SIGTERM" and kind in ("batch", "val", "ckpt")):  # Lightning's and ours: one line
        assert f"chestaid train --resume {run}" in stopped.stderr, stopped.stderr[-1500:]
    paths = RunPaths(run)
    assert paths.config.is_file()
    before = pd.read_csv(paths.train_log) if paths.train_log.is_file() else pd.DataFrame()
    with pytest.raises(ChestaidError, match=r"--resume .*--force|--force.*--resume") as said:
        chestaid.train(nih_cache, run, CONFIGS / "demo.yaml", dict(s.split("=") for s in sets))
    assert "\n" not in str(said.value)
    resumed = subprocess.run([sys.executable, "-m", "chestaid.apps.cli", "train", "--resume", str(run)],
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = pd.read_csv(paths.train_log)
    assert list(after["epoch"]) == [0, 1]
    if kind == "ckpt" and len(before):  # stopped after a checkpoint: the resume continues from it, no epoch redone
        pd.testing.assert_frame_equal(after.head(len(before)), before)
    assert sorted(p.name for p in paths.checkpoints.iterdir()) == ["best.ckpt", "last.ckpt"]
    assert paths.weights.is_file() and paths.model_card.is_file() and paths.manifest.is_file()
    assert not list(run.rglob("*.tmp"))
    chestaid.load(run).predict(__import__("numpy").zeros((64, 64), "uint8"))


def test_force_starts_over_removing_only_what_train_wrote(nih_cache, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    (run / "config.yaml").write_text("{}\n")
    with pytest.raises(ChestaidError, match="not written by chestaid train; --force clears only"):  # not a run
        chestaid.train(nih_cache, run, CONFIGS / "demo.yaml", {"train.epochs": 1}, force=True)
    (run / "training_precision.json").write_text("{}\n")  # with the config: what train writes first
    with pytest.raises(ChestaidError, match="interrupted run.*--resume.*--force"):
        chestaid.train(nih_cache, run, CONFIGS / "demo.yaml", {"train.epochs": 1})
    with pytest.raises(ChestaidError, match="nothere"):  # a bad --data with --force removes nothing
        chestaid.train(run / "nothere", run, CONFIGS / "demo.yaml", {"train.epochs": 1}, force=True)
    assert (run / "training_precision.json").is_file()
    chestaid.train(nih_cache, run, CONFIGS / "demo.yaml", {"train.epochs": 1, "data.image_size": 64,
                                                         "train.precision": "32-true"}, force=True)
    assert (run / "notes.txt").read_text() == "mine" and RunPaths(run).model_card.is_file()
    with pytest.raises(ChestaidError, match="finished run.*--force"):
        chestaid.train(nih_cache, run, CONFIGS / "demo.yaml", {"train.epochs": 1})
