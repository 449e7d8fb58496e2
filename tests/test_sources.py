"""Reading the NIH and Kaggle layouts into one table of studies."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from chestaid.data.sources import (kaggle_patient_id, parse_ages, patient_info, read_boxes, read_source)
from chestaid.core.errors import ChestaidError
from chestaid.core.tasks import NIH_FINDINGS


def test_nih_layout_finds_images_in_every_folder_and_official_split(nih_root):
    source = read_source(nih_root)
    table = source.table
    assert source.task.name == "nih" and len(table) == 120 and source.missing_images == 0
    folders = {p.split("/")[-3] for p in table["path"]}
    assert folders == {"images_001", "images_002", "images_003"}
    csv = pd.read_csv(nih_root / "Data_Entry_2017.csv")
    for (_, row), labels in zip(table.iterrows(), csv["Finding Labels"]):
        expected = set() if labels == "No Finding" else set(labels.split("|"))
        assert {f for f in NIH_FINDINGS if row[f]} == expected
    assert set(table["split"]) == {"trainval", "test"}


def test_missing_images_are_counted_not_fatal(nih_root, tmp_path):
    import shutil

    copy = tmp_path / "nih"
    shutil.copytree(nih_root, copy)
    victim = sorted((copy / "images_002" / "images").iterdir())[0]
    victim.unlink()
    source = read_source(copy)
    assert source.missing_images == 1
    assert (source.table["path"] == "").sum() == 1


def test_ages_are_clipped_and_counted(tmp_path):
    ages, clipped = parse_ages(pd.Series([58, "058Y", 414, 148, None]))
    assert clipped == 2 and list(ages[:4]) == [58, 58, 100, 100] and np.isnan(ages[4])
    csv = tmp_path / "Data_Entry_2017.csv"
    csv.write_text("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position\n"
                   "a.png,Effusion|Mass,0,1,414,M,PA\nb.png,No Finding,0,2,30,F,AP\n")
    source = read_source(csv)
    assert source.ages_clipped == 1
    np.testing.assert_allclose(patient_info(source.table), [[1.0, 0.0, 0.0], [0.3, 1.0, 1.0]])


def test_unknown_label_is_a_clear_error(tmp_path):
    csv = tmp_path / "Data_Entry_2017.csv"
    csv.write_text("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position\n"
                   "a.png,Effusoin,0,1,40,M,PA\n")
    with pytest.raises(ChestaidError, match="unknown finding 'Effusoin'"):
        read_source(csv)


def test_real_box_file_maps_infiltrate(real_csv):
    boxes = read_boxes(real_csv.parent / "BBox_List_2017.csv.gz")
    assert len(boxes) == 984
    assert "Infiltration" in set(boxes["finding"]) and set(boxes["finding"]) <= set(NIH_FINDINGS)


def test_kaggle_layout(kaggle_root):
    source = read_source(kaggle_root.parent)  # the parent holds chest_xray/
    table = source.table
    assert source.task.name == "pneumonia" and len(table) == 80
    assert set(table["split"]) == {"trainval", "test"}  # val/ is pooled with train/
    assert table["Pneumonia"].mean() > 0.5
    assert table.loc[table["image_id"].str.startswith("person"), "Pneumonia"].eq(1).all()
    np.testing.assert_allclose(patient_info(table)[0], [0.5, 0.5, 0.5])  # unknown metadata → neutral


@pytest.mark.parametrize("stem, patient", [("person12_virus_3", "person12"), ("person1_bacteria_1", "person1"),
                                           ("IM-0115-0001", "IM-0115"), ("NORMAL2-IM-1427-0001", "NORMAL2-IM-1427")])
def test_kaggle_patient_ids(stem, patient):
    assert kaggle_patient_id(stem) == patient


def test_unknown_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ChestaidError, match="neither an NIH"):
        read_source(tmp_path)
