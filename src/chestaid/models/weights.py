"""A run's weights as safetensors: written atomically, loaded from config.yaml + model.safetensors alone."""

from __future__ import annotations

from pathlib import Path

import torch

from chestaid.core.config import RunConfig, load_config
from chestaid.core.errors import ChestaidError
from chestaid.core.fileio import atomic_write
from chestaid.core.run_paths import RunPaths
from chestaid.models.chestnet import ChestNet, build_model


def save_weights(model: torch.nn.Module, path: str | Path, task: str) -> None:
    """Weights only, as safetensors (safe to load from strangers), written atomically."""
    from safetensors.torch import save

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    data = save(state, metadata={"format": "chestaid", "task": task})
    atomic_write(path, lambda f: f.write(data))


def load_model(run: str | Path, map_location: str = "cpu") -> tuple[RunConfig, ChestNet]:
    """Rebuild a run's model from config.yaml + model.safetensors alone (no network, no checkpoint)."""
    from safetensors.torch import load_file

    paths = RunPaths(run).require()
    cfg = load_config(paths.config)
    model = build_model(cfg.model.model_copy(update={"weights": "none"}), cfg.require_task().num_outputs)
    try:
        state = load_file(str(paths.weights), device=map_location)
    except Exception as e:
        raise ChestaidError(f"{paths.weights}: cannot be read ({e})") from e
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ChestaidError(f"{paths.weights}: does not match config.yaml ({len(missing)} missing, "
                            f"{len(unexpected)} unexpected tensors)")
    return cfg, model.eval()
