"""Patient-level splits of the full real NIH metadata: no patient overlap, label shares preserved."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from chestaid.data.sources import read_source
from chestaid.data.splits import SPLITS, assign_splits, split_report, stratified_group_split
from chestaid.core.tasks import NIH_FINDINGS


@pytest.fixture(scope="module")
def real_table(real_csv):
    return read_source(real_csv).table


def test_real_metadata_split_is_patient_disjoint_and_stratified(real_table):
    split = assign_splits(real_table, NIH_FINDINGS, (0.72, 0.08, 0.20), seed=0)
    patients = [set(real_table.loc[split == s, "patient_id"]) for s in SPLITS]
    assert not (patients[0] & patients[1]) and not (patients[0] & patients[2]) and not (patients[1] & patients[2])
    report = split_report(real_table, NIH_FINDINGS, split)
    shares = report.loc[list(NIH_FINDINGS)]
    worst = shares[list(SPLITS)].sub(shares["all"], axis=0).abs().to_numpy().max()
    assert worst <= 1.5, f"a finding's share drifts by {worst:.2f} percentage points"  # Hernia included
    sizes = report.loc["images", list(SPLITS)] / len(real_table)
    np.testing.assert_allclose(sizes.to_numpy(dtype=float), [0.72, 0.08, 0.20], atol=0.01)


def test_split_is_deterministic_for_a_seed(real_table):
    small = real_table.iloc[:5000]
    a = assign_splits(small, NIH_FINDINGS, seed=1)
    assert a.equals(assign_splits(small, NIH_FINDINGS, seed=1))
    assert not a.equals(assign_splits(small, NIH_FINDINGS, seed=2))


def test_official_lists_keep_test_and_carve_val_by_patient():
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"patient_id": rng.integers(0, 300, 2000).astype(str),
                          "Effusion": rng.integers(0, 2, 2000), "Mass": (rng.random(2000) < 0.1).astype(int)})
    table["split"] = np.where(table["patient_id"].astype(int) < 60, "test", "trainval")
    split = assign_splits(table, ("Effusion", "Mass"), (0.72, 0.08, 0.20))
    assert (split[table["split"] == "test"] == "test").all()
    assert set(split[table["split"] == "trainval"]) == {"train", "val"}
    assert not set(table.loc[split == "train", "patient_id"]) & set(table.loc[split == "val", "patient_id"])
    assert 0.05 < (split == "val").sum() / (table["split"] == "trainval").sum() < 0.15


def test_bad_fractions_are_rejected():
    with pytest.raises(ValueError, match="sum to 1"):
        stratified_group_split(np.array(["a", "b"]), np.zeros((2, 1)), (0.5, 0.6))
