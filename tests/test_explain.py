"""Grad-CAM maps and localisation scoring against NIH-format boxes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from chestaid.apps.cli import app
from chestaid.core.errors import ChestaidError
from chestaid.explain.gradcam import CamExplainer, overlay, uncrop
from chestaid.evaluation.localisation import box_scale, frame_warnings, score_pair
from chestaid.inference.predictor import Predictor


def test_maps_for_every_finding_of_both_models(tiny_run, pneumonia_run):
    for run in (tiny_run.root, pneumonia_run.root):
        predictor = Predictor.load(run)
        explainer = CamExplainer(predictor)
        size = predictor.image_size
        images = np.random.default_rng(0).integers(0, 255, (3, size, size), dtype=np.uint8)
        maps = explainer.maps(images, np.full((3, 3), 0.5, np.float32), [0, predictor.task.num_outputs - 1, 0])
        assert maps.shape == (3, size, size) and maps.min() >= 0 and maps.max() <= 1 + 1e-6
    with pytest.raises(ChestaidError, match="unknown target layer"):
        CamExplainer(Predictor.load(tiny_run.root), ["no.such.layer"])


def test_every_method_gives_a_map_through_the_default_targets(tiny_run):
    """Each `explain --method` runs through the explainer's hooks (gradients start at the first target layer)."""
    from chestaid.explain.gradcam import METHODS

    predictor = Predictor.load(tiny_run.root)
    size = predictor.image_size
    images = np.random.default_rng(4).integers(0, 255, (2, size, size), dtype=np.uint8)
    for method in METHODS:
        maps = CamExplainer(predictor, method=method).maps(images, np.full((2, 3), 0.5, np.float32), [1, 5])
        assert maps.shape == (2, size, size) and np.isfinite(maps).all(), method
        assert maps.min() >= 0 and maps.max() <= 1 + 1e-6, method
    with pytest.raises(ChestaidError, match="unknown CAM method"):
        CamExplainer(predictor, method="scorecam")


def test_maps_through_frozen_blocks(tiny_run, nih_root):
    """Seed 003 freezes the early blocks; the default NIH targets (the stride-4 and stride-8 transitions) lie
    inside the first three groups."""
    from chestaid.data.images import read_grey, resize_square
    from chestaid.models.backbone import freeze_blocks

    predictor = Predictor.load(tiny_run.root)
    files = sorted((nih_root / "images_001" / "images").glob("*.png"))[:8]
    grey = [resize_square(read_grey(f), predictor.image_size) for f in files]
    images = np.stack([g for g in grey for _ in range(14)])  # every finding of 8 images: a barely trained model's
    tabular, findings = np.full((len(images), 3), 0.5, np.float32), list(range(14)) * 8  # maps are often all 0
    before = CamExplainer(predictor).maps(images, tabular, findings)
    assert CamExplainer(predictor).layers == ["backbone.features.transition1.conv",
                                              "backbone.features.transition2.conv"]
    freeze_blocks(predictor.model.backbone, 3)
    after = CamExplainer(predictor).maps(images, tabular, findings)
    assert before.max() > 0 and np.allclose(before, after, atol=1e-5)


def test_default_cam_layers_follow_the_input_size(tiny_run, pneumonia_run):
    """The two deepest transitions whose maps are still 8×8 or larger: the pair chosen at 64 px (transition1+2)
    scored 0.31 on family B's test boxes at 128 px, where transition2+3 scored 0.48 (docs/localisation.md)."""
    from chestaid.explain.gradcam import default_target_layers

    model, t = Predictor.load(tiny_run.root).model, "backbone.features.transition{}.conv"
    assert default_target_layers(model, 64) == [t.format(1), t.format(2)]
    assert default_target_layers(model, 96) == [t.format(1), t.format(2)]
    assert default_target_layers(model, 128) == [t.format(2), t.format(3)]
    assert default_target_layers(model, 224) == [t.format(2), t.format(3)]
    assert default_target_layers(model, 32) == [t.format(1), t.format(2)]
    assert default_target_layers(Predictor.load(pneumonia_run.root).model, 224) == ["backbone.features.norm5"]


def _hooks(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())


def test_scoring_between_maps_accumulates_nothing(tiny_run):
    """The page keeps one explainer for the server's life; /score must not feed its hooks (issue 14's leak)."""
    import gc

    import torch

    predictor = Predictor.load(tiny_run.root, backend="torch")
    explainer = CamExplainer(predictor)
    size = predictor.image_size
    image = np.random.default_rng(1).integers(0, 255, (1, size, size), dtype=np.uint8)
    tabular = np.full((1, 3), 0.5, np.float32)
    explainer.maps(image, tabular, [0])
    assert _hooks(predictor.model) == 0

    def tensors() -> int:
        gc.collect()
        return sum(isinstance(o, torch.Tensor) for o in gc.get_objects())

    before = tensors()
    for _ in range(300):
        predictor.score_arrays(image, tabular)
    assert _hooks(predictor.model) == 0 and tensors() - before < 10
    assert not any(p.requires_grad or p.grad is not None for p in predictor.model.parameters())


