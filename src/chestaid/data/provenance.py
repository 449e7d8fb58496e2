"""A run's data provenance, read from its training cache once (at `train`) into RUN/manifest.json."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd

from chestaid.core.config import RunConfig
from chestaid.core.fileio import sha256_of
from chestaid.core.manifest import Manifest
from chestaid.core.run_paths import RunPaths
from chestaid.core.version import __version__
from chestaid.data.cache import Cache
from chestaid.data.splits import SPLITS


def describe_table(table: pd.DataFrame, labels: tuple[str, ...]) -> dict:
    """Counts per split, positives per label in train, ages/sexes/views seen (no patient-level values)."""
    ages = pd.to_numeric(table["age"], errors="coerce").dropna()
    train = table[table["split"] == "train"]
    return {
        "images": int(len(table)), "patients": int(table["patient_id"].nunique()),
        "splits": {s: {"images": int((table["split"] == s).sum()),
                       "patients": int(table.loc[table["split"] == s, "patient_id"].nunique())} for s in SPLITS},
        "positives_train": {name: int(train[name].sum()) for name in labels if name in train},
        "age": ({"known": int(len(ages)), "median": float(ages.median()), "min": float(ages.min()),
                 "max": float(ages.max())} if len(ages) else {"known": 0}),
        "sex": {str(k): int(v) for k, v in table["sex"].replace("", "unknown").fillna("unknown")
                .value_counts().items()},
        "view": {str(k): int(v) for k, v in table["view"].replace("", "unknown").fillna("unknown")
                 .value_counts().items()},
    }


def build_manifest(cache: Cache, cfg: RunConfig, paths: RunPaths) -> Manifest:
    """The manifest of a run trained on `cache` with `cfg` (its weights already written)."""
    task = cfg.require_task()
    meta = cache.meta
    start = cfg.model.weights
    start_file = Path(start) if start not in ("imagenet", "none") else None
    if start_file is not None and start_file.is_dir():  # a run's folder: its weights
        start_file = RunPaths(start_file).weights
    data = {"layout": meta.get("layout", "unknown"), "synthetic": bool(meta.get("synthetic")),
            "source_name": Path(str(meta.get("source", ""))).name or None, "cache_size": meta.get("size"),
            "cached": meta.get("cached"), **describe_table(cache.table, task.labels)}
    weights = {"start": start if start_file is None else start_file.name,
               "start_sha256": sha256_of(start_file) if start_file is not None and start_file.is_file() else None,
               "model_sha256": sha256_of(paths.weights) if paths.weights.is_file() else None,
               **parent_run(start_file)}
    chosen = paths.training_precision
    extra = {"training_precision": json.loads(chosen.read_text())} if chosen.is_file() else {}
    return Manifest(task={"name": task.name, "kind": task.kind, "labels": list(task.labels)}, data=data,
                    weights=weights, chestaid_version=__version__, created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    extra=extra)


def parent_run(start: Path | None) -> dict:
    """{"parent": …} when training started from another run's model.safetensors (fine-tuning, e.g. of an imported
    model): that run's name, its weights' digest and, when it was imported, the published file it came from."""
    from chestaid.core.manifest import read_manifest

    if start is None or start.name != "model.safetensors" or not (start.parent / "config.yaml").is_file():
        return {}
    manifest = read_manifest(RunPaths(start.parent).manifest)
    imported = (manifest.extra.get("imported") or {}) if manifest is not None else {}
    return {"parent": {"run": start.parent.name, "path": str(start.parent.resolve()),
                       "model_sha256": sha256_of(start) if start.is_file() else None,
                       "imported": imported.get("file"), "imported_sha256": imported.get("sha256")}}


def manifest_of(paths: RunPaths) -> Manifest | None:
    """RUN/manifest.json; for a run made before manifests, one derived from its cache when that is still
    reachable (and None when it is not: the caller says what is unknown)."""
    from chestaid.core.config import load_config
    from chestaid.core.manifest import read_manifest

    found = read_manifest(paths.manifest)
    if found is not None or not paths.config.is_file():
        return found
    cfg = load_config(paths.config)
    if not cfg.data.path or not (Path(cfg.data.path) / "meta.json").is_file():
        return None
    try:
        return build_manifest(Cache.open(cfg.data.path), cfg, paths)
    except Exception:  # noqa: BLE001 - an unreadable old cache only means "unknown"
        return None
