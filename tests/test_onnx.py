"""ONNX Runtime scoring: `chestaid export`, parity with torch at the real input size, stale files ignored."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from chestaid.apps.cli import app
from chestaid.core.errors import ChestaidError
from chestaid.inference.predictor import Predictor
from chestaid.models.weights import load_model, save_weights


def _copy(run, tmp_path, image_size: int | None = None):
    target = tmp_path / "run"
    shutil.copytree(run, target, ignore=shutil.ignore_patterns("checkpoints", "model.onnx"))
    if image_size:  # DenseNet is fully convolutional: the same weights score 224 px inputs
        cfg = yaml.safe_load((target / "config.yaml").read_text())
        cfg["data"].update(image_size=image_size, cache_size=256)
        (target / "config.yaml").write_text(yaml.safe_dump(cfg))
    return target


def test_export_then_onnx_scores_equal_torch_at_224_px(tiny_run, tmp_path):
    run = _copy(tiny_run.root, tmp_path, image_size=224)
    result = CliRunner().invoke(app, ["export", str(run), "--onnx-only"])  # OpenVINO: tests/test_backends.py
    assert result.exit_code == 0, result.output
    assert (run / "model.onnx").is_file() and "224 px" in result.output
    torch_p, onnx_p, auto = (Predictor.load(run, backend=b) for b in ("torch", "onnx", "auto"))
    assert (torch_p.backend, onnx_p.backend, auto.backend) == ("torch", "onnx", "onnx")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 256, 256), dtype=np.uint8)
    tabular = rng.random((5, 3)).astype(np.float32)
    expected, risk, decisions = torch_p.score_arrays(images, tabular)
    got, risk_onnx, decisions_onnx = onnx_p.score_arrays(images, tabular)
    assert np.abs(got - expected).max() <= 1e-4
    np.testing.assert_allclose(risk_onnx, risk, atol=1e-5)
    np.testing.assert_array_equal(onnx_p.score_arrays(images[:1], tabular[:1])[0], got[:1])  # dynamic batch


def test_model_without_patient_fusion_exports(pneumonia_run, tmp_path):
    run = _copy(pneumonia_run.root, tmp_path)
    result = CliRunner().invoke(app, ["export", str(run)])  # with the OpenVINO variants: no tabular input
    assert result.exit_code == 0, result.output
    images = np.random.default_rng(1).integers(0, 256, (3, 64, 64), dtype=np.uint8)
    tabular = np.full((3, 3), 0.5, np.float32)
    expected = Predictor.load(run, backend="torch").score_arrays(images, tabular)[0]
    for backend in ("onnx", "openvino"):
        np.testing.assert_allclose(Predictor.load(run, backend=backend).score_arrays(images, tabular)[0], expected,
                                   atol=1e-4)


def test_a_stale_onnx_file_is_never_used(tiny_run, tmp_path):
    run = _copy(tiny_run.root, tmp_path)
    assert CliRunner().invoke(app, ["export", str(run), "--onnx-only"]).exit_code == 0
    cfg, model = load_model(run)
    for p in model.parameters():
        p.data.add_(0.01)
    save_weights(model, run / "model.safetensors", cfg.task.name)  # as after retraining
    auto = Predictor.load(run)
    assert auto.backend == "torch" and "other weights" in auto.backend_note
    with pytest.raises(ChestaidError, match="other weights"):
        Predictor.load(run, backend="onnx")
    with pytest.raises(ChestaidError, match="no model.onnx"):
        Predictor.load(_copy(tiny_run.root, tmp_path / "fresh"), backend="onnx")
