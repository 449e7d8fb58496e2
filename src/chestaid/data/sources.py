"""Read the NIH ChestX-ray14 and Kaggle pneumonia folder layouts into one table of studies.

The table has one row per image: image_id, path, patient_id, age, sex, view, split, width, height and one
0/1 column per label of the task. `split` is "trainval"/"test" where official lists exist, "" otherwise
(data/splits.py turns it into train/val/test).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from chestaid.core.errors import ChestaidError
from chestaid.core.tasks import NIH_FINDINGS, NO_FINDING, PNEUMONIA_LABELS, Task, get_task

MAX_AGE = 100.0
NIH_CSV_NAMES = ("Data_Entry_2017.csv", "Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv.gz",
                 "Data_Entry_2017_v2020.csv.gz")
BOX_NAMES = ("BBox_List_2017.csv", "BBox_List_2017.csv.gz")
KAGGLE_CLASSES = {"NORMAL": 0, "PNEUMONIA": 1}
TABLE_COLUMNS = ["image_id", "path", "patient_id", "age", "sex", "view", "split", "width", "height"]
SYNTHETIC_MARK = "SYNTHETIC_DATA.txt"  # written by `chestaid synth`; prepare records it so reports can say so


@dataclass
class Source:
    """A table of studies read from one source, with what was noticed while reading it."""

    task: Task
    table: pd.DataFrame
    root: Path
    ages_clipped: int = 0
    missing_images: int = 0
    layout: str = ""  # "nih", "kaggle" or "table": what the model card can say about the data


def read_source(path: str | Path) -> Source:
    """Read an NIH root, an NIH CSV (metadata only) or a Kaggle pneumonia root; the layout is detected."""
    path = Path(path)
    if not path.exists():
        raise ChestaidError(f"{path}: no such file or folder")
    if path.is_file():
        return read_nih(path)
    if find_nih_csv(path) is not None:
        return read_nih(path)
    if find_kaggle_root(path) is not None:
        return read_kaggle(path)
    raise ChestaidError(f"{path}: neither an NIH ChestX-ray14 folder (Data_Entry_2017.csv + images*/) nor a "
                        "Kaggle pneumonia folder (train|val|test/NORMAL|PNEUMONIA)")


def find_nih_csv(root: Path) -> Path | None:
    for name in NIH_CSV_NAMES:
        if (root / name).is_file():
            return root / name
    return None


def find_box_file(root: Path) -> Path | None:
    for name in BOX_NAMES:
        if (root / name).is_file():
            return root / name
    return None


def parse_ages(raw: pd.Series) -> tuple[pd.Series, int]:
    """Ages as floats clipped to [0, 100]; accepts 58 and '058Y'. Returns the ages and how many were clipped."""
    ages = pd.to_numeric(raw.astype(str).str.extract(r"(\d+(?:\.\d+)?)", expand=False), errors="coerce")
    clipped = int((ages > MAX_AGE).sum())
    return ages.clip(lower=0, upper=MAX_AGE), clipped


def multi_hot(finding_labels: pd.Series, labels: tuple[str, ...], where: str) -> np.ndarray:
    """Turn 'A|B' strings into an (n, len(labels)) uint8 matrix; 'No Finding' is the all-zero row."""
    index = {name: i for i, name in enumerate(labels)}
    out = np.zeros((len(finding_labels), len(labels)), dtype=np.uint8)
    for row, text in enumerate(finding_labels.fillna("").astype(str)):
        for name in text.split("|"):
            name = name.strip()
            if not name or name == NO_FINDING:
                continue
            if name not in index:
                raise ChestaidError(f"{where}: unknown finding {name!r} in row {row + 2}")
            out[row, index[name]] = 1
    return out


def read_nih(path: Path) -> Source:
    """Read Data_Entry_2017*.csv and, when `path` is the NIH root, find every image under images*/."""
    csv = path if path.is_file() else find_nih_csv(path)
    root = path.parent if path.is_file() else path
    if csv is None:
        raise ChestaidError(f"{path}: no Data_Entry_2017.csv found")
    try:
        raw = pd.read_csv(csv, dtype={"Patient ID": str, "Image Index": str})
    except (OSError, ValueError, pd.errors.ParserError) as e:
        raise ChestaidError(f"{csv}: cannot be read as a CSV ({e})") from e
    raw.columns = [c.strip() for c in raw.columns]
    needed = ["Image Index", "Finding Labels", "Patient ID", "Patient Age", "Patient Gender", "View Position"]
    missing = [c for c in needed if c not in raw.columns]
    if missing:
        raise ChestaidError(f"{csv}: missing column(s) {missing}; is this the NIH Data_Entry_2017.csv?")
    task = get_task("nih")
    ages, clipped = parse_ages(raw["Patient Age"])
    table = pd.DataFrame({
        "image_id": raw["Image Index"].str.strip(),
        "path": "",
        "patient_id": raw["Patient ID"].astype(str).str.strip(),
        "age": ages,
        "sex": raw["Patient Gender"].fillna("").astype(str).str.strip().str.upper().str[:1],
        "view": raw["View Position"].fillna("").astype(str).str.strip().str.upper(),
        "split": "",
        "width": _first_present(raw, ["OriginalImage[Width", "OriginalImage[Width,Height]"]),
        "height": _first_present(raw, ["Height]"]),
    })
    table[list(task.labels)] = multi_hot(raw["Finding Labels"], task.labels, str(csv))
    source = Source(task=task, table=table, root=root, ages_clipped=clipped, layout="nih")
    if path.is_dir():
        _attach_nih_images(source)
        _attach_official_split(source)
    return source


def _first_present(raw: pd.DataFrame, names: list[str]) -> pd.Series:
    for name in names:
        if name in raw.columns:
            return pd.to_numeric(raw[name], errors="coerce")
    return pd.Series(np.nan, index=raw.index)


def _attach_nih_images(source: Source) -> None:
    found: dict[str, str] = {}
    for entry in sorted(os.scandir(source.root), key=lambda e: e.name):
        if entry.is_dir() and entry.name.lower().startswith("images"):
            for folder, _, files in os.walk(entry.path):
                for name in files:
                    if name.lower().endswith(".png"):
                        found.setdefault(name, os.path.join(folder, name))
    if not found:
        raise ChestaidError(f"{source.root}: no PNG images under images*/ (expected images_001/images/*.png ...)")
    paths = source.table["image_id"].map(found)
    source.missing_images = int(paths.isna().sum())
    source.table["path"] = paths.fillna("")


def _attach_official_split(source: Source) -> None:
    train_list, test_list = source.root / "train_val_list.txt", source.root / "test_list.txt"
    if not (train_list.is_file() and test_list.is_file()):
        return
    names = source.table["image_id"]
    test = set(test_list.read_text().split())
    trainval = set(train_list.read_text().split())
    source.table["split"] = np.where(names.isin(test), "test", np.where(names.isin(trainval), "trainval", ""))


def find_kaggle_root(path: Path) -> Path | None:
    """The folder holding train/ and test/ with NORMAL/ and PNEUMONIA/ inside (also under chest_xray/)."""
    for candidate in (path, path / "chest_xray", path / "chest_xray" / "chest_xray"):
        if all((candidate / split / cls).is_dir() for split in ("train", "test") for cls in KAGGLE_CLASSES):
            return candidate
    return None


def kaggle_patient_id(stem: str) -> str:
    """Patient of a Kaggle file: 'person12_virus_3' → 'person12'; 'NORMAL2-IM-0123-0001' → 'NORMAL2-IM-0123'."""
    match = re.match(r"^(person\d+)_", stem) or re.match(r"^((?:NORMAL\d*-)?IM-\d+)-\d+", stem)
    return match.group(1) if match else stem


def read_kaggle(path: Path) -> Source:
    """Read train|val|test/NORMAL|PNEUMONIA; val/ is pooled with train/ (it holds only 16 images upstream)."""
    root = find_kaggle_root(path)
    if root is None:
        raise ChestaidError(f"{path}: no train|test/NORMAL|PNEUMONIA folders found")
    rows = []
    for split in ("train", "val", "test"):
        for cls, target in KAGGLE_CLASSES.items():
            folder = root / split / cls
            if not folder.is_dir():
                continue
            for entry in sorted(os.scandir(folder), key=lambda e: e.name):
                if entry.is_file() and not entry.name.startswith("."):
                    stem = Path(entry.name).stem
                    rows.append((entry.name, entry.path, kaggle_patient_id(stem),
                                 "test" if split == "test" else "trainval", target))
    if not rows:
        raise ChestaidError(f"{root}: the NORMAL/PNEUMONIA folders hold no files")
    frame = pd.DataFrame(rows, columns=["image_id", "path", "patient_id", "split", PNEUMONIA_LABELS[0]])
    table = pd.DataFrame({
        "image_id": frame["image_id"], "path": frame["path"], "patient_id": frame["patient_id"],
        "age": np.nan, "sex": "", "view": "", "split": frame["split"], "width": np.nan, "height": np.nan,
    })
    table[PNEUMONIA_LABELS[0]] = frame[PNEUMONIA_LABELS[0]].astype(np.uint8)
    return Source(task=get_task("pneumonia"), table=table, root=root, layout="kaggle")


NEUTRAL = 0.5  # an unknown age, sex or view in the patient vector (age 50; between M/F, PA/AP)


def neutral_patients(count: int) -> np.ndarray:
    """`count` patient vectors [count, 3] with nothing known: what a scorer without patient data feeds a model
    that fuses it."""
    return np.full((count, 3), NEUTRAL, np.float32)


def patient_vectors(metas: list[dict]) -> np.ndarray:
    """patient_info for dicts {age, sex, view} in which unknown values are None."""
    return patient_info(pd.DataFrame({
        "age": [float(m["age"]) if m.get("age") is not None else np.nan for m in metas],
        "sex": [m.get("sex") or "" for m in metas], "view": [m.get("view") or "" for m in metas]}))


def patient_info(table: pd.DataFrame) -> np.ndarray:
    """The patient vector of SPEC A4: [age/100, sex (M=0, F=1), view (PA=0, AP=1)], float32.

    Unknown values take NEUTRAL (0.5; age 50), as documented for inputs without metadata.
    """
    age = (table["age"].astype(float) / MAX_AGE).fillna(NEUTRAL).to_numpy()
    sex = table["sex"].map({"M": 0.0, "F": 1.0}).fillna(NEUTRAL).to_numpy()
    view = table["view"].map({"PA": 0.0, "AP": 1.0}).fillna(NEUTRAL).to_numpy()
    return np.stack([age, sex, view], axis=1).astype(np.float32)


def read_boxes(path: str | Path) -> pd.DataFrame:
    """The NIH box file as image_id, finding, x, y, w, h (pixels); 'Infiltrate' becomes 'Infiltration'."""
    from chestaid.core.tasks import BOX_LABEL_ALIASES

    try:
        raw = pd.read_csv(path, header=0)
    except (OSError, ValueError, pd.errors.ParserError) as e:
        raise ChestaidError(f"{path}: cannot be read as the NIH box CSV ({e})") from e
    if raw.shape[1] < 6:
        raise ChestaidError(f"{path}: expected 6 columns (Image Index, Finding Label, x, y, w, h)")
    boxes = pd.DataFrame({"image_id": raw.iloc[:, 0].astype(str).str.strip(),
                          "finding": raw.iloc[:, 1].astype(str).str.strip().replace(BOX_LABEL_ALIASES)})
    for i, name in enumerate("xywh"):
        boxes[name] = pd.to_numeric(raw.iloc[:, 2 + i], errors="coerce")
    unknown = sorted(set(boxes["finding"]) - set(NIH_FINDINGS))
    if unknown:
        raise ChestaidError(f"{path}: unknown finding(s) {unknown} in the box file")
    return boxes.dropna().reset_index(drop=True)
