"""Your own data: a CSV table of image files and 0/1 labels, read into the same table of studies as NIH/Kaggle.

Columns: `path` (relative to the CSV's folder, or absolute; any format the decoder reads: PNG, JPEG, DICOM ...),
`patient_id`; optional `age` (years), `sex` (M/F), `view` (PA/AP), `split` (train/val/test on every row, or
trainval/test, or empty: then split by patient); every other column is a label holding 0 or 1 (or choose them
with `labels`). The task is defined by those labels: one label is a binary task, more a multi-label task.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from chestaid.data.sources import TABLE_COLUMNS, Source, parse_ages
from chestaid.core.errors import ChestaidError
from chestaid.core.tasks import Task

REQUIRED = ("path", "patient_id")
OPTIONAL = ("age", "sex", "view", "split")
SEX_WORDS = {"M": "M", "MALE": "M", "F": "F", "FEMALE": "F"}
SPLIT_VALUES = {"", "train", "val", "test", "trainval"}


def read_csv_text(csv: str | Path) -> pd.DataFrame:
    """A CSV as text cells (empty cells stay ""), its column names stripped; one-line errors."""
    try:
        raw = pd.read_csv(csv, dtype=str, keep_default_na=False)
    except FileNotFoundError as exc:
        raise ChestaidError(f"{csv}: no such file") from exc
    except (OSError, ValueError, pd.errors.ParserError) as e:
        raise ChestaidError(f"{csv}: cannot be read as a CSV ({e})") from e
    raw.columns = [c.strip() for c in raw.columns]
    return raw


def read_table(csv: str | Path, task_name: str | None = None, labels: list[str] | None = None) -> Source:
    """Read a table of studies; `task_name` defaults to the CSV's stem, `labels` to every non-metadata column."""
    csv = Path(csv)
    raw = read_csv_text(csv)
    missing = [c for c in REQUIRED if c not in raw.columns]
    if missing:
        raise ChestaidError(f"{csv}: missing column(s) {missing}; a table needs path, patient_id and 0/1 label columns")
    labels = labels or [c for c in raw.columns if c not in REQUIRED + OPTIONAL]
    unknown = [c for c in labels if c not in raw.columns]
    if unknown:
        raise ChestaidError(f"{csv}: no column(s) {unknown}")
    if not labels:
        raise ChestaidError(f"{csv}: no label columns; add one 0/1 column per label")
    if raw.empty:
        raise ChestaidError(f"{csv}: the table has no rows")
    try:
        task = Task.model_validate({"name": task_name or csv.stem, "labels": labels})
    except ValueError as e:
        raise ChestaidError(f"{csv}: {e.errors()[0]['msg'] if hasattr(e, 'errors') else e}") from e
    paths = raw["path"].str.strip()
    if (paths == "").any():
        raise ChestaidError(f"{csv}: row {int(np.argmax(paths == '')) + 2} has an empty path")
    duplicated = paths[paths.duplicated()]
    if len(duplicated):
        raise ChestaidError(f"{csv}: path {duplicated.iloc[0]!r} is listed twice")
    ages, clipped = parse_ages(raw["age"]) if "age" in raw else (pd.Series(np.nan, index=raw.index), 0)
    table = pd.DataFrame({
        "image_id": paths,
        "path": [str(p if Path(p).is_absolute() else csv.parent / p) for p in paths],
        "patient_id": raw["patient_id"].str.strip(),
        "age": ages,
        "sex": raw.get("sex", pd.Series("", index=raw.index)).str.strip().str.upper().map(SEX_WORDS).fillna(""),
        "view": raw.get("view", pd.Series("", index=raw.index)).str.strip().str.upper(),
        "split": _splits(raw, csv),
        "width": np.nan, "height": np.nan,
    }, columns=TABLE_COLUMNS)
    if (table["patient_id"] == "").any():
        raise ChestaidError(f"{csv}: row {int(np.argmax(table['patient_id'] == '')) + 2} has no patient_id")
    for name in labels:
        table[name] = _zero_one(raw[name], name, csv)
    return Source(task=task, table=table, root=csv.resolve(), ages_clipped=clipped, layout="table")


def _zero_one(column: pd.Series, name: str, csv: Path) -> np.ndarray:
    values = pd.to_numeric(column.str.strip(), errors="coerce")
    bad = ~values.isin([0, 1])
    if bad.any():
        row = int(np.argmax(bad.to_numpy()))
        raise ChestaidError(f"{csv}: label column {name!r} must hold 0 or 1; row {row + 2} has {column.iloc[row]!r}")
    return values.to_numpy(dtype=np.uint8)


def _splits(raw: pd.DataFrame, csv: Path) -> pd.Series:
    if "split" not in raw:
        return pd.Series("", index=raw.index)
    split = raw["split"].str.strip().str.lower()
    odd = sorted(set(split) - SPLIT_VALUES)
    if odd:
        raise ChestaidError(f"{csv}: split values {odd}; use train, val, test (or trainval and test, or empty)")
    given = set(split) - {""}
    if given and "" in set(split):
        raise ChestaidError(f"{csv}: some rows have a split and some do not; fill every row or none")
    if given & {"train", "val"} and "trainval" in given:
        raise ChestaidError(f"{csv}: mixes trainval with train/val; use one or the other")
    per_patient = pd.DataFrame({"patient": raw["patient_id"].str.strip(), "split": split})
    spread = per_patient.groupby("patient")["split"].nunique()
    if given and (spread > 1).any():
        raise ChestaidError(f"{csv}: patient {spread[spread > 1].index[0]!r} is in more than one split; a patient's "
                            "images must stay in one split")
    return split