def test_concurrent_maps_keep_their_own_patient_vector(tiny_run):
    from concurrent.futures import ThreadPoolExecutor

    predictor = Predictor.load(tiny_run.root)
    explainer = CamExplainer(predictor)
    size = predictor.image_size
    image = np.random.default_rng(2).integers(0, 255, (1, size, size), dtype=np.uint8)
    vectors = [np.array([[age, sex, 0.0]], np.float32) for age, sex in ((0.1, 0.0), (0.9, 1.0), (0.5, 0.5))] * 3
    alone = [explainer.maps(image, v, [3])[0] for v in vectors]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda v: explainer.maps(image, v, [3])[0], vectors))
    for a, b in zip(alone, together):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_uncrop_places_the_map_in_the_centre():
    out = uncrop(np.ones((7, 7)), 100, 0.9)
    assert out[:5].sum() == 0 and out[:, :5].sum() == 0 and out[50, 50] == pytest.approx(1.0)
    assert out.sum() == pytest.approx(90 * 90, rel=0.01)


def test_overlay_alpha():
    grey = np.full((8, 8), 100, np.uint8)
    cam = np.zeros((8, 8))
    assert np.all(overlay(grey, cam, 0.0) == 100)
    assert not np.all(overlay(grey, cam, 0.7) == 100)


def test_pointing_game_and_iobb_by_hand():
    import pandas as pd

    cam = np.zeros((100, 100))
    cam[20:30, 20:30] = 1.0  # the thresholded map is this 10×10 square
    cam[25, 25] = 1.5
    boxes = pd.DataFrame({"x": [15.0, 60.0], "y": [15.0, 60.0], "w": [10.0, 20.0], "h": [10.0, 20.0]})
    rows = score_pair("a.png", "Mass", cam / 1.5, boxes, (1.0, 1.0), threshold=0.5, size=100)
    assert all(r["pointing_hit"] is False for r in rows)  # max at (25, 25) is outside both boxes
    assert rows[0]["iobb"] == pytest.approx(25 / 100) and rows[1]["iobb"] == 0.0
    # the same boxes on an image of 2/3 the size: box 0 becomes [22.5, 37.5]², holding the maximum (25, 25)
    # and pixels 22..37 of the mask's 20..29: 8 × 8 of its 100
    rows = score_pair("a.png", "Mass", cam / 1.5, boxes, (1.5, 1.5), threshold=0.5, size=100)
    assert rows[0]["pointing_hit"] is True and rows[0]["iobb"] == pytest.approx(64 / 100)
    # box 1 becomes [90, 120]², beyond the 100-pixel square: marked outside (left out of the scores)
    assert [r["outside"] for r in rows] == [False, True]
    cam[95, 95] = 2.0  # a maximum in the visible corner of box 1 does not count as a hit: the box is left out
    rows = score_pair("a.png", "Mass", cam / 2.0, boxes.iloc[[1]], (1.5, 1.5), threshold=0.5, size=100)
    assert rows[0]["outside"] and rows[0]["pointing_hit"] is False


def test_boxes_scale_from_the_nih_frame_to_each_image():
    """NIH boxes are in the 1024 frame; a 256-pixel copy scored at 64 pixels scales them by 1/16 whatever its
    size, and by the image's own size when they are in its pixels (box_frame None)."""
    assert box_scale((256, 256), 64, 1024) == (1 / 16, 1 / 16)
    assert box_scale((1024, 1024), 64, 1024) == (1 / 16, 1 / 16)
    assert box_scale((256, 200), 64, None) == (64 / 200, 64 / 256)


def test_frame_warnings_name_what_was_left_out():
    import pandas as pd

    rows = pd.DataFrame({"outside": [True] + [False] * 12, "x1": [0.3] * 13, "y1": [0.4] * 13})
    warnings = frame_warnings(rows, 64, 1024)
    assert "1 of 13 boxes fall outside" in warnings[0] and "1024-pixel frame" in warnings[0]
    assert "top-left quarter" in warnings[1]
    assert frame_warnings(rows.assign(outside=False, x1=0.9), 64, 1024) == []


def test_explain_command_writes_the_localisation_table(tiny_run, nih_root, tmp_path):
    import shutil

    run = tmp_path / "run"
    run.mkdir()
    for f in (tiny_run.config, tiny_run.weights):
        shutil.copy(f, run / f.name)
    result = CliRunner().invoke(app, ["explain", str(run), "--data", str(nih_root), "--split", "all"])
    assert result.exit_code == 0, result.output
    data = json.loads((run / "explain" / "localisation.json").read_text())
    assert data["findings"][-1]["finding"] == "mean"
    for row in data["findings"]:
        assert 0 <= row["pointing_game"] <= 1 and row["iobb>0.5"] <= row["iobb>0.25"] <= row["iobb>0.1"]
    assert (run / "explain" / "localisation_examples.png").stat().st_size > 10_000
    assert data["box_frame"] == 1024 and data["boxes_outside"] == 0 and "warning" not in result.output
    # the same 1024-frame boxes read as the 64-pixel PNGs' own pixels fall outside: a clear refusal, not zeros
    result = CliRunner().invoke(app, ["explain", str(run), "--data", str(nih_root), "--split", "all",
                                      "--box-frame", "0"])
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]  # one line, status 2
    assert result.exit_code == 2 and len(errors) == 1 and "no box falls inside its image" in errors[0], result.output
