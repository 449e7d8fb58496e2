"""Run configs: the shipped YAML files validate; unknown keys and bad values are clear one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from chestaid.core.config import load_config, save_config
from chestaid.core.errors import ChestaidError
from chestaid.core.tasks import NIH_FINDINGS, TASKS

CONFIGS = Path(__file__).resolve().parents[1] / "src" / "chestaid" / "configs"


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_shipped_configs_validate(name):
    cfg = load_config(CONFIGS / name)
    assert cfg.task is None or cfg.task in TASKS.values()  # None: the task is the training data's


def test_seed_configs_hold_the_seed_settings():
    nih = load_config(CONFIGS / "nih_densenet_fpn.yaml")
    assert (nih.data.batch_size, nih.train.lr, nih.train.plateau_patience, nih.train.plateau_factor) == (160, 1e-3, 2, 0.5)
    assert nih.loss.overrides == {"Pneumonia": 4.5, "Fibrosis": 3.8, "Consolidation": 4.3}
    assert nih.model.fpn and nih.model.tabular and nih.data.balance == "seed000"
    pneu = load_config(CONFIGS / "pneumonia_densenet.yaml")
    assert pneu.train.optimizer == "adamw" and pneu.train.monitor == "auroc" and pneu.train.early_stopping_patience
    assert not pneu.model.fpn and not pneu.model.tabular and pneu.model.freeze_blocks > 0


def test_set_overrides_and_round_trip(tmp_path):
    cfg = load_config(CONFIGS / "demo.yaml", ["train.lr=3e-4", "data.batch_size=8", "model.hidden=[64, 32]"])
    assert cfg.train.lr == 3e-4 and cfg.data.batch_size == 8 and cfg.model.hidden == [64, 32]
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg


@pytest.mark.parametrize("overrides, message", [
    (["train.lrr=1"], "--set train.lrr: not a config key; did you mean train.lr"),
    (["train.lr=abc"], "train.lr"),
    (["train.optimizer=sgd"], "train.optimizer"),
    (["task=nih", "loss.overrides={Pnemonia: 2}"], "unknown finding"),
    (["task=chexpert"], "unknown task 'chexpert': the built-in tasks are nih, pneumonia"),
    (["task={name: mine, labels: [a, b], kind: binary}"], "a binary task has exactly one label"),
    (["task={name: mine, labels: [a, a]}"], r"label\(s\) \['a'\] given twice"),
    (["nonsense"], "key=value"),
])
def test_bad_config_is_a_clear_error(overrides, message):
    with pytest.raises(ChestaidError, match=message) as info:
        load_config(CONFIGS / "demo.yaml", overrides)
    assert "\n" not in str(info.value)


def test_tasks_are_data_and_old_configs_still_load(tmp_path):
    old = tmp_path / "config.yaml"  # a run's config.yaml from before tasks were data
    old.write_text((CONFIGS / "demo.yaml").read_text() + "task: nih\n")
    cfg = load_config(old)
    assert cfg.task.name == "nih" and cfg.task.labels == NIH_FINDINGS and cfg.task.kind == "multi-label"
    mine = load_config(None, ["task={name: mine, labels: [a, b, c]}"])
    assert mine.task.kind == "multi-label" and mine.task.num_outputs == 3
    save_config(mine, tmp_path / "mine.yaml")
    assert load_config(tmp_path / "mine.yaml") == mine
    assert load_config(None, ["task=pneumonia"]).task.binary


def test_bundled_config_by_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo").mkdir()  # `chestaid demo --out demo` run from here: a folder is not a config file
    assert load_config("demo") == load_config(CONFIGS / "demo.yaml")
    assert load_config("nih_densenet_fpn.yaml").data.balance == "seed000"
    with pytest.raises(ChestaidError, match="no_such_config.*bundled configs: demo, demo_pneumonia"):
        load_config("no_such_config")
