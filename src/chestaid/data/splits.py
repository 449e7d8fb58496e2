"""Patient-level train/val/test splits: official lists when present, else grouped multi-label stratification.

The stratifier is iterative stratification (Sechidis et al. 2011) lifted to groups: patients are the units,
each carrying its image count per finding, and each patient goes to the split that most lacks its rarest
finding. No patient ever appears in two splits.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

SPLITS = ("train", "val", "test")
log = logging.getLogger(__name__)
DEFAULT_FRACTIONS = (0.72, 0.08, 0.20)


def stratified_group_split(groups: np.ndarray, targets: np.ndarray, fractions: tuple[float, ...],
                           seed: int = 0) -> np.ndarray:
    """Assign every row a part index (0..len(fractions)-1) so that whole groups stay together and each
    label's share in each part stays close to its share overall. Deterministic for a seed."""
    fractions_arr = np.asarray(fractions, dtype=float)
    if np.any(fractions_arr < 0) or not np.isclose(fractions_arr.sum(), 1.0):
        raise ValueError(f"split fractions must be non-negative and sum to 1, got {fractions}")
    codes, _ = pd.factorize(pd.Series(groups), sort=True)
    n_groups = int(codes.max()) + 1 if len(codes) else 0
    targets = np.asarray(targets, dtype=np.float64).reshape(len(codes), -1)
    no_label = (targets.sum(axis=1) == 0).astype(np.float64)[:, None]
    per_row = np.hstack([targets, no_label, np.ones((len(codes), 1))])  # labels, "no finding", images
    counts = np.zeros((n_groups, per_row.shape[1]))
    np.add.at(counts, codes, per_row)
    wanted = fractions_arr[:, None] * counts.sum(axis=0)[None, :]
    rng = np.random.default_rng(seed)
    tiebreak = rng.random(n_groups)
    assigned = np.full(n_groups, -1)
    columns = list(np.argsort(counts[:, :-1].sum(axis=0), kind="stable")) + [counts.shape[1] - 1]
    for col in columns:  # rarest label first; the image column last places whatever is left
        members = np.flatnonzero((assigned < 0) & (counts[:, col] > 0))
        members = members[np.lexsort((tiebreak[members], -counts[members, col]))]  # big groups first
        for g in members:
            need = wanted[:, col] + 1e-9 * wanted[:, -1]  # ties go to the part missing most images
            part = int(np.argmax(need))
            assigned[g] = part
            wanted[part] -= counts[g]
    return assigned[codes]


def assign_splits(table: pd.DataFrame, labels: tuple[str, ...], fractions: tuple[float, float, float] =
                  DEFAULT_FRACTIONS, seed: int = 0) -> pd.Series:
    """train/val/test per row. Rows marked 'test' or 'trainval' (official lists) keep that side; val is then
    carved out of trainval by patient. When every row is train/val/test already, that is kept (a table with
    train and test rows but no val: val is carved from train by patient). Otherwise the whole table is split
    by patient into three parts."""
    targets = table[list(labels)].to_numpy()
    patients = table["patient_id"].astype(str).to_numpy()
    official = table["split"].astype(str)
    out = pd.Series("", index=table.index, dtype=object)
    if len(official) and official.isin(SPLITS).all():  # every row given (a table of your own)
        if (official == "val").any() or not (official == "train").any():
            return official.copy()
        # train and test only: like NIH's official lists, the train side is train+val, and val is carved from
        # it by patient (refusing would force every user to split by hand; the test rows stay as given)
        official = official.replace({"train": "trainval"})
        log.info("the split column has train and test rows but no val: val is carved from train by patient")
    if official.isin(["test", "trainval"]).any():
        out[official == "test"] = "test"
        trainval = (official == "trainval").to_numpy()
        train_f, val_f = fractions[0], fractions[1]
        parts = stratified_group_split(patients[trainval], targets[trainval],
                                       (train_f / (train_f + val_f), val_f / (train_f + val_f)), seed)
        out[trainval] = np.asarray(SPLITS[:2])[parts]
        return out  # rows in neither list stay "" and are not used
    parts = stratified_group_split(patients, targets, fractions, seed)
    out[:] = np.asarray(SPLITS)[parts]
    return out


def split_report(table: pd.DataFrame, labels: tuple[str, ...], split: pd.Series) -> pd.DataFrame:
    """Share (%) of each label in each split and overall, plus images and patients per split."""
    rows = {}
    for name in (*SPLITS, "all"):
        part = table if name == "all" else table[split == name]
        shares = part[list(labels)].mean() * 100 if len(part) else pd.Series(np.nan, index=list(labels))
        rows[name] = {**shares.to_dict(), "images": len(part), "patients": part["patient_id"].nunique()}
    return pd.DataFrame(rows)
