"""RUN/manifest.json: what a run is and what it was trained on, written once at `train`.

The page, the report and the model card read it instead of the training cache, so a run copied without its
cache (what anyone deploying it does) keeps every statement about its data. A run made before manifests existed
has none: `read_manifest` returns None and readers say what is unknown.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from chestaid.core.fileio import write_json

MANIFEST_VERSION = 1


@dataclass(frozen=True)
class Manifest:
    """task: name, kind, labels. data: layout (nih | kaggle | table | unknown), synthetic, source name, cache size,
    images and patients per split, positives per label in train, ages/sexes/views seen. weights: what training
    started from and the digests of that file and of the trained model.safetensors."""

    task: dict
    data: dict
    weights: dict
    chestaid_version: str
    created: str
    version: int = MANIFEST_VERSION
    extra: dict = field(default_factory=dict)

    @property
    def synthetic(self) -> bool:
        return bool(self.data.get("synthetic"))

    def to_json(self) -> dict:
        return asdict(self)


def write_manifest(path: str | Path, manifest: Manifest) -> Path:
    write_json(Path(path), manifest.to_json())
    return Path(path)


def read_manifest(path: str | Path) -> Manifest | None:
    """The manifest at `path`, or None when the run has none (or it cannot be read)."""
    try:
        raw = json.loads(Path(path).read_text())
        return Manifest(**{k: raw[k] for k in ("task", "data", "weights", "chestaid_version", "created")},
                        version=int(raw.get("version", MANIFEST_VERSION)), extra=raw.get("extra", {}))
    except (OSError, ValueError, KeyError, TypeError):
        return None
