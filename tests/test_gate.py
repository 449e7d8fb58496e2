"""The input gate: DICOM tag checks, the out-of-distribution distance fitted with every run, and every path
that scores (Predictor, `predict`, `evaluate`, the API and the page)."""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from typer.testing import CliRunner

from chestaid.apps.cli import app
from chestaid.core.run_paths import RunPaths as _RunPaths
from chestaid.inference.gate import DistanceGate, tag_refusal

GATE_NAME = _RunPaths(".").gate.name
from chestaid.inference.predictor import Predictor
from chestaid.models.weights import load_model, save_weights


def _tags(**values) -> Dataset:
    ds = Dataset()
    for key, value in values.items():
        setattr(ds, key, value)
    return ds


def test_tag_checks_name_the_tag_and_missing_tags_never_refuse():
    assert tag_refusal(_tags()) == ""
    assert tag_refusal(_tags(Modality="CR", BodyPartExamined="CHEST", ViewPosition="PA")) == ""
    assert tag_refusal(_tags(Modality="DX", ViewPosition="AP")) == ""
    assert "Modality is CT" in tag_refusal(_tags(Modality="CT", BodyPartExamined="CHEST"))
    assert "BodyPartExamined is HAND" in tag_refusal(_tags(Modality="DX", BodyPartExamined="HAND"))
    for view in ("LL", "RL", "LATERAL", "LLD"):
        assert f"ViewPosition is {view}" in tag_refusal(_tags(Modality="CR", ViewPosition=view))
    assert tag_refusal(_tags(Modality="MG"), modalities=("CR", "DX", "MG")) == ""


def test_distance_gate_fit_save_load(tmp_path):
    rng = np.random.default_rng(0)
    train, val = rng.normal(size=(400, 16)), rng.normal(size=(200, 16))
    gate = DistanceGate.fit(train, val, percentile=95)
    assert np.mean(gate.distance(val) > gate.threshold) == pytest.approx(0.05, abs=0.011)
    assert (gate.distance(rng.normal(3, 1, size=(50, 16))) > gate.threshold).all()
    gate.save(tmp_path / "g.safetensors")
    again = DistanceGate.load(tmp_path / "g.safetensors")
    assert again.threshold == gate.threshold and again.info == gate.info
    np.testing.assert_array_equal(again.distance(val), gate.distance(val))
    assert gate.refusal(gate.threshold + 1).startswith("unlike the training images: distance")


@pytest.fixture(scope="module")
def outsiders(tmp_path_factory):
    """A photograph, noise and a flat grey image: nothing like a chest X-ray."""
    from skimage import data

    folder = tmp_path_factory.mktemp("outsiders")
    Image.fromarray(data.camera()).save(folder / "photo.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (256, 256), dtype=np.uint8)).save(folder / "noise.png")
    Image.fromarray(np.full((256, 256), 128, np.uint8)).save(folder / "grey.png")
    return folder


def test_train_fits_the_gate_and_predict_keeps_refused_images_out_of_the_ranking(tiny_run, nih_root, outsiders,
                                                                                  tmp_path):
    assert (tiny_run.root / GATE_NAME).is_file()
    good = sorted((nih_root / "images_001" / "images").glob("*.png"))[:4]
    out = tmp_path / "worklist.csv"
    result = CliRunner().invoke(app, ["predict", str(tiny_run.root), str(outsiders), *map(str, good),
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    refused = pd.read_csv(tmp_path / "worklist_refused.csv")
    assert {p.split("/")[-1] for p in refused["file"]} >= {"photo.png", "noise.png", "grey.png"}
    assert refused["reason"].str.startswith("unlike the training images: distance").all()
    table = pd.read_csv(out)
    assert not table["file"].str.contains("outsiders").any() and "refused:" in result.output
    assert len(table) + len(refused) == 7 and (table["gate_distance"] <= refused["gate_distance"].min()).all()


def test_a_run_without_a_gate_says_so(ungated_run, outsiders, tmp_path):
    assert Predictor.load(ungated_run.root).gate is None
    result = CliRunner().invoke(app, ["predict", str(ungated_run.root), str(outsiders / "noise.png"),
                                      "--out", str(tmp_path / "w.csv")])
    assert result.exit_code == 0 and "no input gate" in result.output
    assert len(pd.read_csv(tmp_path / "w.csv")) == 1


def test_calibrate_refits_the_gate_and_evaluate_counts_refusals(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run.root, run, ignore=shutil.ignore_patterns("checkpoints", GATE_NAME))
    assert CliRunner().invoke(app, ["calibrate", str(run)]).exit_code == 0
    gate = DistanceGate.load(run / GATE_NAME)
    assert gate.info["fit_split"] == "train" and gate.info["threshold_split"] == "val"
    fitted = (run / GATE_NAME).stat().st_mtime_ns
    assert CliRunner().invoke(app, ["calibrate", str(run)]).exit_code == 0
    assert (run / GATE_NAME).stat().st_mtime_ns == fitted  # current: not fitted again
    cfg, model = load_model(run)
    model.head[-1].bias.data += 0.1  # as after retraining: the gate belongs to other weights now
    save_weights(model, run / "model.safetensors", cfg.task.name)
    assert CliRunner().invoke(app, ["calibrate", str(run)]).exit_code == 0
    assert DistanceGate.load(run / GATE_NAME).info["weights_sha256"] != gate.info["weights_sha256"]
    assert CliRunner().invoke(app, ["evaluate", str(run)]).exit_code == 0
    counted = json.loads((run / "metrics" / "test_metrics.json").read_text())["input_gate"]
    assert counted["fitted"] and 0 <= counted["refused"] <= counted["images"] > 0
    assert "input gate" in (run / "report.html").read_text()


def test_api_returns_the_refusal_as_data_and_scores_anyway_when_asked(tiny_run, outsiders):
    from gradio_client import Client, handle_file
    from serving import free_port, serving

    port = free_port()
    command = [sys.executable, "-m", "chestaid.apps.cli", "serve", str(tiny_run.root), "--port", str(port)]
    with serving(command, port) as url:
        client = Client(url, verbose=False)
        photo = handle_file(str(outsiders / "photo.png"))
        refused = client.predict(photo, None, "unknown", "unknown", api_name="/score")
        assert refused["refused"].startswith("unlike the training images") and "findings" not in refused
        assert refused["gate"]["passed"] is False and refused["gate"]["distance"] > refused["gate"]["threshold"]
        anyway = client.predict(photo, None, "unknown", "unknown", True, api_name="/score")
        assert anyway["outside_gate"] is True and len(anyway["findings"]) == 14


def test_the_gate_threshold_is_the_conformal_quantile_and_says_when_n_is_too_small():
    from chestaid.inference.gate import conformal_threshold

    rng = np.random.default_rng(0)
    few = rng.normal(size=12)
    threshold, note = conformal_threshold(few, 99.0)
    assert threshold == few.max() and "only 12 validation images" in note and "7.7%" in note
    # n = 199: the ceil(200 * 0.95) = 190th smallest, not numpy's interpolated 95th percentile
    val = rng.normal(size=199)
    threshold, note = conformal_threshold(val, 95.0)
    assert note == "" and threshold == np.sort(val)[189] and threshold > np.percentile(val, 95)
    # what it promises: images like the validation ones are refused at most 1 - p of the time, on average
    refused = [np.mean(rng.normal(size=2000) > conformal_threshold(rng.normal(size=40), 95.0)[0])
               for _ in range(300)]
    assert np.mean(refused) <= 0.05 + 0.01
