"""Your own data: a CSV table with three custom labels → prepare → train → evaluate → chestaid.load().predict(),
through the command line and the public API; the table's errors are one line naming the file and the row."""

from __future__ import annotations

import json
import textwrap

import pandas as pd
import pytest
from typer.testing import CliRunner

from chestaid.apps.cli import app
from chestaid.data.table import read_table
from chestaid.core.errors import ChestaidError

from test_api import GLOBAL_STATE, assert_state_kept

LABELS = ["effusion", "cardiomegaly", "mass"]


@pytest.fixture(scope="module")
def table_csv(tmp_path_factory):
    """300 phantom images listed in a table of our own: lower-case label names that no built-in task has."""
    from chestaid.data.phantoms.synthetic import synth_nih

    folder = tmp_path_factory.mktemp("own")
    root = synth_nih(folder / "images", n=300, size=64, seed=21, per_folder=300, workers=2)
    (root / "SYNTHETIC_DATA.txt").unlink()  # the table's images are not known to be synthetic here
    entries = pd.read_csv(root / "Data_Entry_2017.csv")
    files = {p.name: p.relative_to(folder) for p in root.rglob("*.png")}
    table = pd.DataFrame({"path": [str(files[n]) for n in entries["Image Index"]],
                          "patient_id": entries["Patient ID"].astype(str), "age": entries["Patient Age"],
                          "sex": entries["Patient Gender"].map({"M": "male", "F": "female"}),
                          "view": entries["View Position"]})
    for label in LABELS:
        table[label] = entries["Finding Labels"].str.contains(label.capitalize()).astype(int)
    table.to_csv(folder / "studies.csv", index=False)
    return folder / "studies.csv"


@pytest.mark.trains
def test_table_to_prediction_through_cli_and_api(table_csv, tmp_path):
    cache, run = tmp_path / "cache", tmp_path / "run"
    result = CliRunner().invoke(app, ["prepare", "--table", str(table_csv), "--task", "lungs", "--out", str(cache),
                                      "--size", "64", "--workers", "2"])
    assert result.exit_code == 0, result.output
    assert "task lungs (multi-label: effusion, cardiomegaly, mass)" in result.output
    meta = json.loads((cache / "meta.json").read_text())
    assert (meta["task"], meta["labels"], meta["kind"], meta["cached"]) == ("lungs", LABELS, "multi-label", 300)
    script = GLOBAL_STATE + textwrap.dedent(f"""
        import chestaid
        chestaid.train({str(cache)!r}, {str(run)!r}, config="demo",
                       overrides={{"train.epochs": 1, "data.image_size": 64, "data.batch_size": 16}})
        summary = chestaid.evaluate({str(run)!r})["summary"]
        assert summary["findings_with_auc"] == 3, summary
        result = chestaid.load({str(run)!r}).predict({str(table_csv.parent / "images")!r} + "/images_001/images/"
                                                    + sorted(__import__("os").listdir({str(table_csv.parent)!r}
                                                    + "/images/images_001/images"))[0], age=50)
        assert list(result.risk) == {LABELS!r} and result.heatmap("mass").shape == result.image.shape
        assert state() == before, [(a, b) for a, b in zip(state(), before) if a != b]
        """)
    assert_state_kept(script, timeout=600)
    config = (run / "config.yaml").read_text()
    assert "name: lungs" in config and "kind: multi-label" in config
    card = (run / "model_card.md").read_text()
    assert "`lungs`, multi-label: effusion, cardiomegaly, mass." in card and "user's own images" in card
    assert "On the held-out test split" in card


def test_a_config_naming_another_task_is_refused(table_csv, tmp_path):
    from chestaid.core.config import load_config
    from chestaid.data.cache import prepare
    from chestaid.workflows.train import train

    prepare(read_table(table_csv), tmp_path / "cache", size=64, workers=2)
    with pytest.raises(ChestaidError, match="holds data of task 'studies' .* the config's task is 'nih'"):
        train(load_config("demo", ["task=nih"]), tmp_path / "cache", tmp_path / "run")


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.assign(mass=t["mass"].astype(str).replace("1", "-1")), "label column 'mass' must hold 0 or 1; row"),
    (lambda t: t.drop(columns="patient_id"), r"missing column\(s\) \['patient_id'\]"),
    (lambda t: t.assign(split=["train"] * 10 + [""] * (len(t) - 10)), "some rows have a split and some do not"),
    (lambda t: t.assign(split=["train", "test"] * (len(t) // 2), patient_id="p1"), "patient 'p1' is in more than one"),
    (lambda t: t.assign(split="holdout"), r"split values \['holdout'\]"),
    (lambda t: pd.concat([t, t.head(1)]), "is listed twice"),
    (lambda t: t[["path", "patient_id"]], "no label columns"),
])
def test_table_errors_name_the_file_and_the_problem(table_csv, tmp_path, edit, message):
    bad = tmp_path / "bad.csv"
    edit(pd.read_csv(table_csv, dtype=str, keep_default_na=False)).to_csv(bad, index=False)
    with pytest.raises(ChestaidError, match=message) as caught:
        read_table(bad)
    assert str(caught.value).startswith(str(bad)) and "\n" not in str(caught.value)


def test_given_splits_are_kept(table_csv, tmp_path):
    table = pd.read_csv(table_csv, dtype=str, keep_default_na=False)
    patients = sorted(table["patient_id"].unique())
    chosen = {p: ("test" if i % 5 == 0 else "val" if i % 5 == 1 else "train") for i, p in enumerate(patients)}
    table["split"] = table["patient_id"].map(chosen)
    table.to_csv(tmp_path / "split.csv", index=False)
    from chestaid.data.cache import Cache, prepare

    prepare(read_table(tmp_path / "split.csv", labels=["mass"]), tmp_path / "cache", size=64, workers=2)
    cache = Cache.open(tmp_path / "cache")
    assert cache.task.kind == "binary" and cache.task.labels == ("mass",)
    assert (cache.table["split"] == cache.table["patient_id"].map(chosen)).all()
