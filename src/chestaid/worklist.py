"""`chestaid predict`: score files and folders into a worklist sorted by risk, with optional heat maps (C3).

The worklist has one row per readable image, highest risk first; unreadable files go to a second CSV with
the reason, and the job finishes the rest. Risk of an image = its highest calibrated risk score over findings.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from chestaid.data.images import IMAGE_SUFFIXES
from chestaid.errors import ChestaidError
from chestaid.fileio import atomic_write, write_text
from chestaid.predictor import Predictor, Scored
from chestaid.progress import progress_bar


@dataclass
class Worklist:
    out: Path
    scored: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    skipped_csv: Path | None = None


def collect_inputs(items: list[str | Path]) -> list[Path]:
    """Files as given (whatever their suffix); folders searched recursively for PNG/JPEG/DICOM files."""
    found: list[Path] = []
    for item in map(Path, items):
        if item.is_dir():
            for folder, _, files in sorted(os.walk(item)):
                found += [Path(folder) / f for f in sorted(files) if Path(f).suffix.lower() in IMAGE_SUFFIXES]
        else:
            found.append(item)
    return found


def _row(predictor: Predictor, s: Scored) -> dict:
    labels = predictor.task.labels
    top = int(np.argmax(s.risk))
    row = {"file": s.path, "risk": round(float(s.risk[top]), 6), "top_finding": labels[top],
           "flagged": "|".join(labels[i] for i in np.flatnonzero(s.decisions)),
           "_tie_break": float(s.logits[top])}  # a saturated calibrator ties scores; the logit still ranks
    for i, name in enumerate(labels):
        row[f"{name}_risk"] = round(float(s.risk[i]), 6)
        row[f"{name}_decision"] = int(s.decisions[i])
    row.update({"age": s.patient.get("age"), "sex": s.patient.get("sex"), "view": s.patient.get("view"),
                "assumed": "|".join(s.assumed)})
    return row


def predict_worklist(run: str | Path, inputs: list[str | Path], out: str | Path, cam_dir: str | Path | None = None,
                     cam_finding: str | None = None, device: str = "cpu", batch_size: int = 16,
                     patient: dict | None = None, alpha: float = 0.4) -> Worklist:
    predictor = Predictor.load(run, device)
    labels = list(predictor.task.labels)
    if cam_finding is not None and cam_finding not in labels:
        raise ChestaidError(f"--cam-finding {cam_finding!r} is not a finding of this model; choose from {labels}")
    files = collect_inputs(inputs)
    if not files:
        raise ChestaidError("no input files (folders are searched for .png, .jpg, .jpeg, .dcm, .dicom)")
    explainer = None
    if cam_dir is not None:
        from chestaid.explain.gradcam import CamExplainer

        explainer = CamExplainer(predictor)
        Path(cam_dir).mkdir(parents=True, exist_ok=True)
    rows, skipped = [], []
    chunk = batch_size * 8  # decoded images are kept only for one chunk (heat maps), whatever the job's size
    with progress_bar() as bar:
        task = bar.add_task("scoring", total=len(files))
        for start in range(0, len(files), chunk):
            scored, failed = predictor.score_files(files[start:start + chunk], batch_size, patient,
                                                   keep_images=explainer is not None,
                                                   progress=lambda n: bar.advance(task, n))
            skipped += failed
            rows += [_row(predictor, s) for s in scored]
            if explainer is not None and scored:
                _write_cams(explainer, predictor, scored, labels, cam_finding, Path(cam_dir), batch_size, alpha, rows)
    out = Path(out)
    table = pd.DataFrame(rows)
    if len(table):
        table = table.sort_values(["risk", "_tie_break"], ascending=False, kind="stable").reset_index(drop=True)
        table.insert(0, "rank", np.arange(1, len(table) + 1))
    write_text(out, table.drop(columns="_tie_break", errors="ignore").to_csv(index=False))
    result = Worklist(out, len(rows), skipped)
    if skipped:
        result.skipped_csv = out.with_name(out.stem + "_skipped.csv")
        write_text(result.skipped_csv, pd.DataFrame(skipped, columns=["file", "reason"]).to_csv(index=False))
    return result


def _write_cams(explainer, predictor: Predictor, scored: list[Scored], labels: list[str], cam_finding: str | None,
                cam_dir: Path, batch_size: int, alpha: float, rows: list[dict]) -> None:
    from chestaid.explain.gradcam import overlay

    by_file = {row["file"]: row for row in rows[-len(scored):]}
    for start in range(0, len(scored), batch_size):
        part = scored[start:start + batch_size]
        findings = [labels.index(cam_finding) if cam_finding else int(np.argmax(s.risk)) for s in part]
        maps = explainer.maps(np.stack([s.image for s in part]), np.stack([s.tabular for s in part]), findings)
        for s, f, cam in zip(part, findings, maps):
            path = cam_dir / f"{Path(s.path).stem}_{labels[f]}.png"
            picture = Image.fromarray(overlay(s.image, cam, alpha))
            atomic_write(path, lambda fh, pic=picture: pic.save(fh, format="PNG"))
            by_file[s.path]["heat_map"] = str(path)
