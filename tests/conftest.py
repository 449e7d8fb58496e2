"""Shared fixtures: tiny synthetic NIH and Kaggle folders (64 px) and runs trained on them, made once per test
command: under pytest-xdist (`scripts/test.sh` runs two workers) the first worker that needs one builds it under a
file lock and the others reuse it."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from chestaid.data.phantoms.synthetic import synth_nih, synth_pneumonia

REAL_NIH = Path(__file__).resolve().parents[1] / "src" / "chestaid" / "data" / "nih_metadata"


WORKER = os.environ.get("PYTEST_XDIST_WORKER")


def pytest_configure(config) -> None:
    """Each xdist worker computes on one thread, so two workers share the two cores without oversubscribing
    them (the CLI subprocesses the tests start inherit it)."""
    if WORKER:
        os.environ["OMP_NUM_THREADS"] = "1"
        import torch

        torch.set_num_threads(1)


def shared(tmp_path_factory, name: str, build: Callable[[Path], Path]) -> Path:
    """`build(folder)` once for the whole test command; returns what it returned. Without xdist, in a fresh
    folder of this session; with it, in a folder all workers share, the first one building while the others
    wait on the lock."""
    if not WORKER:
        return build(tmp_path_factory.mktemp(name))
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp().parent / "shared"
    root.mkdir(exist_ok=True)
    folder, done = root / name, root / f"{name}.done"
    with FileLock(str(root / f"{name}.lock")):
        if not done.is_file():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            done.write_text(str(build(folder)))
    return Path(done.read_text())


TRAINED_FIXTURES = {"tiny_run", "pneumonia_run"}  # and every fixture built on them (ungated_*, exported, ...)


def pytest_collection_modifyitems(config, items) -> None:
    """Tiers (`bash scripts/test.sh --fast` deselects `trains`, `peers` and `slow`): a test that needs a trained
    fixture, directly or through another fixture, is marked `trains` here; tests that train by themselves or
    start a real peer (Orthanc, DCMTK, R, the browser, a served page) carry their marker in their module."""
    for item in items:
        if TRAINED_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.trains)


@pytest.fixture(autouse=True)
def _grad_cam_auto_is_fp32(request, monkeypatch):
    """Grad-CAM's `precision="auto"` measures fp32 against bf16 on CPUs with bf16 and may keep either, so two
    explainers in one test could differ by up to BF16_MAP_TOLERANCE; tests that compare maps need one precision.
    Tests marked `cam_auto` (the test of the measurement) keep the real choice."""
    if request.node.get_closest_marker("cam_auto"):
        return
    from chestaid.explain import gradcam

    real = gradcam.resolve_cam_precision
    monkeypatch.setattr(gradcam, "resolve_cam_precision",
                        lambda precision, device: "fp32" if precision == "auto" else real(precision, device))


@pytest.fixture(scope="session")
def nih_root(tmp_path_factory) -> Path:
    return shared(tmp_path_factory, "nih",
                  lambda d: synth_nih(d / "nih", n=120, size=64, seed=3, per_folder=50, workers=2))


@pytest.fixture(scope="session")
def kaggle_root(tmp_path_factory) -> Path:
    return shared(tmp_path_factory, "kaggle",
                  lambda d: synth_pneumonia(d / "chest_xray", n=80, size=64, seed=5, workers=2))


@pytest.fixture(scope="session")
def real_csv() -> Path:
    return REAL_NIH / "Data_Entry_2017_v2020.csv.gz"


CONFIGS = Path(__file__).resolve().parents[1] / "src" / "chestaid" / "configs"
TINY = ["data.image_size=64", "data.batch_size=16", "train.epochs=2", "train.checkpoint_every_n_steps=2"]


@pytest.fixture(scope="session")
def nih_cache(nih_root, tmp_path_factory) -> Path:
    from chestaid.data.cache import prepare

    def build(folder: Path) -> Path:
        prepare(nih_root, folder / "nih64", size=64, workers=2, fractions=(0.6, 0.2, 0.2))
        return folder / "nih64"

    return shared(tmp_path_factory, "cache", build)


@pytest.fixture(scope="session")
def tiny_run(nih_cache, tmp_path_factory):
    """A 2-epoch NIH run at 64 px: mechanics only, it has not learned much."""
    from chestaid.core.config import load_config
    from chestaid.core.run_paths import RunPaths
    from chestaid.workflows.train import train

    def build(folder: Path) -> Path:
        train(load_config(CONFIGS / "demo.yaml", TINY), nih_cache, folder / "tiny")
        return folder / "tiny"

    return RunPaths(shared(tmp_path_factory, "runs", build))


@pytest.fixture(scope="session")
def pneumonia_run(tmp_path_factory):
    """A pneumonia run on 400 synthetic images at 64 px that has learned (validation ROC-AUC ≈ 0.9)."""
    from chestaid.core.config import load_config
    from chestaid.data.cache import prepare
    from chestaid.core.run_paths import RunPaths
    from chestaid.workflows.train import train

    def build(tmp: Path) -> Path:
        root = synth_pneumonia(tmp / "kaggle", n=400, size=64, seed=11, workers=2)
        prepare(root, tmp / "cache", size=64, workers=2, fractions=(0.6, 0.25, 0.15))
        train(load_config(CONFIGS / "demo_pneumonia.yaml", ["data.image_size=64", "train.epochs=6"]),
              tmp / "cache", tmp / "run")
        return tmp / "run"

    return RunPaths(shared(tmp_path_factory, "pneumonia", build))


def _without_gate(paths, tmp_path_factory, name: str):
    """A copy of a run without its input gate: for tests of mechanics that any image must reach (ranking,
    heat maps, the page), so that a phantom near the gate's threshold cannot make them flaky."""
    from chestaid.core.run_paths import RunPaths

    def build(folder: Path) -> Path:
        shutil.copytree(paths.root, folder / name, ignore=shutil.ignore_patterns("gate.safetensors", "checkpoints"))
        return folder / name

    return RunPaths(shared(tmp_path_factory, f"ungated_{name}", build))


@pytest.fixture(scope="session")
def ungated_run(tiny_run, tmp_path_factory):
    return _without_gate(tiny_run, tmp_path_factory, "tiny")


@pytest.fixture(scope="session")
def ungated_pneumonia_run(pneumonia_run, tmp_path_factory):
    return _without_gate(pneumonia_run, tmp_path_factory, "run")
