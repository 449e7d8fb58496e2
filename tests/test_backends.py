"""CPU backends chosen by measurement: variants written by `chestaid export`, parity on the test split, the choice
per CPU (re-measured on another), forced variants, the input gate's features from the same backend."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from chestaid.apps.cli import app
from chestaid.core import machine
from chestaid.core.errors import ChestaidError
from chestaid.core.run_paths import RunPaths
from chestaid.inference import backends
from chestaid.inference.predictor import Predictor
from chestaid.models.weights import load_model, save_weights


def _copy(run, target):
    shutil.copytree(run, target, ignore=shutil.ignore_patterns("checkpoints", "model.onnx", "backends"))
    return target


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
    run = _copy(tiny_run.root, tmp_path_factory.mktemp("backends") / "run")
    result = CliRunner().invoke(app, ["export", str(run)])
    assert result.exit_code == 0, result.output
    return run, result.output


def _record(run) -> dict:
    return json.loads((RunPaths(run).backends / "backends.json").read_text())


def test_export_records_parity_and_speed_per_variant_and_auto_takes_the_fastest(exported):
    run, output = exported
    record = _record(run)
    assert record["parity_data"]["split"] == "test" and record["exported_on"]["cpu_key"] == machine.cpu_key()
    variants = record["variants"]
    assert set(variants) == set(backends.VARIANTS)
    for name in ("onnx", "openvino"):
        assert variants[name]["passes"] and variants[name]["max_logit_difference"] < 1e-3
    for name, entry in variants.items():
        assert entry["passes"] or entry["why_not_used"], name  # a variant not used says why
        if "max_risk_difference" in entry:
            assert entry["passes"] == all(entry[k] is None or entry[k] <= b for k, b in backends.PARITY_BOUNDS.items())
    assert variants["openvino-bf16"]["passes"] or not machine.has("bf16") or variants["openvino-bf16"]["why_not_used"]
    speed = record["speed"][machine.cpu_key()]
    assert speed["machine"]["cpu_model"] == machine.cpu_model()
    assert set(speed["ms_per_image"]) == set(backends.usable(record))
    fastest = min(speed["ms_per_image"], key=speed["ms_per_image"].get)
    assert speed["chosen"] == fastest and Predictor.load(run).backend == fastest
    assert "ms" in output and "not used" in output or all(v["passes"] for v in variants.values())


def test_int8_is_calibrated_on_the_calib_part_of_validation_only(exported):
    record = _record(exported[0])
    if not machine.has("vnni"):
        assert "VNNI" in record["variants"]["openvino-int8"]["why_not_used"]
        return
    assert record["int8_calibration"]["split"] == "val" and record["int8_calibration"]["part"] == "calib"
    cfg, _ = load_model(exported[0])
    from chestaid.data.cache import Cache

    val = (Cache.open(cfg.data.path).table["split"] == "val").sum()
    assert 0 < record["int8_calibration"]["images"] < val


def test_every_usable_variant_scores_and_gates_like_torch(exported):
    run, _ = exported
    record = _record(run)
    reference = Predictor.load(run, backend="torch")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 64, 64), dtype=np.uint8)
    tabular = rng.random((4, 3)).astype(np.float32)
    names = [str(i) for i in range(4)]
    expected = reference.score_images(names, list(images), [None] * 4)
    for name in backends.usable(record):
        predictor = Predictor.load(run, backend=name)
        assert predictor.backend == name
        got = predictor.score_images(names, list(images), [None] * 4)
        risk = np.array([s.risk for s in got]) if hasattr(got[0], "risk") else None
        if risk is not None:
            assert np.abs(risk - np.array([s.risk for s in expected])).max() <= backends.PARITY_BOUNDS[
                "max_risk_difference"], name
        # the input gate's distances come from the same backend's features
        d_got, d_ref = np.array([s.distance for s in got]), np.array([s.distance for s in expected])
        assert np.allclose(d_got, d_ref, rtol=0.05), name
        assert predictor.score_arrays(images, tabular)[0].shape == (4, len(predictor.task.labels))


def test_a_cpu_not_recorded_is_measured_again_and_recorded(exported, monkeypatch, tmp_path):
    run = _copy(exported[0], tmp_path / "moved")
    shutil.copy(exported[0] / "model.onnx", run / "model.onnx")
    shutil.copytree(exported[0] / "backends", run / "backends")
    monkeypatch.setattr(machine, "cpu_key", lambda: "another-cpu")
    predictor = Predictor.load(run)
    record = _record(run)
    assert set(record["speed"]) == {_record(exported[0])["exported_on"]["cpu_key"], "another-cpu"}
    assert predictor.backend == record["speed"]["another-cpu"]["chosen"]


def test_a_cpu_without_bf16_or_vnni_gets_neither(tiny_run, monkeypatch, tmp_path):
    monkeypatch.setattr(machine, "has", lambda feature: feature in ("avx2",))
    run = _copy(tiny_run.root, tmp_path / "run")
    assert CliRunner().invoke(app, ["export", str(run)]).exit_code == 0
    variants = _record(run)["variants"]
    assert "AVX512-BF16" in variants["openvino-bf16"]["why_not_used"]
    assert "VNNI" in variants["openvino-int8"]["why_not_used"]
    assert not (RunPaths(run).backends / "int8.xml").exists()
    assert Predictor.load(run).backend in ("torch", "onnx", "openvino")
    with pytest.raises(ChestaidError, match="AVX512-BF16"):
        Predictor.load(run, backend="openvino-bf16")
    with pytest.raises(ChestaidError, match="int8"):
        Predictor.load(run, backend="openvino-int8")


def test_a_variant_over_the_parity_bounds_is_not_used_and_says_why(exported, monkeypatch):
    from chestaid.workflows.export import parity

    reference = {"logits": np.zeros((4, 2)), "risk": np.full((4, 2), 0.5), "decisions": np.zeros((4, 2), bool),
                 "distance": np.ones(4), "refused": np.zeros(4, bool)}
    got = {**reference, "risk": reference["risk"] + np.array([[0.03, 0], [0, 0], [0, 0], [0, 0]])}
    y = np.array([[0, 1], [1, 0], [0, 1], [1, 0]])
    figures = parity(reference, got, y, labels=("Effusion", "Mass"))
    assert not figures["passes"] and "max_risk_difference" in figures["why_not_used"]
    assert figures["worst_risk"] == "Effusion: logit 0.000 -> 0.000, risk 0.500 -> 0.530"  # where, and by how much
    assert "(Effusion: logit" in figures["why_not_used"]


def test_unknown_backend_and_stale_record(exported, tmp_path):
    with pytest.raises(ChestaidError, match="backend must be one of"):
        Predictor.load(exported[0], backend="tensorrt")
    run = _copy(exported[0], tmp_path / "stale")
    shutil.copytree(exported[0] / "backends", run / "backends")
    cfg, model = load_model(run)
    for p in model.parameters():
        p.data.add_(0.01)
    save_weights(model, run / "model.safetensors", cfg.task.name)  # retrained: the record is for other weights
    assert backends.read_record(RunPaths(run)) == {}
    assert Predictor.load(run).backend == "torch"


def test_predict_with_decode_workers_gives_the_same_worklist(ungated_run, nih_root, tmp_path):
    from chestaid.workflows.predict import predict_worklist

    tables = []
    for workers in (0, 2):
        out = tmp_path / f"w{workers}.csv"
        result = predict_worklist(ungated_run.root, [nih_root], out, batch_size=16, decode_workers=workers)
        assert result.scored > 16
        tables.append(out.read_text())
    assert tables[0] == tables[1]


@pytest.mark.cam_auto
def test_gradcam_in_bf16_keeps_the_argmax_and_stays_within_tolerance(tiny_run, tmp_path):
    import torch

    from chestaid.explain.gradcam import BF16_MAP_TOLERANCE, CamExplainer, resolve_cam_precision

    run = _copy(tiny_run.root, tmp_path / "run")
    cfg, model = load_model(run)
    torch.manual_seed(0)
    for module in model.modules():  # random weights: the 2-epoch model's maps are flat
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    save_weights(model, run / "model.safetensors", cfg.task.name)
    predictor = Predictor.load(run, backend="torch")
    images = np.random.default_rng(0).integers(0, 256, (2, 64, 64), dtype=np.uint8)
    tabular = np.full((2, 3), 0.5, np.float32)
    fp32, bf16 = (CamExplainer(predictor, precision=p).maps(images, tabular, [0, 1]) for p in ("fp32", "bf16"))
    assert fp32.max() > 0 and np.abs(fp32 - bf16).max() <= BF16_MAP_TOLERANCE
    for a, b in zip(fp32, bf16):  # the peak stays put (identical at 224 px in benchmarks/inference.py; at 64 px
        pa, pb = np.unravel_index(np.argmax(a), a.shape), np.unravel_index(np.argmax(b), b.shape)  # random
        assert max(abs(pa[0] - pb[0]), abs(pa[1] - pb[1])) <= 1                       # weights: a pixel at most)
    assert resolve_cam_precision("auto", predictor.device) == ("measure" if machine.has("bf16") else "fp32")
    with pytest.raises(ChestaidError, match="precision"):
        CamExplainer(predictor, precision="fp8")


@pytest.mark.cam_auto
def test_gradcam_precision_auto_is_measured_where_the_cpu_has_bf16_and_fp32_elsewhere(tiny_run, monkeypatch):
    from chestaid.explain.gradcam import CamExplainer

    predictor = Predictor.load(tiny_run.root, backend="torch")
    images = np.random.default_rng(1).integers(0, 256, (2, 64, 64), dtype=np.uint8)
    tabular = np.full((2, 3), 0.5, np.float32)
    if machine.has("bf16"):  # (bf16 is emulated, hundreds of times slower, on CPUs without: not timed there)
        explainer = CamExplainer(predictor)
        assert explainer.precision == "measure"
        maps = explainer.maps(images, tabular, [0, 1])
        assert explainer.precision in ("fp32", "bf16") and set(explainer.measured) == {"fp32", "bf16"}
        again = CamExplainer(predictor, precision=explainer.precision).maps(images, tabular, [0, 1])
        np.testing.assert_allclose(maps, again, atol=1e-5)  # the map of the precision it kept
    real_has = machine.has
    monkeypatch.setattr(machine, "has", lambda feature: feature != "bf16" and feature != "amx" and real_has(feature))
    explainer = CamExplainer(predictor)
    assert explainer.precision == "fp32"
    explainer.maps(images, tabular, [0, 1])
    assert explainer.precision == "fp32" and not explainer.measured
