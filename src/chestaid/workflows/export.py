"""`chestaid export RUN`'s backend variants: written, checked against torch fp32 on the run's test split
(PARITY_BOUNDS) and recorded (inference.backends chooses among them)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from chestaid.core import machine
from chestaid.core.errors import ChestaidError
from chestaid.core.fileio import sha256_of
from chestaid.core.run_paths import RunPaths
from chestaid.inference.backends import (CALIBRATION_IMAGES, FORMAT, PARITY_BOUNDS, PARITY_LIMIT_IMAGES,
                                        VARIANTS, Network, _open_int8, _torch_network, cpu_support, int8_path,
                                        measure_speed, open_variant)

log = logging.getLogger(__name__)


def _batches(cache, rows, cfg, batch_size: int = 32) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Normalised images and patient vectors of cache rows, as the Predictor feeds its network."""
    from torch.utils.data import DataLoader

    from chestaid.data.augment import eval_transform
    from chestaid.data.dataset import CacheDataset

    loader = DataLoader(CacheDataset(cache, rows=rows), batch_size=batch_size, shuffle=False, num_workers=0)
    for images, tabular, _ in loader:
        x = eval_transform(images, cfg.data.image_size, cfg.data.augment.crop)
        yield x.numpy(), tabular.numpy()


def _outputs(network: Network, batches: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    out = [network(x, t) for x, t in batches]
    return np.concatenate([o[0] for o in out]), np.concatenate([o[1] for o in out])


def _mean_auroc(y: np.ndarray, scores: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    values = [roc_auc_score(y[:, i], scores[:, i]) for i in range(y.shape[1]) if 0 < y[:, i].sum() < len(y)]
    return float(np.mean(values)) if values else None


def parity(reference: dict, got: dict, y: np.ndarray, labels: tuple[str, ...] | None = None) -> dict:
    """Figures of one variant against the fp32 reference (dicts of logits, risk, decisions, refused, distance);
    `worst_risk` says where the largest risk difference was: a steep calibrator (a small temperature) turns a
    small logit difference into a large risk difference, and that is the reason to see."""
    a_ref, a_got = _mean_auroc(y, reference["risk"]), _mean_auroc(y, got["risk"])
    image, finding = np.unravel_index(int(np.argmax(np.abs(got["risk"] - reference["risk"]))), got["risk"].shape)
    name = labels[finding] if labels and finding < len(labels) else str(finding)
    worst = (f"{name}: logit {reference['logits'][image, finding]:.3f} -> {got['logits'][image, finding]:.3f}, "
             f"risk {reference['risk'][image, finding]:.3f} -> {got['risk'][image, finding]:.3f}")
    figures = {
        "max_logit_difference": float(np.abs(got["logits"] - reference["logits"]).max()),
        "max_risk_difference": float(np.abs(got["risk"] - reference["risk"]).max()),
        "mean_auroc": a_got, "mean_auroc_reference": a_ref,
        "mean_auroc_difference": None if a_ref is None else abs(a_got - a_ref),
        "decisions_changed": float((got["decisions"] != reference["decisions"]).any(axis=1).mean()),
        "gate_verdicts_changed": None if reference["refused"] is None else
        float((got["refused"] != reference["refused"]).mean()),
        "max_gate_distance_relative_difference": None if reference["distance"] is None else
        float((np.abs(got["distance"] - reference["distance"]) / np.maximum(reference["distance"], 1e-6)).max()),
    }
    figures["worst_risk"] = worst
    over = [f"{key} {figures[key]:.4g} > {bound}" + (f" ({worst})" if key == "max_risk_difference" else "")
            for key, bound in PARITY_BOUNDS.items() if figures[key] is not None and figures[key] > bound]
    figures["passes"] = not over
    figures["why_not_used"] = ("exceeds the parity bounds: " + ", ".join(over)) if over else ""
    return figures


def export_backends(run: str | Path, data: str | Path | None = None) -> dict:
    """After model.onnx is written: write the OpenVINO int8 model (where this CPU has VNNI or AMX), check every
    variant against torch fp32 on the run's test split, time the usable ones on this CPU and record it all in
    RUN/backends/backends.json. Returns the record."""
    from chestaid.data.cache import Cache
    from chestaid.data.splits import stratified_group_split
    from chestaid.inference.calibration import Calibration
    from chestaid.inference.gate import DistanceGate
    from chestaid.inference.onnx_backend import onnx_status
    from chestaid.inference.thresholds import Thresholds
    from chestaid.models.weights import load_model

    paths = RunPaths(run)
    stale = onnx_status(run)
    if stale:
        raise ChestaidError(f"{run}: {stale}")
    cfg, model = load_model(run)
    model = model.eval().requires_grad_(False)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    labels = tuple(cfg.require_task().labels)
    record: dict = {"format": FORMAT, "weights_sha256": sha256_of(paths.weights), "image_size": cfg.data.image_size,
                    "exported_on": machine.describe(), "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
                    "bounds": PARITY_BOUNDS, "reference": "torch fp32", "variants": {}}
    recorded = json.loads(paths.calibration.read_text()).get("cohort_cache") if paths.calibration.is_file() else None
    local = recorded if recorded and (Path(recorded) / "meta.json").is_file() else None  # outside the run
    source = data or cfg.data.path or local  # imported weights: the local cohort they were calibrated on
    try:
        if source is None:
            raise ChestaidError("no data of its own (imported weights): give --data CACHE or calibrate --cohort first")
        cache = Cache.open(source)
    except Exception as e:  # noqa: BLE001 - a run copied without its cache still exports fp32
        cache, record["no_data"] = None, f"the run's cache cannot be opened ({e}): no parity check"
    if cache is not None and not (cache.table["split"] == "test").any():
        cache, record["no_data"] = None, "the run's cache has no test split: no parity check"
    int8 = int8_path(paths)
    int8.unlink(missing_ok=True)
    int8.with_suffix(".bin").unlink(missing_ok=True)
    written: dict[str, str] = {}
    if cache is not None and not cpu_support("openvino-int8"):
        val = cache.table[cache.table["split"] == "val"]
        calibration = Calibration.load(paths.calibration, labels) if paths.calibration.is_file() else None
        info = calibration.info if calibration else {}
        if info.get("split", "val") != "val":  # calibrated on a local cohort: int8 still takes the run's own
            info = {}                           # validation images (their calib half, as an uncalibrated run)
        fraction, seed = float(info.get("calib_fraction", 0.5)), int(info.get("seed", 0))
        if len(val) >= 4:
            parts = stratified_group_split(val["patient_id"].astype(str).to_numpy(),
                                           val[list(labels)].to_numpy(dtype=int), (fraction, 1 - fraction), seed)
            calib = val[parts == 0]
            if len(calib) > CALIBRATION_IMAGES:
                calib = calib.iloc[np.linspace(0, len(calib) - 1, CALIBRATION_IMAGES).round().astype(int)]
            from chestaid.inference.openvino_backend import quantize_int8

            quantize_int8(paths.onnx, _batches(cache, calib, cfg), int8)
            record["int8_calibration"] = {"split": "val", "part": "calib", "calib_fraction": fraction, "seed": seed,
                                          "images": int(len(calib))}
            written["openvino-int8"] = str(int8.relative_to(paths.root))
        else:
            record["int8_calibration"] = {"note": f"the run's cache has {len(val)} validation image(s), fewer than "
                                                  "the 4 int8 quantisation needs: int8 not written"}
    if cache is not None:
        test = cache.table[cache.table["split"] == "test"]
        if len(test) > PARITY_LIMIT_IMAGES:
            test = test.iloc[np.linspace(0, len(test) - 1, PARITY_LIMIT_IMAGES).round().astype(int)]
        batches = list(_batches(cache, test, cfg))
        y = test[list(labels)].to_numpy(dtype=int)
        calibration = Calibration.load(paths.calibration, labels) if paths.calibration.is_file() else \
            Calibration.identity(labels)
        thresholds = Thresholds.load(paths.thresholds) if paths.thresholds.is_file() else None
        gate = DistanceGate.load(paths.gate) if paths.gate.is_file() else None

        def summary(network: Network) -> dict:
            logits, features = _outputs(network, batches)
            risk = calibration(logits)
            decisions = thresholds.decide(risk, labels) if thresholds else risk >= 0.5
            distance = gate.distance(features) if gate is not None else None
            return {"logits": logits, "risk": risk, "decisions": np.asarray(decisions, bool), "distance": distance,
                    "refused": None if distance is None else distance > gate.threshold}

        reference = summary(_torch_network(model, cfg))
        record["parity_data"] = {"split": "test", "images": int(len(test)), "cache": str(cache.root),
                                 "calibrated": paths.calibration.is_file(), "thresholded": thresholds is not None,
                                 "gate": gate is not None}
    for name in VARIANTS:
        entry: dict = {"written": written.get(name, "model.onnx" if name != "torch" else "model.safetensors")}
        if name == "openvino-int8" and name not in written:
            entry = {"written": "", "passes": False,
                     "why_not_used": cpu_support(name) or record.get("no_data") or
                     record.get("int8_calibration", {}).get("note", "not written")}
        elif name == "torch":
            entry["passes"], entry["why_not_used"] = True, ""
        else:
            network, why = open_variant(run, name) if name != "openvino-int8" else _open_int8(int8)
            if why:
                entry.update(passes=False, why_not_used=why)
            elif cache is None:
                entry.update(passes=name in ("onnx", "openvino"), why_not_used="" if name in ("onnx", "openvino")
                             else record["no_data"])
            else:
                entry.update(parity(reference, summary(network), y, labels))
        record["variants"][name] = entry
    record["speed"] = {}
    speed = measure_speed(run, record, model, cfg)  # writes the record
    log.info("%s: backends %s; fastest here %s", run, speed["ms_per_image"], speed["chosen"])
    return record
