"""Synthetic data in the exact NIH ChestX-ray14 and Kaggle pneumonia folder layouts (our test and demo data).

NIH: labels, patient ids, ages, sexes and views are sampled by patient from the real NIH metadata shipped
in `nih_metadata/` (NIH Clinical Center, public), so finding co-occurrence is real. Sampling is enriched
towards rarer findings by default (`enrich`), so that small sets still hold every finding; each patient
keeps at most `max_per_patient` of their images. Every image is a phantom of the chosen family (FAMILIES:
data/phantoms/family_a.py, or data/phantoms/family_b.py, written apart to check that nothing is tuned to one)
whose planted findings are written to BBox_List_2017.csv in the 1024-pixel frame of the real release, whatever the PNG size.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from chestaid.data.phantoms import family_a as phantom, family_b as phantom_b
from chestaid.data.sources import SYNTHETIC_MARK
from chestaid.data.splits import stratified_group_split
from chestaid.core.errors import ChestaidError
from chestaid.core.fileio import write_text
from chestaid.core.progress import progress_bar
from chestaid.core.tasks import NIH_FINDINGS, NO_FINDING

PER_FOLDER = 10_000
BOX_FRAME = 1024  # NIH's boxes are in the 1024 × 1024 frame of the released PNGs
FAMILIES = {"a": phantom.render, "b": phantom_b.render}
NIH_HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
              "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],")
BOX_HEADER = "Image Index,Finding Label,Bbox [x,y,w,h],,,"
BOX_SPELLING = {"Infiltration": "Infiltrate"}


def real_nih_metadata() -> pd.DataFrame:
    """The real NIH Data_Entry_2017 (v2020) table shipped with chestaid."""
    with resources.as_file(resources.files("chestaid.data") / "nih_metadata" / "Data_Entry_2017_v2020.csv.gz") as p:
        return pd.read_csv(p, dtype={"Patient ID": str})


def sample_nih_rows(n: int, seed: int, enrich: bool = True, max_per_patient: int = 6) -> pd.DataFrame:
    """n rows of the real metadata, drawn patient by patient (whole patients, first follow-ups first)."""
    meta = real_nih_metadata().sort_values(["Patient ID", "Follow-up #"])
    meta = meta.groupby("Patient ID", sort=False).head(max_per_patient)
    rng = np.random.default_rng(seed)
    patients = meta["Patient ID"].unique()
    weights = np.ones(len(patients))
    if enrich:
        labels = meta["Finding Labels"].str.split("|")
        freq = labels.explode().value_counts(normalize=True)
        image_weight = labels.map(lambda names: max(freq[x] ** -0.75 for x in names))
        weights = image_weight.groupby(meta["Patient ID"], sort=False).mean().reindex(patients).to_numpy()
    order = rng.choice(len(patients), size=len(patients), replace=False, p=weights / weights.sum())
    sizes = meta.groupby("Patient ID", sort=False).size().reindex(patients).to_numpy()[order]
    take = order[: int(np.searchsorted(np.cumsum(sizes), n)) + 1]
    rows = meta[meta["Patient ID"].isin(set(patients[take]))].head(n)
    if len(rows) < n:
        raise ChestaidError(f"cannot sample {n} images from the NIH metadata (at most {len(rows)} with "
                            f"max_per_patient={max_per_patient})")
    return rows.reset_index(drop=True)


def _render_nih(job: tuple[int, str, str, str, str, int, int, str, str]) -> list[tuple[str, str, Box]]:
    index, name, labels, sex, view, size, seed, path, family = job
    rng = np.random.default_rng([seed, index])
    findings = set() if labels == NO_FINDING else set(labels.split("|"))
    pixels, boxes = FAMILIES[family](findings, size, rng, female=sex == "F", ap_view=view == "AP")
    Image.fromarray(pixels).save(path, compress_level=3)
    return [(name, finding, box) for finding, box in boxes.items()]


Box = tuple[float, float, float, float]


def _run_jobs(fn, jobs: list, description: str, workers: int | None) -> list:
    results = []
    with progress_bar() as bar, ProcessPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        task = bar.add_task(description, total=len(jobs))
        for result in pool.map(fn, jobs, chunksize=max(1, min(32, len(jobs) // (8 * (workers or 2)) or 1))):
            results.append(result)
            bar.advance(task)
    return results


def _check_out(out: Path) -> None:
    if out.exists() and any(out.iterdir()):
        raise ChestaidError(f"{out}: folder is not empty; choose a new folder for synthetic data")
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / SYNTHETIC_MARK, "Synthetic phantom radiographs drawn by `chestaid synth`: no real patient, "
                                     "no real image. Models trained on them show that chestaid works, not how "
                                     "well a model reads chest X-rays.\n")


def synth_nih(out: str | Path, n: int, size: int = 256, seed: int = 0, enrich: bool = True,
              per_folder: int = PER_FOLDER, workers: int | None = None, family: str = "a") -> Path:
    """Write n phantom images of `family` (FAMILIES) in the NIH layout, with the CSV, the box file (1024-pixel
    frame) and patient-level split lists."""
    if family not in FAMILIES:
        raise ChestaidError(f"unknown phantom family {family!r}; choose one of {', '.join(FAMILIES)}")
    out = Path(out)
    _check_out(out)
    rows = sample_nih_rows(n, seed, enrich)
    folders = [out / f"images_{k + 1:03d}" / "images" for k in range((n + per_folder - 1) // per_folder)]
    for folder in folders:
        folder.mkdir(parents=True)
    jobs = [(i, r["Image Index"], r["Finding Labels"], r["Patient Gender"], r["View Position"], size, seed,
             str(folders[i // per_folder] / r["Image Index"]), family) for i, r in rows.iterrows()]
    boxes = [b for result in _run_jobs(_render_nih, jobs, "drawing NIH phantoms", workers) for b in result]
    spacing = 0.143 * BOX_FRAME / size
    lines = [NIH_HEADER] + [
        f"{r['Image Index']},{r['Finding Labels']},{r['Follow-up #']},{r['Patient ID']},{r['Patient Age']},"
        f"{r['Patient Gender']},{r['View Position']},{size},{size},{spacing:.4f},{spacing:.4f},"
        for _, r in rows.iterrows()]
    write_text(out / "Data_Entry_2017.csv", "\n".join(lines) + "\n")
    box_lines = [BOX_HEADER] + [f"{name},{BOX_SPELLING.get(f, f)},{x * BOX_FRAME:.2f},{y * BOX_FRAME:.2f},"
                                f"{w * BOX_FRAME:.2f},{h * BOX_FRAME:.2f}" for name, f, (x, y, w, h) in boxes]
    write_text(out / "BBox_List_2017.csv", "\n".join(box_lines) + "\n")
    targets = np.stack([rows["Finding Labels"].str.contains(f, regex=False) for f in NIH_FINDINGS], 1)
    part = stratified_group_split(rows["Patient ID"].to_numpy(), targets, (0.8, 0.2), seed)
    write_text(out / "train_val_list.txt", "\n".join(rows["Image Index"][part == 0]) + "\n")
    write_text(out / "test_list.txt", "\n".join(rows["Image Index"][part == 1]) + "\n")
    return out


DISTRACTORS = ("Nodule", "Cardiomegaly", "Atelectasis", "Pleural_Thickening", "Effusion", "Mass")


def _render_kaggle(job: tuple[int, int, str, int, int, str]) -> None:
    """Bacterial pneumonia: lobar consolidation or patchy opacity; viral: patchy plus streaky haze. Lesion
    contrast varies (faint cases exist) and a third of all images, NORMAL ones too, carry another finding."""
    index, target, kind, size, seed, path = job
    rng = np.random.default_rng([seed, index])
    width = int(size * rng.uniform(1.0, 1.4))
    findings: set[str] = set()
    if target:
        findings = {"Consolidation"} if kind == "bacteria" and rng.random() < 0.5 else {"Pneumonia"}
        if kind == "virus":
            findings.add("Infiltration")
    if rng.random() < 0.35:
        findings.add(str(rng.choice(DISTRACTORS)))
    severity = {name: float(rng.uniform(0.35, 1.0)) for name in sorted(findings)}  # sets iterate by hash seed
    pixels, _ = phantom.render(findings, size, rng, female=bool(rng.random() < 0.5), width=width, severity=severity)
    Image.fromarray(pixels).save(path, quality=90)


def synth_pneumonia(out: str | Path, n: int, size: int = 256, seed: int = 0, workers: int | None = None) -> Path:
    """Write n phantom images in the Kaggle layout train|val|test/NORMAL|PNEUMONIA/*.jpeg (seed 003's shares:
    about 74% pneumonia in train, 62.5% in test; test ≈ 10.7% and val ≈ 0.3% of the images, as upstream)."""
    out = Path(out)
    _check_out(out)
    rng = np.random.default_rng(seed)
    n_test, n_val = max(2, round(n * 0.107)), max(2, round(n * 0.003))
    jobs, person, normal = [], 0, 0
    for split, count, share in (("train", n - n_test - n_val, 0.743), ("val", n_val, 0.5), ("test", n_test, 0.625)):
        n_pos = int(round(count * share))
        for cls, k in (("PNEUMONIA", n_pos), ("NORMAL", count - n_pos)):
            folder = out / split / cls
            folder.mkdir(parents=True)
            made = 0
            while made < k:
                if cls == "PNEUMONIA":
                    person += 1
                    kind = "bacteria" if rng.random() < 0.65 else "virus"
                    for j in range(min(int(rng.integers(1, 4)), k - made)):
                        jobs.append((len(jobs), 1, kind, 0, 0, str(folder / f"person{person}_{kind}_{j + 1}.jpeg")))
                        made += 1
                else:
                    normal += 1
                    prefix = "NORMAL2-IM" if rng.random() < 0.5 else "IM"
                    jobs.append((len(jobs), 0, "", 0, 0, str(folder / f"{prefix}-{normal:04d}-0001.jpeg")))
                    made += 1
    jobs = [(i, t, kind, size, seed, path) for i, t, kind, _, _, path in jobs]
    _run_jobs(_render_kaggle, jobs, "drawing pneumonia phantoms", workers)
    return out
