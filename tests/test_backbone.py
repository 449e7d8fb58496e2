"""The backbone seam: `model.backbone: resnet18` is a run like any other — trained, calibrated,
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

SETS = {"model.backbone": "resnet18", "data.image_size": 64, "train.epochs": 2, "data.batch_size": 16}


@pytest.fixture(scope="module")
def second_run(nih_cache, tmp_path_factory) -> RunPaths:
    run = chestaid.train(nih_cache, tmp_path_factory.mktemp("backbone") / "resnet", CONFIGS / "demo.yaml", SETS)
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
    for name in BACKBONES:  # Grad-CAM's hooks fire on each backbone's targets (a stage becomes its last block)
        from chestaid.core.config import load_config
        from chestaid.inference.predictor import Predictor
        from chestaid.models.chestnet import build_model

        for task in ("nih", "pneumonia"):
            cfg = load_config(CONFIGS / "demo.yaml", [f"model.backbone={name}", "data.image_size=64",
                                                      "data.cache_size=64", f"task={task}"])
            predictor = Predictor(cfg, build_model(cfg.model, cfg.require_task().num_outputs))
            images = np.random.default_rng(0).integers(0, 256, (2, 64, 64), dtype=np.uint8)
            maps = predictor.explainer(precision="fp32").maps(images, np.full((2, 3), 0.5, np.float32), [0, 0])
            assert maps.shape == (2, 64, 64) and np.isfinite(maps).all(), (name, task)
    with pytest.raises(ChestaidError, match="unknown backbone 'resnet9'; choose one of densenet121"):
        backbone_spec("resnet9")
    with pytest.raises(ChestaidError, match="model.backbone"):
        chestaid.train("nowhere", "nowhere", CONFIGS / "demo.yaml", {"model.backbone": "resnet9"})


@pytest.mark.trains
def test_a_second_backbone_trains_evaluates_exports_explains_and_serves(second_run, nih_root):
    run = second_run.root
    assert "ResNet-18" in second_run.model_card.read_text()
    assert json.loads(second_run.calibration.read_text())
    summary = chestaid.evaluate(run)["summary"]
    assert summary["roc_auc_macro_ci_low"] <= summary["roc_auc_macro"] <= summary["roc_auc_macro_ci_high"]
    exported = CliRunner().invoke(app, ["export", str(run)])
    assert exported.exit_code == 0, exported.output
    variants = json.loads((second_run.backends / "backends.json").read_text())["variants"]
    assert variants["onnx"]["passes"] and variants["openvino"]["passes"]
    image = sorted((nih_root / "images_001" / "images").glob("*.png"))[0]
    for backend in ("torch", "onnx", "openvino"):
        result = chestaid.load(run, backend=backend).predict(image)
        assert len(result.risk) == 14 and result.gate_distance is not None
    predictor = chestaid.load(run, backend="torch")
    cam = predictor.predict(image).heatmap("Effusion")
    assert cam.shape == (predictor.image_size,) * 2 and np.isfinite(cam).all() and cam.max() <= 1 + 1e-6
    assert predictor.explainer().layers == ["backbone.layer1.1", "backbone.layer2.1"]  # the stages' last blocks
    from gradio_client import Client, handle_file

    port = free_port()
    with serving([sys.executable, "-m", "chestaid.apps.cli", "serve", str(run), "--port", str(port)], port) as url:
        answer = Client(url, verbose=False).predict(handle_file(str(image)), 60, "M", "PA", api_name="/score")
    assert len(answer["findings"]) == 14 and answer["run"] == "resnet"
