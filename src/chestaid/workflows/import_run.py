"""`weights import-xrv … --as-run OUT`: a published classifier (chestaid.models.published) as a complete run
directory — config.yaml, model.safetensors, manifest.json saying where it came from, and a model card that
says in its first lines that it was imported and that its scores are uncalibrated until `calibrate` runs on
local cases. No input gate (`chestaid gate fit RUN --images DIR` fits one on the hospital's own images).

The folder appears whole or not at all: it is written beside OUT and renamed into place.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Sequence

from chestaid.core.config import RunConfig, save_config
from chestaid.core.errors import ChestaidError
from chestaid.core.fileio import sha256_of
from chestaid.core.manifest import Manifest, write_manifest
from chestaid.core.run_paths import RunPaths
from chestaid.core.version import __version__
from chestaid.models.published import as_chestnet, output_rows, read_published, task_for
from chestaid.models.weights import save_weights
from chestaid.reporting.model_card import write_model_card

DEFAULT_RESOLUTION = 224  # CheXNet's and every torchxrayvision DenseNet's


def import_as_run(source: str | Path, out: str | Path, task: str | None = None,
                  labels: Sequence[str] | None = None, trust_pickle: bool = False,
                  size: int | None = None) -> RunPaths:
    """Write the run OUT from `source` (a file or a torchxrayvision weights name); `task`: nih, pneumonia or
    comma-separated findings; `labels`: the file's output order when it does not say; `size`: the input
    resolution when the source does not state it (224)."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ChestaidError(f"{out}: already exists; --as-run writes a new run folder")
    published = read_published(source, labels, trust_pickle)
    chosen = task_for(published, task, str(source))
    rows = output_rows(published, chosen, str(source))
    model = as_chestnet(published, chosen, str(source))
    resolution = size or published.source.get("input_resolution") or DEFAULT_RESOLUTION
    cfg = RunConfig.model_validate({
        "task": chosen.model_dump(),
        "data": {"path": None, "image_size": resolution, "cache_size": resolution, "augment": {"crop": 1.0}},
        "model": {"backbone": published.backbone, "weights": "none", "fpn": False, "tabular": False,
                  "hidden": [], "dropout": 0.0}})
    staging = out.with_name(f".{out.name}.importing")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        paths = RunPaths(staging)
        save_config(cfg, paths.config)
        save_weights(model, paths.weights, chosen.name)
        imported = {**published.source, "input_resolution": resolution,
                    "outputs": {label: {"index": i, "name": published.outputs[i]} for label, i in
                                zip(chosen.labels, rows)},
                    "input_scaling": "torchxrayvision [-1024, 1024], folded into the first convolution"
                    if published.xrv_scaling else "ImageNet-normalised grey (as CheXNet)",
                    "scores_at_import": "uncalibrated"}
        write_manifest(paths.manifest, Manifest(
            task={"name": chosen.name, "kind": chosen.kind, "labels": list(chosen.labels)},
            data={"layout": "imported", "synthetic": False, "source_name": None,
                  "datasets": published.source.get("datasets")},
            weights={"start": "imported", "start_sha256": published.source["sha256"],
                     "model_sha256": sha256_of(paths.weights)},
            chestaid_version=__version__, created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            extra={"imported": imported}))
        if out.is_dir():
            out.rmdir()  # the empty folder the user made
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    write_model_card(out)  # after the rename: the card is titled with the run's name
    return RunPaths(out)
