"""`chestaid predict`: score files and folders into a worklist sorted by risk, with optional heat maps (C3).

The worklist has one row per readable image that passed the input gate (chestaid.inference.gate), highest risk first;
images the gate refused (DICOM tags, or unlike the training images) get no rank: they go to
WORKLIST_refused.csv with the reason; unreadable files go to WORKLIST_skipped.csv with the reason, and the job
finishes the rest. Risk of an image = its highest calibrated risk score over findings.
Folders are searched recursively for PNG/JPEG/DICOM files, DICOM also by content (PACS exports have files
without a suffix); DICOMDIR index files are skipped. Each row says where age, sex and view came from
(tag / given / assumed) and, for DICOM, the identifiers a PACS user looks a study up by.

Heat maps mirror the input tree under the heat-map folder (FOLDER/sub/IM-0001.png →
CAM/FOLDER/sub/IM-0001_Effusion.png), so same-named files of different studies never share a map; a name
that would still collide within one job gets a numbered suffix. They are made after ranking, only for the
rows asked for (all, flagged, or the top N).

Decoding (PNG/JPEG/DICOM → the cache-size square) runs in `decode_workers` worker processes while the model
scores the batches before it, so the slower of the two stages sets the pace (0: decode in threads of this
process, as `Predictor.score_files` does). With `devices` > 1 the files are shared between that many processes
(CPU) or GPUs through Lightning's predict loop (chestaid.inference.distributed); global rank 0 ranks them and
writes the worklist and the heat maps. The worklist is the same in every case.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from chestaid.data.images import IMAGE_SUFFIXES, looks_like_image
from chestaid.core.errors import ChestaidError
from chestaid.core.fileio import atomic_write, write_text
from chestaid.core.run_paths import RunPaths
from chestaid.inference.predictor import Predictor, decode_file
from chestaid.inference.result import worklist_columns
from chestaid.core.progress import progress_bar

log = logging.getLogger(__name__)
IN_FLIGHT_BATCHES = 4  # decoded batches waiting for the model at most: memory stays bounded on a large archive


@dataclass(frozen=True)
class InputFile:
    path: Path
    name: Path  # relative: the input folder's own name + the path inside it, or the file's name


@dataclass
class Worklist:
    out: Path
    scored: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    skipped_csv: Path | None = None
    refused: list[tuple[str, str]] = field(default_factory=list)
    refused_csv: Path | None = None
    heat_maps: int = 0
    gate: bool = True  # False: the run has no input gate (said by the CLI)
    lead: bool = True  # False: a process 1…N-1 of `devices` > 1, which wrote nothing (rank 0 did)
    backend: str = ""  # what computed the logits (chestaid.inference.backends.VARIANTS)
    score: str = "calibrated risk score"  # or "uncalibrated score" (chestaid.inference.calibration.score_name)


def collect_inputs(items: list[str | Path]) -> tuple[list[InputFile], list[tuple[str, str]]]:
    """Files as given (whatever they are); folders searched recursively (`images.looks_like_image`). Returns the
    files to score and (file, reason) for each file of a folder passed over for not being an image."""
    missing = [str(item) for item in items if not Path(item).exists()]
    if missing:
        raise ChestaidError(f"{missing[0]}: no such file or folder" +
                            (f" (and {len(missing) - 1} more input(s) missing)" if len(missing) > 1 else ""))
    found: list[InputFile] = []
    passed_over: list[tuple[str, str]] = []
    seen: set[Path] = set()
    for item in map(Path, items):
        if item.is_dir():
            base = Path(item.resolve().name or "input")
            for folder, dirs, files in os.walk(item):
                dirs.sort()
                for name in sorted(files):
                    path = Path(folder) / name
                    if looks_like_image(path):
                        found.append(InputFile(path, base / path.relative_to(item)))
                    else:
                        passed_over.append((str(path), "DICOMDIR, an index of a DICOM media, not an image"
                                            if name.upper() == "DICOMDIR" else
                                            "not an image (neither PNG, JPEG nor DICOM by its name or content)"))
        else:
            found.append(InputFile(item, Path(item.name)))
    unique = []
    for entry in found:  # a file reached twice (a folder and a file inside it) is scored once
        key = entry.path.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(entry)
    return unique, passed_over


def parse_cam_rows(text: str) -> str | int:
    """'all', 'flagged' or a number N (the N highest-risk rows)."""
    if text in ("all", "flagged"):
        return text
    if text.isdigit() and int(text) > 0:
        return int(text)
    raise ChestaidError(f"--cam-rows must be all, flagged or a positive number, got {text!r}")


def predict_worklist(run: str | Path, inputs: list[str | Path], out: str | Path, cam_dir: str | Path | None = None,
                     cam_finding: str | None = None, device: str = "cpu", batch_size: int = 16,
                     patient: dict | None = None, alpha: float = 0.4, cam_rows: str | int = "all",
                     backend: str = "auto", decode_workers: int | None = None, devices: int = 1) -> Worklist:
    """Score `inputs` into the worklist `out` (see the module). decode_workers: processes decoding while the model
    scores (None: one per core beyond the first, at least 1; 0: threads of this process; with devices > 1, per
    process, default none on the CPU). devices: processes (device "cpu") or GPUs (device "cuda") to share the
    files between, through Lightning (every process runs this same call)."""
    from chestaid.core.machine import cores

    if devices < 1:
        raise ChestaidError(f"--devices must be at least 1, got {devices}")
    if devices > 1:
        from chestaid.inference.distributed import rank_device

        device = rank_device(device)
    threads = max(1, cores() // devices) if devices > 1 and device == "cpu" else None
    RunPaths(run).require()
    files, passed_over = collect_inputs(inputs)  # a missing input is an error before anything is loaded or written
    if not files:
        raise ChestaidError(f"no input files (folders are searched for {', '.join(sorted(IMAGE_SUFFIXES))} and "
                            "for DICOM files by content)")
    predictor = Predictor.load(run, device, backend=backend, threads=threads)
    labels = list(predictor.task.labels)
    if cam_finding is not None and cam_finding not in labels:
        raise ChestaidError(f"--cam-finding {cam_finding!r} is not a finding of this model; choose from {labels}")
    log.info("scoring with the %s backend%s", predictor.backend,
             f" ({predictor.backend_note})" if predictor.backend_note else "")
    names = {str(f.path): f.name for f in files}
    rows, refused, tabular, skipped = [], [], {}, list(passed_over)
    for scored, failed in _score_all(predictor, [str(f.path) for f in files], batch_size, patient, decode_workers,
                                     devices):
        if scored is None:
            return Worklist(Path(out), lead=False)
        skipped += failed
        rows += [s.worklist_row() for s in scored if not s.refused]
        refused += [s.refused_row() for s in scored if s.refused]
        tabular.update({s.path: s.tabular for s in scored})
    table = pd.DataFrame(rows, columns=worklist_columns(labels))  # the header even when nothing was ranked
    heat_maps = 0
    table = table.sort_values(["risk", "_tie_break"], ascending=False, kind="stable").reset_index(drop=True)
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    table["backend"] = predictor.backend  # what computed the logits (auto's choice included)
    table["score"] = predictor.score_name  # calibrated risk score, or uncalibrated score
    if cam_dir is not None and len(table):
        heat_maps = _write_cams(predictor, table, names, tabular, Path(cam_dir), cam_finding, cam_rows, batch_size,
                                alpha)
    out = Path(out)
    write_text(out, table.drop(columns="_tie_break", errors="ignore").to_csv(index=False))
    result = Worklist(out, len(rows), skipped, refused=[(r["file"], r["reason"]) for r in refused],
                      heat_maps=heat_maps, gate=predictor.gate is not None, backend=predictor.backend,
                      score=predictor.score_name)
    if skipped:
        result.skipped_csv = out.with_name(out.stem + "_skipped.csv")
        write_text(result.skipped_csv, pd.DataFrame(skipped, columns=["file", "reason"]).to_csv(index=False))
    if refused:
        result.refused_csv = out.with_name(out.stem + "_refused.csv")
        write_text(result.refused_csv, pd.DataFrame(refused).to_csv(index=False))
    return result


def _score_all(predictor: Predictor, paths: list[str], batch_size: int, patient: dict | None,
               decode_workers: int | None, devices: int) -> Iterator[tuple[list | None, list[tuple[str, str]]]]:
    """(scored, failed) per batch in input order; (None, []) once in a process other than rank 0 of devices > 1."""
    if devices > 1:
        from chestaid.inference.distributed import score_distributed

        workers = decode_workers if decode_workers is not None else (0 if predictor.device.type == "cpu" else 2)
        shared = score_distributed(predictor, paths, devices, batch_size, patient, workers)
        yield (shared.scored, shared.failed) if shared.lead else (None, [])
        return
    workers = default_decode_workers() if decode_workers is None else decode_workers
    if workers > 0 and len(paths) <= batch_size:  # one batch: starting processes costs more than it saves
        workers = 0
    with progress_bar() as bar:
        task = bar.add_task("scoring", total=len(paths))
        yield from _score_batches(predictor, paths, batch_size, patient, workers, lambda n: bar.advance(task, n))


def default_decode_workers() -> int:
    """One decoding process per core beyond the first (the model's), at least one."""
    from chestaid.core.machine import cores

    return max(1, cores() - 1)


def _decode_batch(paths: list[str], size: int) -> list[tuple[np.ndarray | None, str, object]]:
    return [decode_file(p, size) for p in paths]


def _score_batches(predictor: Predictor, paths: list[str], batch_size: int, patient: dict | None, workers: int,
                   progress) -> Iterator[tuple[list, list[tuple[str, str]]]]:
    """(scored, failed) per batch, in input order; with workers, decoding runs ahead in worker processes."""
    if workers <= 0:
        chunk = batch_size * 8
        for start in range(0, len(paths), chunk):
            yield predictor.score_files(paths[start:start + chunk], batch_size, patient, progress=progress)
        return
    batches = iter([paths[i:i + batch_size] for i in range(0, len(paths), batch_size)])
    # fork where there is one, as torch's DataLoader workers: they only decode (PIL, numpy, pydicom), never touch
    # the parent's torch/OpenVINO thread pools; spawn elsewhere
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method)) as pool:
        pending: deque[tuple[list[str], Future]] = deque()
        for batch in batches:
            pending.append((batch, pool.submit(_decode_batch, batch, predictor.image_size)))
            if len(pending) >= IN_FLIGHT_BATCHES + workers:
                break
        while pending:
            batch, future = pending.popleft()
            decoded = future.result()
            following = next(batches, None)
            if following is not None:
                pending.append((following, pool.submit(_decode_batch, following, predictor.image_size)))
            good = [(p, img, header) for p, (img, _, header) in zip(batch, decoded) if img is not None]
            failed = [(p, reason) for p, (img, reason, _) in zip(batch, decoded) if img is None]
            scored = predictor.score_images([p for p, _, _ in good], [img for _, img, _ in good],
                                            [h for _, _, h in good], patient) if good else []
            progress(len(batch))
            yield scored, failed


