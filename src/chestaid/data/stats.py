"""Metadata summaries (SPEC A3, A19): label frequencies, patients, age/sex/view, and their figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from chestaid.data.balance import distribution


def summarise(table: pd.DataFrame, labels: tuple[str, ...], ages_clipped: int = 0) -> dict:
    """A JSON-ready summary of a table of studies."""
    counts = distribution(table, labels)
    ages = table["age"].dropna()
    return {
        "images": int(len(table)),
        "patients": int(table["patient_id"].nunique()),
        "labels": {name: int(v) for name, v in counts.items()},
        "label_frequency": {name: round(int(v) / max(len(table), 1), 6) for name, v in counts.items()},
        "age": {"known": int(len(ages)), "mean": _r(ages.mean()), "median": _r(ages.median()),
                "min": _r(ages.min()), "max": _r(ages.max()), "clipped_over_100": int(ages_clipped)},
        "sex": {k or "unknown": int(v) for k, v in table["sex"].fillna("").value_counts().items()},
        "view": {k or "unknown": int(v) for k, v in table["view"].fillna("").value_counts().items()},
    }


def _r(value: float) -> float | None:
    return None if pd.isna(value) else round(float(value), 2)


def plot_metadata(table: pd.DataFrame, labels: tuple[str, ...], out: str | Path,
                  balanced: tuple[pd.DataFrame, pd.DataFrame] | None = None) -> list[Path]:
    """Write label_distribution.png, age_histogram.png and sex_proportion.png. With `balanced` = (train rows
    before, train rows after a recipe), the label figure compares the train part before and after."""
    from chestaid.core.figures import save, subplots

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    before = distribution(table if balanced is None else balanced[0], labels)
    fig, ax = subplots(figsize=(9, 4.5))
    y = np.arange(len(before))
    if balanced is None:
        ax.barh(y, before.to_numpy(), color="#4C72B0")
    else:
        after = distribution(balanced[1], labels).reindex(before.index).fillna(0)
        ax.barh(y - 0.2, before.to_numpy(), height=0.4, label="train, before balancing", color="#4C72B0")
        ax.barh(y + 0.2, after.to_numpy(), height=0.4, label="after balancing (train)", color="#DD8452")
        ax.legend()
    ax.set_yticks(y, before.index)
    ax.invert_yaxis()
    ax.set_xlabel("images")
    ax.set_title("Label distribution")
    written.append(save(fig, out / "label_distribution.png", 110))
    fig, ax = subplots(figsize=(6, 4))
    ax.hist(table["age"].dropna(), bins=range(0, 102, 2), color="#55A868")
    ax.set_xlabel("age (years)")
    ax.set_ylabel("images")
    ax.set_title("Age distribution")
    written.append(save(fig, out / "age_histogram.png", 110))
    sexes = table["sex"].fillna("").replace({"": "unknown", "M": "male", "F": "female"}).value_counts()
    fig, ax = subplots(figsize=(4.5, 4.5))
    ax.pie(sexes.to_numpy(), labels=sexes.index, autopct="%1.1f%%", colors=["#4C72B0", "#C44E52", "#8C8C8C"])
    ax.set_title("Sex proportion")
    written.append(save(fig, out / "sex_proportion.png", 110))
    return written
