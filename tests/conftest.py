"""Shared fixtures: tiny synthetic NIH and Kaggle folders (64 px) and runs trained on them, made once per test
session; under pytest-xdist (`pytest -n N`) by whichever worker asks first while the others wait for it (a file
lock, as pytest-xdist's documentation shows). On 2 cores `-n 2` was slower (16.5 vs 12.2 min: two workers of
two torch threads each oversubscribe the cores), so scripts/test.sh runs one process."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from filelock import FileLock

from chestaid.data.phantoms.synthetic import synth_nih, synth_pneumonia

REAL_NIH = Path(__file__).resolve().parents[1] / "src" / "chestaid" / "data" / "nih_metadata"


def once(tmp_path_factory, name: str, make: Callable[[Path], object]) -> Path:
    """`make(folder)` run once per test session, also across xdist workers; the folder it filled."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        folder = tmp_path_factory.mktemp(name, numbered=False)
        make(folder)
        return folder
    folder = tmp_path_factory.getbasetemp().parent / name  # the session's folder, above each worker's own
    with FileLock(f"{folder}.lock"):
        if not (folder / ".made").is_file():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            make(folder)
            (folder / ".made").touch()
    return folder


@pytest.fixture(scope="session")
def nih_root(tmp_path_factory) -> Path:
    return once(tmp_path_factory, "nih", lambda d: synth_nih(d / "nih", n=120, size=64, seed=3, per_folder=50,
                                                             workers=2)) / "nih"


@pytest.fixture(scope="session")
def kaggle_root(tmp_path_factory) -> Path:
    return once(tmp_path_factory, "kaggle",
                lambda d: synth_pneumonia(d / "chest_xray", n=80, size=64, seed=5, workers=2)) / "chest_xray"


@pytest.fixture(scope="session")
def real_csv() -> Path:
    return REAL_NIH / "Data_Entry_2017_v2020.csv.gz"


CONFIGS = Path(__file__).resolve().parents[1] / "src" / "chestaid" / "configs"
TINY = ["data.image_size=64", "data.batch_size=16", "train.epochs=2", "train.checkpoint_every_n_steps=2"]


@pytest.fixture(scope="session")
def nih_cache(nih_root, tmp_path_factory) -> Path:
    from chestaid.data.cache import prepare

    return once(tmp_path_factory, "cache",
                lambda d: prepare(nih_root, d / "nih64", size=64, workers=2, fractions=(0.6, 0.2, 0.2))) / "nih64"


@pytest.fixture(scope="session")
def tiny_run(nih_cache, tmp_path_factory):
    """A 2-epoch NIH run at 64 px: mechanics only, it has not learned much."""
    from chestaid.core.config import load_config
    from chestaid.core.run_paths import RunPaths
    from chestaid.workflows.train import train

    return RunPaths(once(tmp_path_factory, "runs",
                         lambda d: train(load_config(CONFIGS / "demo.yaml", TINY), nih_cache, d / "tiny")) / "tiny")


@pytest.fixture(scope="session")
def pneumonia_run(tmp_path_factory):
    """A pneumonia run on 400 synthetic images at 64 px that has learned (validation ROC-AUC ≈ 0.9)."""
    from chestaid.core.config import load_config
    from chestaid.data.cache import prepare
    from chestaid.core.run_paths import RunPaths
    from chestaid.workflows.train import train

    def make(tmp: Path) -> None:
        root = synth_pneumonia(tmp / "kaggle", n=400, size=64, seed=11, workers=2)
        prepare(root, tmp / "cache", size=64, workers=2, fractions=(0.6, 0.25, 0.15))
        train(load_config(CONFIGS / "demo_pneumonia.yaml", ["data.image_size=64", "train.epochs=6"]),
              tmp / "cache", tmp / "run")

    return RunPaths(once(tmp_path_factory, "pneumonia", make) / "run")


def _without_gate(paths, tmp_path_factory, name: str):
    """A copy of a run without its input gate: for tests of mechanics that any image must reach (ranking,
    heat maps, the page), so that a phantom near the gate's threshold cannot make them flaky."""
    from chestaid.core.run_paths import RunPaths

    folder = once(tmp_path_factory, f"ungated-{name}", lambda d: shutil.copytree(
        paths.root, d / name, ignore=shutil.ignore_patterns("gate.safetensors", "checkpoints")))
    return RunPaths(folder / name)


@pytest.fixture(scope="session")
def ungated_run(tiny_run, tmp_path_factory):
    return _without_gate(tiny_run, tmp_path_factory, "tiny")


@pytest.fixture(scope="session")
def ungated_pneumonia_run(pneumonia_run, tmp_path_factory):
    return _without_gate(pneumonia_run, tmp_path_factory, "run")
