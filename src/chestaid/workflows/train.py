"""`train`: fit the model, then record what it was trained on (RUN/manifest.json), fit the input gate and
write the model card. Under DDP every process fits; only global rank 0 does what follows."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from chestaid.core.config import RunConfig
from chestaid.core.errors import ChestaidError
from chestaid.core.manifest import write_manifest
from chestaid.core.run_paths import RunPaths
from chestaid.data.cache import Cache
from chestaid.data.provenance import build_manifest
from chestaid.fitting.gate import fit_gate
from chestaid.inference.predictor import Predictor
from chestaid.reporting.model_card import write_model_card
from chestaid.training.fit import fit

log = logging.getLogger(__name__)


def train(cfg: RunConfig, data: str | Path | None, out: str | Path, resume: bool = False,
          force: bool = False) -> RunPaths:
    """Train into a run directory (or continue one from its newest checkpoint when resume=True; force=True starts
    over in it); returns its paths once the manifest, the input gate and the model card are written."""
    fitted = fit(cfg, data, out, resume, force)
    if fitted.lead:
        write_manifest(fitted.paths.manifest, build_manifest(fitted.cache, fitted.cfg, fitted.paths))
        fit_input_gate(fitted.paths, fitted.cache, fitted.cfg)
        write_model_card(fitted.paths.root)
    return fitted.paths


def fit_input_gate(paths: RunPaths, cache: Cache, cfg: RunConfig) -> None:
    """The out-of-distribution statistics of the finished model (RUN/gate.safetensors, chestaid.inference.gate)."""
    device = "cuda" if torch.cuda.is_available() and cfg.train.accelerator in ("auto", "gpu", "cuda") else "cpu"
    try:
        fit_gate(paths, Predictor.load(paths.root, device, raw=True, backend="torch"), cache)
    except ChestaidError as e:  # a run too small for the gate is still a run; it says "no input gate" when used
        paths.gate.unlink(missing_ok=True)  # a gate of earlier weights must not stay
        log.warning("%s: no input gate fitted (%s)", paths.root, e)
