"""Optional sampling recipes for the training part only: "none", and "seed000" (SPEC A5, the seed's steps).

A recipe returns a table of training rows in which a row may repeat; column `flip` = 1 marks the seed's
mirror-flipped duplicates (the dataset flips those images left-right).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from chestaid.core.tasks import NO_FINDING

RECIPES = ("none", "seed000")


def distribution(table: pd.DataFrame, labels: tuple[str, ...]) -> pd.Series:
    """Images per finding plus 'No Finding' (all-zero rows), as in the seed's Table 1."""
    counts = table[list(labels)].sum().astype(int)
    counts[NO_FINDING] = int((table[list(labels)].sum(axis=1) == 0).sum())
    return counts.sort_values(ascending=False)


def balance(train: pd.DataFrame, labels: tuple[str, ...], recipe: str = "none", seed: int = 0) -> pd.DataFrame:
    """Apply a recipe to the training rows; returns the sampled rows with a `flip` column."""
    out = train.copy()
    out["flip"] = np.uint8(0)
    if recipe == "none":
        return out
    if recipe == "seed000":
        return _seed000(out, labels, np.random.default_rng(seed))
    raise ValueError(f"unknown balancing recipe {recipe!r}; choose one of {RECIPES}")


def _keep(table: pd.DataFrame, mask: pd.Series, fraction: float, rng: np.random.Generator) -> pd.DataFrame:
    """Keep `fraction` of the rows selected by mask (chosen at random) and every other row."""
    chosen = np.flatnonzero(mask.to_numpy())
    drop = rng.choice(chosen, size=len(chosen) - int(round(fraction * len(chosen))), replace=False)
    keep = np.ones(len(table), dtype=bool)
    keep[drop] = False
    return table[keep]


def _only(table: pd.DataFrame, labels: tuple[str, ...], name: str | None) -> pd.Series:
    """Rows whose only finding is `name` (None: rows with no finding)."""
    positives = table[list(labels)].sum(axis=1)
    if name is None:
        return positives == 0
    return (positives == 1) & (table[name] == 1)


def _seed000(table: pd.DataFrame, labels: tuple[str, ...], rng: np.random.Generator) -> pd.DataFrame:
    names = set(labels)
    # 1. undersample: 10% of No Finding; 15% of Infiltration-only, 50% of Effusion-only and Atelectasis-only
    for name, fraction in ((None, 0.10), ("Infiltration", 0.15), ("Effusion", 0.50), ("Atelectasis", 0.50)):
        if name is None or name in names:
            table = _keep(table, _only(table, labels, name), fraction, rng)
    # 2. mirror-flipped duplicates of the images of findings with < 3,000 occurrences
    counts = table[list(labels)].sum()
    rare = [name for name in labels if 0 < counts[name] < 3000]
    if rare:
        copies = table[table[rare].any(axis=1)].copy()
        copies["flip"] = np.uint8(1)
        table = pd.concat([table, copies])
    # 3. replicate findings under 1,500 up to 1,500 (rarest first, recounting as co-occurring rows arrive)
    for name in sorted(labels, key=lambda n: table[n].sum()):
        have = int(table[name].sum())
        if 0 < have < 1500:
            pool = np.flatnonzero(table[name].to_numpy() == 1)
            table = pd.concat([table, table.iloc[rng.choice(pool, size=1500 - have, replace=True)]])
    # 4. keep 25% of No Finding and 50% of Atelectasis-only
    table = _keep(table, _only(table, labels, None), 0.25, rng)
    if "Atelectasis" in names:
        table = _keep(table, _only(table, labels, "Atelectasis"), 0.50, rng)
    return table
