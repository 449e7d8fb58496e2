"""Which engine computes a run's logits, chosen by measurement on the CPU it runs on.

Variants: torch (fp32), onnx (ONNX Runtime fp32), openvino (fp32), openvino-bf16 (only on CPUs with AVX512-BF16
or AMX) and openvino-int8 (NNCF post-training quantisation calibrated on the run's calib part of validation,
never test; only on CPUs with VNNI or AMX). `chestaid export RUN` writes the variants, checks each against torch
fp32 on the run's test split (PARITY_BOUNDS: max risk-score difference, test mean AUROC difference, share of
decisions and of input-gate verdicts changed), and records in RUN/backends/backends.json the parity figures,
why a variant is not used, and the ms/image at batch 1 of each usable variant on this CPU (keyed by
chestaid.core.machine.cpu_key). `auto` takes the fastest variant recorded for this CPU; on a CPU not recorded
it measures the speed again (the parity figures stay those of export) and records it. Nothing is switched on
because a flag says it might pay: on AVX2-only CPUs bf16 was ~450x slower than fp32.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from chestaid.core import machine
from chestaid.core.errors import ChestaidError
from chestaid.core.fileio import sha256_of, write_json
from chestaid.core.run_paths import RunPaths

log = logging.getLogger(__name__)

VARIANTS = ("torch", "onnx", "openvino", "openvino-bf16", "openvino-int8")
CHOICES = ("auto", *VARIANTS)
PARITY_BOUNDS = {"max_risk_difference": 0.02, "mean_auroc_difference": 0.003, "decisions_changed": 0.01,
                 "gate_verdicts_changed": 0.01}
FORMAT = 1
PARITY_LIMIT_IMAGES = 2000  # an evenly spaced subset of a larger test split
CALIBRATION_IMAGES = 300

Network = Callable[[np.ndarray, np.ndarray | None], tuple[np.ndarray, np.ndarray]]


def record_path(paths: RunPaths) -> Path:
    return paths.backends / "backends.json"


def int8_path(paths: RunPaths) -> Path:
    return paths.backends / "int8.xml"  # + int8.bin


def cpu_support(name: str) -> str:
    """"" when this CPU runs `name` natively; else why not (reduced precision is never emulated)."""
    if name == "openvino-bf16" and not machine.has("bf16"):
        return "this CPU has neither AVX512-BF16 nor AMX"
    if name == "openvino-int8" and not machine.has("vnni"):
        return "this CPU has neither VNNI nor AMX"
    if name.startswith("openvino"):
        try:
            import openvino  # noqa: F401
        except ImportError:
            return "openvino is not installed"
    return ""


def open_variant(run: str | Path, name: str, threads: int | None = None) -> tuple[Network | None, str]:
    """The network of variant `name` ("torch": None, scored by the Predictor's model), or (None, why not)."""
    from chestaid.inference.onnx_backend import onnx_status, open_onnx

    paths = RunPaths(run)
    if name == "torch":
        return None, ""
    if name == "onnx":
        return open_onnx(run, threads)
    why = cpu_support(name) or onnx_status(run)
    if why:
        return None, why
    from chestaid.inference.openvino_backend import OpenVinoNetwork

    try:
        if name == "openvino-int8":
            record = read_record(paths)
            if int8_path(paths).is_file() and not record.get("variants", {}).get(name, {}).get("written"):
                return None, "the int8 model is not from the current export (run chestaid export again)"
            if not int8_path(paths).is_file():
                return None, "no int8 model in the run (chestaid export RUN on a CPU with VNNI or AMX)"
            return OpenVinoNetwork(int8_path(paths), "fp32", threads), ""
        return OpenVinoNetwork(paths.onnx, "bf16" if name == "openvino-bf16" else "fp32", threads), ""
    except Exception as e:  # noqa: BLE001 - a broken runtime must not stop scoring with torch
        return None, f"OpenVINO cannot load it ({type(e).__name__}: {e})"


def read_record(paths: RunPaths) -> dict:
    """RUN/backends/backends.json when it belongs to the current weights, else {}."""
    import json

    path = record_path(paths)
    if not path.is_file():
        return {}
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if record.get("format") != FORMAT or record.get("weights_sha256") != sha256_of(paths.weights):
        return {}
    return record


def select(run: str | Path, backend: str, device: str, model: torch.nn.Module | None = None,
           cfg=None) -> tuple[Network | None, str, str]:
    """(network or None for torch, the variant's name, a note on the choice). A forced variant that cannot be
    used raises ChestaidError; `auto` falls back to what can (ONNX Runtime, then torch) and says why."""
    if backend not in CHOICES:
        raise ChestaidError(f"backend must be one of {', '.join(CHOICES)}, got {backend!r}")
    if device != "cpu":
        if backend not in ("auto", "torch"):
            raise ChestaidError(f"{run}: backend {backend} runs on the CPU only (device {device})")
        return None, "torch", "ONNX Runtime and OpenVINO are used on the CPU only"
    paths = RunPaths(run)
    if backend != "auto":
        network, why = open_variant(run, backend)
        if why:
            raise ChestaidError(f"{run}: cannot score with {backend}: {why}")
        failed = read_record(paths).get("variants", {}).get(backend, {}).get("why_not_used", "")
        if failed:
            log.warning("%s: %s forced although it is not used by auto: %s", run, backend, failed)
        return network, backend, ""
    record = read_record(paths)
    if not record:
        network, why = open_variant(run, "onnx")
        return (network, "onnx", "") if network is not None else (None, "torch", why)
    speed = record.get("speed", {}).get(machine.cpu_key())
    if speed is None and model is not None and cfg is not None:
        speed = measure_speed(run, record, model, cfg)
    ranked = sorted((ms, name) for name, ms in (speed or {}).get("ms_per_image", {}).items() if ms is not None)
    if not ranked:  # no speed recorded and none measured: the old rule
        network, why = open_variant(run, "onnx")
        return (network, "onnx", "") if network is not None else (None, "torch", why)
    notes = []
    for _, name in ranked:
        network, why = open_variant(run, name)
        if not why:
            return network, name, "; ".join(notes)
        notes.append(f"{name}: {why}")
    return None, "torch", "; ".join(notes)


def usable(record: dict) -> list[str]:
    """The variants that passed parity at export and that this CPU runs natively."""
    return [n for n in VARIANTS if record.get("variants", {}).get(n, {}).get("passes") and not cpu_support(n)]


def measure_speed(run: str | Path, record: dict, model: torch.nn.Module, cfg) -> dict:
    """Measure ms/image at batch 1 of the usable variants on this CPU and record it in RUN/backends.json
    (a run directory that cannot be written keeps the figures in memory only)."""
    paths = RunPaths(run)
    ms, notes = {}, {}
    for name in usable(record):
        network, why = open_variant(run, name)
        if why:
            notes[name] = why
            continue
        ms[name] = round(time_variant(network, model, cfg), 2)
    speed = {"machine": machine.describe(), "when": time.strftime("%Y-%m-%dT%H:%M:%S"), "batch": 1,
             "ms_per_image": ms, "not_measured": notes,
             "chosen": min(ms, key=ms.get) if ms else None}
    record.setdefault("speed", {})[machine.cpu_key()] = speed
    try:
        write_json(record_path(paths), record)
    except OSError as e:
        log.warning("%s: cannot record the backends measured on this CPU (%s)", run, e)
    log.info("%s: backends measured on %s: %s", run, machine.cpu_model(), ms)
    return speed


def _torch_network(model: torch.nn.Module, cfg) -> Network:
    channels_last = bool(cfg.train.channels_last)
    use_tabular = bool(cfg.model.tabular)

    @torch.inference_mode()
    def run(image: np.ndarray, tabular: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        x = torch.from_numpy(np.ascontiguousarray(image, np.float32))
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        tab = torch.from_numpy(np.ascontiguousarray(tabular, np.float32)) if use_tabular and tabular is not None \
            else (torch.full((len(x), 3), 0.5) if use_tabular else None)
        head, features = model.embed(x)
        return model.classify(head, tab).float().numpy(), features.float().numpy()

    return run


def time_variant(network: Network | None, model: torch.nn.Module, cfg, budget_s: float = 1.0) -> float:
    """ms per image at batch 1 (None network: torch), on a fixed random input of the model's size."""
    size = cfg.data.image_size
    rng = np.random.default_rng(0)
    image = rng.standard_normal((1, 3, size, size)).astype(np.float32)
    tabular = np.full((1, 3), 0.5, np.float32)
    fn = network or _torch_network(model.eval(), cfg)
    for _ in range(2):
        fn(image, tabular)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < 3 or (time.perf_counter() - start < budget_s and len(times) < 50):
        t = time.perf_counter()
        fn(image, tabular)
        times.append(time.perf_counter() - t)
    return float(np.median(times)) * 1000


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


def parity(reference: dict, got: dict, y: np.ndarray) -> dict:
    """Figures of one variant against the fp32 reference (dicts of logits, risk, decisions, refused, distance)."""
    a_ref, a_got = _mean_auroc(y, reference["risk"]), _mean_auroc(y, got["risk"])
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
    over = [f"{key} {figures[key]:.4g} > {bound}" for key, bound in PARITY_BOUNDS.items()
            if figures[key] is not None and figures[key] > bound]
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
    try:
        cache = Cache.open(data or cfg.data.path)
    except Exception as e:  # noqa: BLE001 - a run copied without its cache still exports fp32
        cache, record["no_data"] = None, f"the run's cache cannot be opened ({type(e).__name__}): no parity check"
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
        fraction, seed = float(info.get("calib_fraction", 0.5)), int(info.get("seed", 0))
        if len(val) >= 4 and info.get("split", "val") == "val":
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
            record["int8_calibration"] = {"note": "no calib part of the run's validation split: int8 not written"}
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
                entry.update(parity(reference, summary(network), y))
        record["variants"][name] = entry
    record["speed"] = {}
    speed = measure_speed(run, record, model, cfg)  # writes the record
    log.info("%s: backends %s; fastest here %s", run, speed["ms_per_image"], speed["chosen"])
    return record


def _open_int8(path: Path) -> tuple[Network | None, str]:
    from chestaid.inference.openvino_backend import OpenVinoNetwork

    try:
        return OpenVinoNetwork(path, "fp32"), ""
    except Exception as e:  # noqa: BLE001
        return None, f"OpenVINO cannot load it ({type(e).__name__}: {e})"
