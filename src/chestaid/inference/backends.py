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
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from chestaid.core import machine
from chestaid.core.errors import ChestaidError
from chestaid.core.fileio import sha256_of, write_json
from chestaid.core.run_paths import RunPaths
from chestaid.data.sources import neutral_patients

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
                note = record.get("int8_calibration", {}).get("note") or record.get("no_data")
                return None, (f"no int8 model in the run: the last export wrote none ({note})" if note else
                              "no int8 model in the run (chestaid export RUN on a CPU with VNNI or AMX)")
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
           cfg=None, threads: int | None = None) -> tuple[Network | None, str, str]:
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
        network, why = open_variant(run, backend, threads)
        if why:
            raise ChestaidError(f"{run}: cannot score with {backend}: {why}")
        failed = read_record(paths).get("variants", {}).get(backend, {}).get("why_not_used", "")
        if failed:
            log.warning("%s: %s forced although it is not used by auto: %s", run, backend, failed)
        return network, backend, ""
    record = read_record(paths)
    if not record:
        network, why = open_variant(run, "onnx", threads)
        return (network, "onnx", "") if network is not None else (None, "torch", why)
    speed = record.get("speed", {}).get(machine.cpu_key())
    if speed is None and model is not None and cfg is not None:
        speed = measure_speed(run, record, model, cfg)
    ranked = sorted((ms, name) for name, ms in (speed or {}).get("ms_per_image", {}).items() if ms is not None)
    if not ranked:  # no speed recorded and none measured: the old rule
        network, why = open_variant(run, "onnx", threads)
        return (network, "onnx", "") if network is not None else (None, "torch", why)
    notes = []
    for _, name in ranked:
        network, why = open_variant(run, name, threads)
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
            else (torch.from_numpy(neutral_patients(len(x))) if use_tabular else None)
        head, features = model.embed(x)
        return model.classify(head, tab).float().numpy(), features.float().numpy()

    return run


def time_variant(network: Network | None, model: torch.nn.Module, cfg, budget_s: float = 1.0) -> float:
    """ms per image at batch 1 (None network: torch), on a fixed random input of the model's size."""
    size = cfg.data.image_size
    rng = np.random.default_rng(0)
    image = rng.standard_normal((1, 3, size, size)).astype(np.float32)
    tabular = neutral_patients(1)
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


def _open_int8(path: Path) -> tuple[Network | None, str]:
    from chestaid.inference.openvino_backend import OpenVinoNetwork

    try:
        return OpenVinoNetwork(path, "fp32"), ""
    except Exception as e:  # noqa: BLE001
        return None, f"OpenVINO cannot load it ({type(e).__name__}: {e})"
