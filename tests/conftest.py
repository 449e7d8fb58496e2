"""Shared fixtures: tiny synthetic NIH and Kaggle folders (64 px) made once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from chestaid.data.synthetic import synth_nih, synth_pneumonia

REAL_NIH = Path(__file__).resolve().parents[1] / "src" / "chestaid" / "data" / "nih_metadata"


@pytest.fixture(scope="session")
def nih_root(tmp_path_factory) -> Path:
    return synth_nih(tmp_path_factory.mktemp("nih") / "nih", n=120, size=64, seed=3, per_folder=50, workers=2)


@pytest.fixture(scope="session")
def kaggle_root(tmp_path_factory) -> Path:
    return synth_pneumonia(tmp_path_factory.mktemp("kaggle") / "chest_xray", n=80, size=64, seed=5, workers=2)


@pytest.fixture(scope="session")
def real_csv() -> Path:
    return REAL_NIH / "Data_Entry_2017_v2020.csv.gz"
