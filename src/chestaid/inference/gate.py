"""The input gate: refuse what is not a frontal chest X-ray like the training images, with a one-line reason.

Two checks, both before an image may take a place in a worklist or show a score:
1. DICOM tags (`tag_refusal`): Modality must be one of the accepted ones (CR, DX by default); BodyPartExamined,
   when present, must name the chest; ViewPosition, when present, must not be lateral or decubitus. A missing
   tag never refuses on its own.
2. Out of distribution (`DistanceGate`): the Mahalanobis distance of the image's pooled final backbone features
   (1024-d, CheXNet's penultimate layer, as in Wollek et al., Med Phys 2024) from the training split's, with a
   Ledoit–Wolf shrinkage covariance, must not exceed a threshold set at a high percentile of the validation
   split's distances. No outlier data is used to fit it. Saved as RUN/gate.safetensors (arrays + JSON
   metadata; no pickle). The FPN model's head features (256-d, projected) were tried first and refused only
   72% of the out-of-distribution corpus (benchmarks/input_gate.py; notes of issue 12).

The gate supports triage safety; it is not a guarantee: an image can pass it and still be unlike anything the
model learned, and the threshold accepts by construction about (100 − percentile)% of validation images less.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from chestaid.core.errors import ChestaidError
from chestaid.core.refusals import GATE_REASON, Refusal
from chestaid.core.fileio import atomic_write

ACCEPTED_MODALITIES = ("CR", "DX")
CHEST_PARTS = {"CHEST", "THORAX", "LUNG", "LUNGS"}
LATERAL_VIEWS = {"LL", "RL", "LAT", "LATERAL", "LLD", "RLD", "LEFT LATERAL", "RIGHT LATERAL", "XTABLE",
                 "LATERAL DECUBITUS", "DECUBITUS"}
log = logging.getLogger(__name__)
DEFAULT_PERCENTILE = 99.0


def tag_refusal(ds, modalities: tuple[str, ...] = ACCEPTED_MODALITIES) -> str:
    """"" when the tags allow a frontal chest X-ray, else the reason naming the tag (ds: a pydicom header)."""
    modality = str(ds.get("Modality", "") or "").strip().upper()
    if modality and modality not in modalities:
        return f"DICOM Modality is {modality}, not {' or '.join(modalities)} (a radiograph)"
    part = str(ds.get("BodyPartExamined", "") or "").strip().upper()
    if part and part not in CHEST_PARTS:
        return f"DICOM BodyPartExamined is {part}, not CHEST"
    view = str(ds.get("ViewPosition", "") or "").strip().upper()
    if view in LATERAL_VIEWS:
        return f"DICOM ViewPosition is {view}: a lateral view, not a frontal (PA/AP) one"
    return ""


def conformal_threshold(distances: np.ndarray, percentile: float) -> tuple[float, str]:
    """The split-conformal threshold: the ceil((n+1)·p)-th smallest of n validation distances, so that a new
    image like them is refused with probability at most 1 − p (a plain percentile of a small n refuses more).
    When n is too small for p, the largest distance, and a note naming n and the refusal rate it implies."""
    d = np.sort(np.asarray(distances, dtype=np.float64))
    n, p = len(d), percentile / 100
    k = int(np.ceil((n + 1) * p))
    if k <= n:
        return float(d[k - 1]), ""
    note = (f"only {n} validation images: a {percentile:g}th-percentile threshold needs at least "
            f"{int(np.ceil(p / (1 - p)))}; the threshold is the largest validation distance, which refuses up to "
            f"{1 / (n + 1):.1%} of images like the validation images")
    log.warning("input gate: %s", note)
    return float(d[-1]), note


# The covariance's smallest eigenvalue, relative to the features' mean square: (1e-3 × their RMS)². Below it (a
# backbone whose pooled features barely vary, e.g. EfficientNet-B0 after a short run from random weights) the
# precision would turn float rounding (1e-7 relative, the difference between two exact backends) into distances
# of hundreds; DenseNet-121's covariances have stayed far above it, so their gates are as before.
VARIANCE_FLOOR = 1e-6


@dataclass
class DistanceGate:
    """Mahalanobis distance from the training features; refuse above `threshold`."""

    mean: np.ndarray
    precision: np.ndarray
    threshold: float
    info: dict = field(default_factory=dict)

    @classmethod
    def fit(cls, train: np.ndarray, val: np.ndarray, percentile: float = DEFAULT_PERCENTILE,
            info: dict | None = None) -> "DistanceGate":
        """Mean and Ledoit–Wolf covariance on `train` features; threshold at `percentile` of `val` distances."""
        from sklearn.covariance import LedoitWolf

        if len(train) < 10 or len(val) < 10:
            raise ChestaidError(f"too few images to fit the input gate ({len(train)} train, {len(val)} val)")
        estimate = LedoitWolf().fit(train.astype(np.float64))
        precision, floor = estimate.precision_, VARIANCE_FLOOR * float(np.mean(np.square(train, dtype=np.float64)))
        if np.linalg.eigvalsh(estimate.covariance_).min() < floor:  # features (nearly) constant in training: a
            precision = np.linalg.inv(estimate.covariance_ + floor * np.eye(train.shape[1]))  # backend's rounding
        else:                                                # noise would otherwise read as a large distance
            floor = 0.0
        gate = cls(estimate.location_.astype(np.float32), precision.astype(np.float32), 0.0)
        distances = gate.distance(val)
        gate.threshold, note = conformal_threshold(distances, percentile)
        gate.info = {"method": "Mahalanobis distance of pooled final backbone features, Ledoit-Wolf covariance",
                     "threshold_rule": "conformal: the ceil((n+1)p)-th smallest validation distance",
                     **({"note": note} if note else {}),
                     "percentile": percentile, "train_images": int(len(train)), "val_images": int(len(val)),
                     "shrinkage": float(estimate.shrinkage_), "features": int(train.shape[1]),
                     **({"variance_floor": floor} if floor else {}),
                     "val_distance_median": float(np.median(distances)), **(info or {})}
        return gate

    def distance(self, features: np.ndarray) -> np.ndarray:
        features = np.asarray(features, np.float32)
        if features.ndim != 2 or features.shape[1] != len(self.mean):
            raise ChestaidError(f"the input gate was fitted on {len(self.mean)} features, the model gives "
                                f"{features.shape[-1]}: refit it (chestaid calibrate RUN)")
        centred = features - self.mean
        squared = np.einsum("ij,jk,ik->i", centred, self.precision, centred)
        return np.sqrt(np.maximum(squared, 0.0))

    def refusal(self, distance: float) -> str:
        if distance > self.threshold:
            return f"{GATE_REASON}: distance {distance:.1f} over threshold {self.threshold:.1f}"
        return ""

    def save(self, path: str | Path) -> None:
        import torch
        from safetensors.torch import save

        data = save({"mean": torch.from_numpy(self.mean), "precision": torch.from_numpy(self.precision)},
                    metadata={"threshold": repr(self.threshold), "info": json.dumps(self.info)})
        atomic_write(path, lambda f: f.write(data))

    @classmethod
    def load(cls, path: str | Path) -> "DistanceGate":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="numpy") as f:
                meta = f.metadata()
                return cls(f.get_tensor("mean"), f.get_tensor("precision"), float(meta["threshold"]),
                           json.loads(meta["info"]))
        except Exception as e:  # noqa: BLE001 - a damaged file is a user-fixable problem
            raise ChestaidError(f"{path}: not a readable input gate ({type(e).__name__}); run chestaid calibrate "
                                "RUN to refit it") from e


def tag_kind(ds) -> Refusal:
    """What a refusal by `ds`'s tags is: VIEW when the header names the chest (or is a lateral view with no body
    part), so that the image is another part of a chest study this model does not read; else HEADER."""
    part = str(ds.get("BodyPartExamined", "") or "").strip().upper()
    view = str(ds.get("ViewPosition", "") or "").strip().upper()
    chest = part in CHEST_PARTS or (not part and view in LATERAL_VIEWS)
    return Refusal.VIEW if chest else Refusal.HEADER


def refusal_of(gate: "DistanceGate | None", header, distance: float | None) -> tuple[str, Refusal]:
    """(the reason, what refused it) for one image: its DICOM tags first (`header`, None when not DICOM), then the
    input gate; ("", NONE) when neither refuses it."""
    by_tags = tag_refusal(header) if header is not None else ""
    if by_tags:
        return by_tags, tag_kind(header)
    by_gate = "" if gate is None else gate.refusal(distance)
    return by_gate, Refusal.GATE if by_gate else Refusal.NONE
