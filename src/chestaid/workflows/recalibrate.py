"""`chestaid calibrate RUN --cohort COHORT --out NEWRUN`: recalibration on local cases into a new run version.

The deployed run is never touched (its files stay byte-identical): NEWRUN gets a copy of its network, config,
manifest, input gate and card, then calibration, thresholds (and, where needed, the gate) are fitted on the
cohort there. NEWRUN's manifest records its parent (name, path, weights and calibration digests) and the cohort
(source, size, and for a node's store the dates its instances were received); its card says "recalibrated on N
local cases". A node restarted on NEWRUN records NEWRUN's identity with each result, so the two stay apart.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from chestaid.core.errors import ChestaidError
from chestaid.core.fileio import sha256_of, write_json
from chestaid.core.run_paths import RunPaths

KEPT = ("config", "weights", "manifest", "gate", "training_precision", "train_log", "onnx")  # RunPaths names


def recalibrate_into(run: str | Path, cohort: str | Path, out: str | Path, calibrate) -> dict:
    """Copy `run`'s model into the new run `out`, then `calibrate(out)` there; returns its result with
    `run` = out. `calibrate` is the calibration step (workflows.runs.calibrate_run with its options bound)."""
    from chestaid.workflows.verdicts import is_store, verdict_period

    parent, child = RunPaths(run).require(), RunPaths(out)
    if child.root.exists() and any(child.root.iterdir()):
        raise ChestaidError(f"{child.root}: already exists; --out names a new run folder")
    if child.root.resolve() == parent.root.resolve():
        raise ChestaidError("--out must be another folder than the run (the deployed run is never changed)")
    staging = child.root.with_name(f".{child.root.name}.recalibrating")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        for name in KEPT:
            source = getattr(parent, name)
            if source.is_file():
                shutil.copy2(source, getattr(RunPaths(staging), name))
        if child.root.is_dir():
            child.root.rmdir()
        staging.rename(child.root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    cohort_info = {"source": str(Path(cohort).resolve()),
                   **(verdict_period(cohort) if is_store(cohort) else {})}
    try:
        result = calibrate(child.root)
    except BaseException:
        shutil.rmtree(child.root, ignore_errors=True)  # no half-made version: a retry starts clean
        raise
    info = json.loads(child.calibration.read_text())
    cohort_info["images"] = int(info.get("calib_images", 0)) + int(info.get("val_report_images", 0))
    if info.get("cohort_cases"):  # a store's cases: by digest, never by image or patient
        import hashlib

        cohort_info["cases_digest"] = hashlib.sha256("\n".join(info["cohort_cases"]).encode()).hexdigest()
        cohort_info.update(info.get("cohort_dates") or {})
    lineage = {"parent_run": parent.root.resolve().name, "parent_path": str(parent.root.resolve()),
               "parent_weights_sha256": sha256_of(parent.weights),
               "parent_calibration_sha256": sha256_of(parent.calibration) if parent.calibration.is_file() else None,
               "cohort": cohort_info, "when": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if child.manifest.is_file():
        manifest = json.loads(child.manifest.read_text())
        manifest.setdefault("extra", {})["recalibrated"] = lineage
        write_json(child.manifest, manifest)
    from chestaid.reporting.model_card import write_model_card

    write_model_card(child.root)
    return {**result, "run": str(child.root), "recalibrated": lineage}
