"""RUN/model_card.md is written from the run's config, its training cache and its files: never invented."""

from __future__ import annotations

from chestaid.core.config import load_config, save_config, with_task
from chestaid.data.cache import Cache, prepare
from chestaid.data.phantoms.synthetic import synth_pneumonia
from chestaid.reporting.model_card import write_model_card
from chestaid.core.run_paths import RunPaths


def _card_for(cache_dir, run_dir) -> str:
    cache = Cache.open(cache_dir)
    cfg = with_task(load_config("demo_pneumonia"), cache.task)
    run_dir.mkdir()
    save_config(cfg.model_copy(update={"data": cfg.data.model_copy(update={"path": str(cache_dir)})}),
                RunPaths(run_dir).config)
    return write_model_card(run_dir).read_text()


def test_card_says_what_the_data_is(tmp_path):
    root = synth_pneumonia(tmp_path / "kaggle", n=40, size=32, seed=1, workers=1)
    prepare(root, tmp_path / "synthetic", size=32, workers=1)
    card = _card_for(tmp_path / "synthetic", tmp_path / "run1")
    assert "**Synthetic phantoms**" in card and "paediatric" not in card
    assert "`pneumonia`, binary: Pneumonia." in card and "It does not diagnose." in card
    assert "**Not calibrated**" in card and "**No input gate**" in card and "Not evaluated yet" in card
    assert "Age: not recorded." in card  # the Kaggle set has no ages: none are made up

    (root / "SYNTHETIC_DATA.txt").unlink()  # the same folder, as the real Kaggle set would be
    prepare(root, tmp_path / "kaggle_cache", size=32, workers=1)
    card = _card_for(tmp_path / "kaggle_cache", tmp_path / "run2")
    assert "paediatric patients aged one to five, from one centre" in card and "Synthetic" not in card
    positives = int(Cache.open(tmp_path / "kaggle_cache").table.query("split == 'train'")["Pneumonia"].sum())
    assert f"Positives in train: Pneumonia {positives}." in card


def test_card_names_the_findings_whose_calibrator_is_steep(tmp_path):
    import json

    root = synth_pneumonia(tmp_path / "kaggle", n=40, size=32, seed=1, workers=1)
    prepare(root, tmp_path / "cache", size=32, workers=1)
    run = tmp_path / "run"
    _card_for(tmp_path / "cache", run)
    findings = {"Pneumonia": {"method": "temperature", "temperature": 0.018315}}
    RunPaths(run).calibration.write_text(json.dumps({"fitted_on": "cache", "findings": findings}))
    card = write_model_card(run).read_text()
    assert "**Steep calibration** for Pneumonia (55x)" in card
    findings["Pneumonia"] = {"method": "platt", "a": 1.4, "b": -0.2}
    RunPaths(run).calibration.write_text(json.dumps({"fitted_on": "cache", "findings": findings}))
    assert "Steep calibration" not in write_model_card(run).read_text()
