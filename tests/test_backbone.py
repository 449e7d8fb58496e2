"""The backbone seam: `model.backbone: efficientnet_b0` is a run like any other — trained, calibrated,
evaluated, exported with parity, explained and served — and DenseNet-121 stays the default."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from serving import free_port, serving
from typer.testing import CliRunner

import chestaid
from chestaid.apps.cli import app
from chestaid.core.errors import ChestaidError
from chestaid.core.run_paths import RunPaths
from chestaid.models.backbone import BACKBONES, backbone_spec
from chestaid.models.chestnet import ChestNet
from conftest import CONFIGS

pytestmark = pytest.mark.trains
SETS = {"model.backbone": "efficientnet_b0", "data.image_size": 64, "train.epochs": 2, "data.batch_size": 16}


@pytest.fixture(scope="module")
def efficientnet_run(nih_cache, tmp_path_factory) -> RunPaths:
    run = chestaid.train(nih_cache, tmp_path_factory.mktemp("backbone") / "effnet", CONFIGS / "demo.yaml", SETS)
    chestaid.calibrate(run)
    return RunPaths(run)


def test_every_backbone_builds_its_fpn_gate_and_freeze_groups():
    for name, spec in BACKBONES.items():
        for fpn in (True, False):
            model = ChestNet(num_outputs=3, fpn=fpn, freeze=2, backbone=name).eval()
            with torch.no_grad():
                _, gate = model.embed(torch.zeros(2, 3, 64, 64))
                assert gate.shape == (2, spec.gate_features), name
                assert model(torch.zeros(2, 3, 64, 64), torch.zeros(2, 3)).shape == (2, 3)
            frozen = {id(p) for m in model._frozen for p in m.parameters()}
            assert frozen and all(not p.requires_grad for p in model.parameters() if id(p) in frozen)
            modules = dict(model.named_modules())
            for binary in (True, False):
                assert all(layer in modules for layer in spec.cam_layers(64, binary)), (name, binary)
    with pytest.raises(ChestaidError, match="unknown backbone 'resnet9'; choose one of densenet121"):
        backbone_spec("resnet9")
    with pytest.raises(ChestaidError, match="model.backbone"):
        chestaid.train("nowhere", "nowhere", CONFIGS / "demo.yaml", {"model.backbone": "resnet9"})


def test_a_second_backbone_trains_evaluates_exports_explains_and_serves(efficientnet_run, nih_root):
    run = efficientnet_run.root
    assert "EfficientNet-B0" in efficientnet_run.model_card.read_text()
    assert json.loads(efficientnet_run.calibration.read_text())
    summary = chestaid.evaluate(run)["summary"]
    assert 0 <= summary["auroc_mean"] <= 1
    exported = CliRunner().invoke(app, ["export", str(run)])
    assert exported.exit_code == 0, exported.output
    variants = json.loads((efficientnet_run.backends / "backends.json").read_text())["variants"]
    assert variants["onnx"]["passes"] and variants["openvino"]["passes"]
    image = sorted((nih_root / "images_001" / "images").glob("*.png"))[0]
    for backend in ("torch", "onnx", "openvino"):
        result = chestaid.load(run, backend=backend).predict(image)
        assert len(result.risk) == 14 and result.gate_distance is not None
    predictor = chestaid.load(run, backend="torch")
    cam = predictor.predict(image).heatmap("Effusion")
    assert cam.shape == (predictor.image_size,) * 2 and np.isfinite(cam).all() and cam.max() <= 1 + 1e-6
    assert predictor.explainer().layers == ["backbone.features.3", "backbone.features.5"]
    from gradio_client import Client, handle_file

    port = free_port()
    with serving([sys.executable, "-m", "chestaid.apps.cli", "serve", str(run), "--port", str(port)], port) as url:
        answer = Client(url, verbose=False).predict(handle_file(str(image)), 60, "M", "PA", api_name="/score")
    assert len(answer["findings"]) == 14 and answer["run"] == "effnet"
