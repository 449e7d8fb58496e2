"""Synthetic data: the exact NIH and Kaggle layouts, boxes that hold the planted findings."""

from __future__ import annotations

import pandas as pd
import pytest

from chestaid.data.sources import read_boxes, read_source
from chestaid.data.phantoms.synthetic import sample_nih_rows
from chestaid.core.tasks import NIH_FINDINGS


def test_nih_layout_files_and_boxes(nih_root):
    names = {p.name for p in nih_root.iterdir()}
    assert {"Data_Entry_2017.csv", "BBox_List_2017.csv", "train_val_list.txt", "test_list.txt",
            "images_001"} <= names
    assert (nih_root / "BBox_List_2017.csv").read_text().splitlines()[0] == "Image Index,Finding Label,Bbox [x,y,w,h],,,"
    table = read_source(nih_root).table.set_index("image_id")
    boxes = read_boxes(nih_root / "BBox_List_2017.csv")
    assert len(boxes) > 0
    planted = boxes.groupby("image_id")["finding"].apply(set)
    for image_id, row in table.iterrows():
        assert planted.get(image_id, set()) == {f for f in NIH_FINDINGS if row[f]}
    assert (boxes[["x", "y"]] >= 0).all().all() and ((boxes["x"] + boxes["w"]) <= 1024.01).all()
    assert (boxes["x"] + boxes["w"]).max() > 256  # the 1024-pixel frame of NIH's file, not the 64-pixel PNGs
    assert "Infiltrate" in (nih_root / "BBox_List_2017.csv").read_text() or not table["Infiltration"].any()


def test_split_lists_are_patient_disjoint(nih_root):
    table = read_source(nih_root).table
    test = set(table.loc[table["split"] == "test", "patient_id"])
    trainval = set(table.loc[table["split"] == "trainval", "patient_id"])
    assert test and trainval and not test & trainval


def test_sampling_keeps_real_metadata_and_is_deterministic(real_csv):
    real = pd.read_csv(real_csv).set_index("Image Index")
    rows = sample_nih_rows(300, seed=4)
    assert rows.equals(sample_nih_rows(300, seed=4)) and len(rows) == 300
    for col in ("Finding Labels", "Patient Age", "Patient Gender", "View Position"):
        assert (real.loc[rows["Image Index"], col].to_numpy() == rows[col].to_numpy()).all()
    assert (rows["Finding Labels"] != "No Finding").mean() > 0.5  # enriched towards findings


def test_kaggle_layout_names_and_sizes(kaggle_root):
    from PIL import Image

    for split in ("train", "val", "test"):
        for cls in ("NORMAL", "PNEUMONIA"):
            assert any((kaggle_root / split / cls).glob("*.jpeg"))
    first = next((kaggle_root / "train" / "PNEUMONIA").glob("person*_*_*.jpeg"))
    width, height = Image.open(first).size
    assert height == 64 and 64 <= width <= 90


@pytest.mark.parametrize("kind", ["nih", "pneumonia"])
def test_synthetic_images_do_not_depend_on_the_hash_seed(kind, tmp_path):
    """Same seed, same bytes, in processes whose string hashing (set order) differs."""
    import hashlib
    import os
    import subprocess
    import sys

    digests = []
    for hash_seed in ("1", "2"):
        out = tmp_path / f"{kind}{hash_seed}"
        subprocess.run([sys.executable, "-m", "chestaid.apps.cli", "synth", kind, str(out), "--n", "40", "--size", "32"],
                       check=True, capture_output=True, env={**os.environ, "PYTHONHASHSEED": hash_seed})
        files = sorted(p for p in out.rglob("*") if p.suffix in (".png", ".jpeg"))
        digests.append([hashlib.md5(p.read_bytes()).hexdigest() for p in files])
    assert digests[0] == digests[1]


def test_family_b_draws_other_images_of_the_same_rows(tmp_path):
    """Family B: the same NIH rows (labels, patients, splits), other pictures, every planted finding boxed in the
    1024 frame."""
    import numpy as np
    from PIL import Image

    from chestaid.data.phantoms.synthetic import synth_nih
    from chestaid.core.errors import ChestaidError

    a = synth_nih(tmp_path / "a", 40, size=64, seed=3, workers=1)
    b = synth_nih(tmp_path / "b", 40, size=64, seed=3, workers=1, family="b")
    assert (a / "Data_Entry_2017.csv").read_text() == (b / "Data_Entry_2017.csv").read_text()
    assert (a / "test_list.txt").read_text() == (b / "test_list.txt").read_text()
    table = read_source(b).table.set_index("image_id")
    boxes = read_boxes(b / "BBox_List_2017.csv")
    planted = boxes.groupby("image_id")["finding"].apply(set)
    for image_id, row in table.iterrows():
        assert planted.get(image_id, set()) == {f for f in NIH_FINDINGS if row[f]}
    assert (boxes[["w", "h"]] > 0).all().all() and ((boxes["x"] + boxes["w"]) <= 1024.01).all()
    name = table.index[0]
    pixels = [np.asarray(Image.open(root / "images_001" / "images" / name), float) for root in (a, b)]
    assert pixels[0].shape == pixels[1].shape == (64, 64)
    assert np.abs(pixels[0] - pixels[1]).mean() > 10
    with pytest.raises(ChestaidError, match="unknown phantom family"):
        synth_nih(tmp_path / "c", 10, size=64, family="z")
