"""The seed000 balancing recipe on the train part of the real metadata, step by step."""

from __future__ import annotations

import pytest

from chestaid.data.balance import balance, distribution
from chestaid.data.sources import read_source
from chestaid.data.splits import assign_splits
from chestaid.core.tasks import NIH_FINDINGS, NO_FINDING


@pytest.fixture(scope="module")
def train(real_csv):
    table = read_source(real_csv).table
    return table[assign_splits(table, NIH_FINDINGS) == "train"]


def test_none_keeps_every_row(train):
    out = balance(train, NIH_FINDINGS, "none")
    assert len(out) == len(train) and out["flip"].sum() == 0


def test_seed000_follows_the_seed_steps(train):
    before = distribution(train, NIH_FINDINGS)
    out = balance(train, NIH_FINDINGS, "seed000", seed=0)
    after = distribution(out, NIH_FINDINGS)
    # No Finding: 10% kept, then 25% of those
    assert after[NO_FINDING] == round(0.25 * round(0.10 * before[NO_FINDING]))
    # the rarest finding is replicated up to exactly 1,500
    assert after["Hernia"] == 1500
    # every finding under 3,000 got mirror-flipped duplicates, and only those rows are flipped
    flipped = out[out["flip"] == 1]
    assert len(flipped) > 0
    rare = [f for f in NIH_FINDINGS if before[f] < 3000]
    assert flipped[rare].any(axis=1).all()
    assert all(after[f] >= 2 * before[f] * 0.95 for f in ("Cardiomegaly", "Edema", "Fibrosis", "Pneumonia"))
    # big classes were undersampled
    assert after["Infiltration"] < before["Infiltration"]


def test_unknown_recipe(train):
    with pytest.raises(ValueError, match="unknown balancing recipe"):
        balance(train.iloc[:10], NIH_FINDINGS, "smote")