def _chosen(table: pd.DataFrame, cam_rows: str | int) -> list[int]:
    if cam_rows == "all":
        return list(table.index)
    if cam_rows == "flagged":
        return list(table.index[table["flagged"].fillna("") != ""])
    return list(table.index[:int(cam_rows)])


def heat_map_name(name: Path, finding: str) -> Path:
    """IM-0001.png → IM-0001_Effusion.png; a suffix-less DICOM name (often a UID) is kept whole."""
    stem = name.stem if name.suffix.lower() in IMAGE_SUFFIXES else name.name
    return name.parent / f"{stem}_{finding}.png"


def _write_cams(predictor: Predictor, table: pd.DataFrame, names: dict[str, Path], tabular: dict[str, np.ndarray],
                cam_dir: Path, cam_finding: str | None, cam_rows: str | int, batch_size: int, alpha: float) -> int:
    """Heat maps for the chosen rows, each decoded again from its own file; returns how many were written."""
    from chestaid.explain.gradcam import overlay

    explainer = predictor.explainer()
    labels = list(predictor.task.labels)
    table["heat_map"] = ""
    claimed: set[Path] = set()
    written = 0
    chosen = _chosen(table, cam_rows)
    for start in range(0, len(chosen), batch_size):
        part = []
        for index in chosen[start:start + batch_size]:
            path = table.at[index, "file"]
            image, _ = predictor.read(path)
            if image is not None:  # a file that changed since it was scored gets no map rather than a wrong one
                part.append((index, path, image))
        if not part:
            continue
        findings = [cam_finding or table.at[i, "top_finding"] for i, _, _ in part]
        maps = explainer.maps(np.stack([img for _, _, img in part]), np.stack([tabular[p] for _, p, _ in part]),
                              [labels.index(f) for f in findings])
        for (index, path, image), finding, cam in zip(part, findings, maps):
            target = _unclaimed(cam_dir / heat_map_name(names[path], finding), claimed)
            picture = Image.fromarray(overlay(image, cam, alpha))
            atomic_write(target, lambda fh, pic=picture: pic.save(fh, format="PNG"))
            table.at[index, "heat_map"] = str(target)
            written += 1
    return written


def _unclaimed(path: Path, claimed: set[Path]) -> Path:
    candidate, n = path, 1
    while candidate in claimed:
        n += 1
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
    claimed.add(candidate)
    return candidate
