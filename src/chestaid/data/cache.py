"""The image cache: decode every image once, resize it, keep it in a uint8 memmap beside the split table.

CACHE/
  meta.json      task, labels, size, source, counts
  studies.csv    one row per image (row i ↔ images.npy[i]): the table of data/sources.py with train/val/test
  images.npy     uint8 [N, size, size] (numpy .npy, opened as a memmap)
  done.npy       uint8 [N]: 1 where the image is cached; written atomically after its pixels are flushed
  skipped.csv    files that could not be read, with the reason

A second run of `prepare` with the same source and size resumes: finished images are not decoded again.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from chestaid.data.images import read_grey, resize_square
from chestaid.data.sources import SYNTHETIC_MARK, Source, read_source
from chestaid.data.splits import DEFAULT_FRACTIONS, assign_splits
from chestaid.core.errors import ChestaidError, ImageDecodeError
from chestaid.core.fileio import atomic_write, write_json, write_text
from chestaid.core.progress import progress_bar
from chestaid.core.tasks import Task

CHUNK = 32


@dataclass
class PrepareReport:
    """What `prepare` did: counts, and each file it skipped with the reason."""

    cache: Path
    total: int
    cached: int
    decoded_now: int
    task: Task
    skipped: list[tuple[str, str]] = field(default_factory=list)
    ages_clipped: int = 0


def _decode_chunk(items: list[tuple[int, str]], size: int) -> list[tuple[int, np.ndarray | None, str]]:
    out = []
    for index, path in items:
        if not path:
            out.append((index, None, "image file not found under the source folder"))
            continue
        try:
            out.append((index, resize_square(read_grey(path, draft_size=size), size), ""))
        except ImageDecodeError as e:
            out.append((index, None, e.reason))
    return out


def _fingerprint(table: pd.DataFrame, size: int) -> str:
    digest = hashlib.sha256(str(size).encode())
    digest.update("\n".join(table["image_id"].astype(str)).encode())
    return digest.hexdigest()[:16]


def prepare(root: str | Path | Source, out: str | Path, size: int = 256, workers: int | None = None,
            fractions: tuple[float, float, float] = DEFAULT_FRACTIONS, seed: int = 0,
            for_training: bool = True) -> PrepareReport:
    """Build (or resume) the cache of a source (an NIH or Kaggle folder, or a Source such as
    chestaid.data.table.read_table's). Skips unreadable files and reports them. `for_training=False`: a cache
    that is scored whole (local cases for evaluation or calibration), so its splits need no train or val rows."""
    source = root if isinstance(root, Source) else read_source(root)
    origin = Path(source.root if isinstance(root, Source) else root)
    out = Path(out)
    table = source.table.copy()
    table["split"] = assign_splits(table, source.task.labels, fractions, seed)
    counts = table["split"].value_counts()
    if for_training and (not counts.get("train", 0) or not counts.get("val", 0)):
        raise ChestaidError(f"{origin}: its split column gives {counts.get('train', 0)} train and "
                            f"{counts.get('val', 0)} val rows; training needs both (give train rows, or leave the "
                            "split column out and chestaid splits by patient)")
    fingerprint = _fingerprint(table, size)
    images_path, done_path = out / "images.npy", out / "done.npy"
    meta = {"task": source.task.name, "labels": list(source.task.labels), "kind": source.task.kind, "size": size,
            "source": str(origin.resolve()), "fingerprint": fingerprint, "fractions": list(fractions),
            "seed": seed, "images": len(table), "layout": source.layout,
            "synthetic": ((origin if origin.is_dir() else origin.parent) / SYNTHETIC_MARK).is_file()}
    previous = _read_meta(out)
    if previous and previous.get("fingerprint") == fingerprint and images_path.exists() and done_path.exists():
        images = np.load(images_path, mmap_mode="r+")
        done = np.load(done_path)
    else:
        if previous or (out.exists() and any(out.iterdir())):
            if not previous:
                raise ChestaidError(f"{out}: folder is not empty and is not a chestaid cache; choose another --out")
            raise ChestaidError(f"{out}: holds a cache of another source or size ({previous.get('source')}, "
                                f"{previous.get('size')} px); choose another --out or delete it")
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "meta.json", {**meta, "complete": False})
        images = np.lib.format.open_memmap(images_path, mode="w+", dtype=np.uint8, shape=(len(table), size, size))
        done = np.zeros(len(table), dtype=np.uint8)
        _save_done(done_path, done)
    write_text(out / "studies.csv", table.to_csv(index=False))
    todo = [(int(i), p) for i, p in enumerate(table["path"].astype(str)) if not done[i]]
    skipped: list[tuple[str, str]] = []
    decoded_now = _decode_into(images, done, done_path, todo, table, size, workers, skipped)
    skipped_frame = pd.DataFrame(skipped, columns=["file", "reason"])
    write_text(out / "skipped.csv", skipped_frame.to_csv(index=False))
    cached = int(done.sum())
    write_json(out / "meta.json", {**meta, "complete": True, "cached": cached, "skipped": len(skipped),
                                   "ages_clipped": source.ages_clipped})
    return PrepareReport(out, len(table), cached, decoded_now, source.task, skipped, source.ages_clipped)


def _decode_into(images: np.ndarray, done: np.ndarray, done_path: Path, todo: list[tuple[int, str]],
                 table: pd.DataFrame, size: int, workers: int | None, skipped: list[tuple[str, str]]) -> int:
    if not todo:  # an already-cached cohort: no pool, no bar
        return 0
    chunks = [todo[i:i + CHUNK] for i in range(0, len(todo), CHUNK)]
    workers = workers or os.cpu_count() or 1
    decoded = 0
    with progress_bar() as bar, ProcessPoolExecutor(max_workers=workers) as pool:
        task = bar.add_task("caching images", total=len(done), completed=int(done.sum()))
        pending = [pool.submit(_decode_chunk, chunk, size) for chunk in chunks[: 4 * workers]]
        next_chunk = len(pending)
        while pending:
            results = pending.pop(0).result()
            if next_chunk < len(chunks):
                pending.append(pool.submit(_decode_chunk, chunks[next_chunk], size))
                next_chunk += 1
            for index, pixels, reason in results:
                if pixels is None:
                    skipped.append((table["path"].iat[index] or table["image_id"].iat[index], reason))
                else:
                    images[index] = pixels
                    decoded += 1
            images.flush()
            for index, pixels, _ in results:
                done[index] = pixels is not None
            _save_done(done_path, done)
            bar.advance(task, len(results))
    return decoded


def _save_done(path: Path, done: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, done)
    atomic_write(path, lambda f: f.write(buffer.getvalue()))


def trained_on_synthetic(cache: str | Path | None) -> bool:
    """Whether a cache (a run's data.path) was built from `chestaid synth` phantoms."""
    meta = _read_meta(Path(cache)) if cache else None
    return bool(meta and meta.get("synthetic"))


def _read_meta(out: Path) -> dict | None:
    try:
        return json.loads((out / "meta.json").read_text())
    except (OSError, ValueError):
        return None


@dataclass
class Cache:
    """A finished cache opened for reading: the image memmap and the table of studies that were cached."""

    root: Path
    meta: dict
    table: pd.DataFrame
    images: np.ndarray

    @property
    def task(self) -> Task:
        return Task.model_validate({"name": self.meta["task"], "labels": self.meta["labels"],
                                    **({"kind": self.meta["kind"]} if "kind" in self.meta else {})})

    @classmethod
    def open(cls, root: str | Path) -> "Cache":
        root = Path(root)
        meta = _read_meta(root)
        if meta is None:
            raise ChestaidError(f"{root}: not a chestaid cache (no meta.json); run 'chestaid prepare' first")
        table = pd.read_csv(root / "studies.csv", dtype={"patient_id": str, "image_id": str, "sex": str,
                                                          "view": str, "split": str, "path": str},
                            keep_default_na=False, na_values={"age": [""], "width": [""], "height": [""]})
        table["row"] = np.arange(len(table))
        done = np.load(root / "done.npy").astype(bool)
        images = np.load(root / "images.npy", mmap_mode="r")
        return cls(root=root, meta=meta, table=table[done].reset_index(drop=True), images=images)


def source_or_cache(path: str | Path) -> Source | Cache:
    """A cache folder opens as a Cache; anything else is read as a source."""
    path = Path(path)
    return Cache.open(path) if (path / "meta.json").is_file() else read_source(path)
