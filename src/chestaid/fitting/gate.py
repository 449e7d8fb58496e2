"""Fitting the input gate's out-of-distribution statistics (chestaid.inference.gate) on a run's own images.

Fitted at the end of `train`; refitted by `calibrate` when it is missing or was fitted from other weights (a
copied or retrained run), and always with a local cohort (on the training split and the cohort's calib part,
the threshold from the cohort's val_report part); so by `demo` too. Never on test data.
"""

from __future__ import annotations

import numpy as np

from chestaid.core.errors import ChestaidError
from chestaid.data.cache import Cache
from chestaid.core.fileio import sha256_of
from chestaid.inference.gate import DEFAULT_PERCENTILE, DistanceGate
from chestaid.inference.predictor import Predictor
from chestaid.core.run_paths import RunPaths

MAX_FIT_IMAGES = 5000  # per split: enough for a 256/1024-dimensional shrinkage covariance, minutes on a CPU
MIN_HELD_OUT = 20  # fewer held-out cohort images cannot place a 99th-percentile threshold


def current_gate(paths: RunPaths) -> DistanceGate | None:
    """The run's gate when it was fitted (on its own training data) from the weights the run has now."""
    path = paths.gate
    if not path.is_file():
        return None
    gate = DistanceGate.load(path)
    same_weights = gate.info.get("weights_sha256") == sha256_of(paths.weights)
    return gate if same_weights and "cohort" not in gate.info.get("fit_split", "") else None


def fit_gate(paths: RunPaths, predictor: Predictor, cache: Cache, percentile: float = DEFAULT_PERCENTILE,
             local: tuple[np.ndarray, np.ndarray] | None = None, val: np.ndarray | None = None) -> DistanceGate:
    """Fit on the cache's train split (≤ MAX_FIT_IMAGES, evenly spaced), threshold at `percentile` of its val
    split's distances (`val`: those features when already computed); `local` = (fit, threshold) features of a
    local cohort, which replace val for the threshold and join the fit. Saves RUN/gate.safetensors."""
    _, train, _ = predictor.cache_outputs(cache, "train", limit=MAX_FIT_IMAGES)
    info = {"fitted_on": cache.root.name, "fit_split": "train", "weights_sha256": sha256_of(paths.weights)}
    if local is not None and len(local[1]) < MIN_HELD_OUT:
        info["note"] = f"local cohort too small ({len(local[1])} held-out images): fitted on the training data"
        local = None
    if local is None:
        held_out = val if val is not None else predictor.cache_outputs(cache, "val", limit=MAX_FIT_IMAGES)[1]
        info["threshold_split"] = "val"
    else:
        train, held_out = np.concatenate([train, local[0]]), local[1]
        info.update(fit_split="train + local cohort (calib part)", threshold_split="local cohort (val_report part)")
    gate = DistanceGate.fit(train, held_out, percentile, info)
    gate.save(paths.gate)
    return gate


def images_needed(percentile: float) -> int:
    """Held-out images a conformal threshold at `percentile` needs to promise its refusal rate: ceil(p/(1−p))."""
    p = percentile / 100
    return int(np.ceil(p / (1 - p) - 1e-9))


def fit_gate_on_images(paths: RunPaths, features: np.ndarray, source: str, percentile: float = DEFAULT_PERCENTILE,
                       seed: int = 0) -> DistanceGate:
    """A gate from a hospital's own unlabelled images (a run with no training data of its own, e.g. imported
    weights): a random half fits the mean and covariance, the other half sets the conformal threshold. Refused
    when that half is too small to promise the rate (images_needed). Saves RUN/gate.safetensors."""
    needed = images_needed(percentile)
    if len(features) < 2 * needed:
        lower = next((p for p in (95.0, 90.0, 80.0) if p < percentile and len(features) >= 2 * images_needed(p)), None)
        raise ChestaidError(f"{source}: {len(features)} usable images; a {percentile:g}th-percentile gate needs at "
                            f"least {2 * needed} (half fit it, {needed} set its threshold)"
                            + (f"; give more images, or --percentile {lower:g}" if lower else "; give more images"))
    order = np.random.default_rng(seed).permutation(len(features))
    held, fit = order[:len(order) // 2], order[len(order) // 2:]
    info = {"fitted_on": source, "fit_split": "local images (unlabelled; random half)",
            "threshold_split": "local images (the other half)", "seed": seed,
            "weights_sha256": sha256_of(paths.weights)}
    gate = DistanceGate.fit(features[fit], features[held], percentile, info)
    gate.save(paths.gate)
    return gate


def fit_gate_on_cohort(paths: RunPaths, fit: np.ndarray, held_out: np.ndarray, source: str,
                       percentile: float = DEFAULT_PERCENTILE) -> DistanceGate | None:
    """The gate of a run without training data from its calibration cohort: fitted on the calib part, its
    threshold from the val_report part; None (and no gate file) when that part cannot promise the rate."""
    if len(held_out) < images_needed(percentile) or len(fit) < 10:
        paths.gate.unlink(missing_ok=True)
        return None
    gate = DistanceGate.fit(fit, held_out, percentile, {
        "fitted_on": source, "fit_split": "local cohort (calib part)",
        "threshold_split": "local cohort (val_report part)", "weights_sha256": sha256_of(paths.weights)})
    gate.save(paths.gate)
    return gate
