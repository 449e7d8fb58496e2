"""What made a result: a run's identity, recorded with every instance the node scores and compared by the page.

Two results come from the same model when their weights, calibration and thresholds are the same files (by
SHA-256); the gate, the backend and chestaid's version are recorded beside them. The thresholds' values travel
with the identity, so a page can show a row's own thresholds even when it serves another run.
"""

from __future__ import annotations

from pathlib import Path

from chestaid.core.fileio import sha256_of
from chestaid.core.run_paths import RunPaths
from chestaid.core.version import __version__
from chestaid.inference.thresholds import Thresholds

SAME_MODEL = ("weights_sha256", "calibration_sha256", "thresholds_sha256")


def run_identity(run: str | Path, backend: str = "torch") -> dict:
    """{run, its folder, weights/calibration/thresholds/gate SHA-256 (None when the file is absent), chestaid version,
    backend, score ("calibrated risk score" or "uncalibrated score"), thresholds}."""
    paths = RunPaths(run)

    def digest(path: Path) -> str | None:
        return sha256_of(path) if path.is_file() else None

    thresholds = Thresholds.load(paths.thresholds).values if paths.thresholds.is_file() else None
    return {"run": paths.root.resolve().name, "path": str(paths.root.resolve()), "weights_sha256": digest(paths.weights),
            "calibration_sha256": digest(paths.calibration), "thresholds_sha256": digest(paths.thresholds),
            "gate_sha256": digest(paths.gate), "chestaid_version": __version__, "backend": backend,
            "score": "calibrated risk score" if paths.calibration.is_file() else "uncalibrated score",
            "thresholds": thresholds}


def same_model(a: dict | None, b: dict | None) -> bool:
    """Whether two identities name the same weights, calibration and thresholds (False when one is unknown)."""
    return bool(a) and bool(b) and all(a.get(k) == b.get(k) for k in SAME_MODEL)


def describe_model(identity: dict | None) -> str:
    """One line for a person: run name and the first digits of its weights, or "model not recorded"."""
    if not identity:
        return "model not recorded"
    return f"{identity.get('run')} (weights {str(identity.get('weights_sha256'))[:12]})"
