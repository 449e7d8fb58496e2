"""`chestaid gate fit RUN --images DIR`: the input gate fitted on a hospital's own unlabelled images, for a run
that has no training data of its own (imported weights) or should refuse what is unlike the local images."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from chestaid.core.run_paths import RunPaths
from chestaid.fitting.gate import fit_gate_on_images
from chestaid.inference.gate import DEFAULT_PERCENTILE, DistanceGate
from chestaid.inference.predictor import Predictor
from chestaid.reporting.model_card import write_model_card
from chestaid.workflows.predict import collect_inputs


@dataclass
class GateFit:
    """The gate, how many images it was fitted on, and (file, reason) for each image passed over."""

    gate: DistanceGate
    images: int
    passed_over: list[tuple[str, str]]


def fit_gate_from_images(run: str | Path, images: list[str | Path], percentile: float = DEFAULT_PERCENTILE,
                         seed: int = 0) -> GateFit:
    """Fit RUN/gate.safetensors on the frontal chest images found in `images` (files or folders); files that do
    not decode, or whose DICOM tags say they are not a frontal chest radiograph, are passed over and listed."""
    paths = RunPaths(run).require()
    predictor = Predictor.load(run, raw=True, backend="torch")
    files, passed = collect_inputs(images)
    features, kept, refused = predictor.gate_features([f.path for f in files])
    source = ", ".join(str(Path(i).resolve()) for i in images)
    gate = fit_gate_on_images(paths, features, source, percentile, seed)
    write_model_card(paths.root)
    return GateFit(gate, len(kept), passed + refused)
