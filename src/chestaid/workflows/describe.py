"""`chestaid stats`: what a dataset holds — label frequencies, patients, age/sex/view, a balancing recipe's
effect on its train part, and the figures (SPEC A3)."""

from __future__ import annotations

from pathlib import Path

from chestaid.data.balance import balance as run_balance, distribution
from chestaid.data.cache import source_or_cache
from chestaid.data.splits import assign_splits
from chestaid.data.stats import plot_metadata, summarise


def describe_data(path: str | Path, plot: str | Path | None = None, balance: str = "none", seed: int = 0) -> dict:
    """The summary of an NIH CSV, an NIH or Kaggle folder, or a cache; `plot`: a folder for the figures."""
    data = source_or_cache(path)
    table, labels = data.table, data.task.labels
    summary = summarise(table, labels, getattr(data, "ages_clipped", 0))
    balanced = None
    if balance != "none":
        split = table["split"] if set(table["split"]) <= {"train", "val", "test"} else assign_splits(table, labels)
        train = table[split == "train"]
        balanced = (train, run_balance(train, labels, balance, seed))
        summary["balance"] = {"recipe": balance, "train_before": distribution(train, labels).to_dict(),
                              "train_after": distribution(balanced[1], labels).to_dict()}
    if plot is not None:
        summary["plots"] = [str(p) for p in plot_metadata(table, labels, Path(plot), balanced)]
    return summary
