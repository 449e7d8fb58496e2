"""`train.precision: auto` is chosen by measurement, recorded in the run, and kept when the run resumes."""

from __future__ import annotations

import json

import pytest
import torch

from chestaid.core import machine
from chestaid.core.config import load_config, with_task
from chestaid.core.tasks import get_task
from chestaid.training import precision
from chestaid.training.precision import MIN_SPEEDUP, choose_precision, measure_training_rates


def _cfg(*overrides: str):
    return with_task(load_config("demo", ["data.image_size=32", "data.batch_size=4", "train.precision=auto",
                                          *overrides]), get_task("nih"))


def test_measuring_times_both_precisions_and_leaves_the_random_state_alone():
    before = torch.random.get_rng_state()
    rates = measure_training_rates(_cfg(), steps=1)
    assert set(rates) == {"32-true", "bf16-mixed"} and all(v > 0 for v in rates.values())
    assert torch.equal(before, torch.random.get_rng_state())


@pytest.mark.parametrize("speedup, expected", [(MIN_SPEEDUP + 0.3, "bf16-mixed"), (MIN_SPEEDUP - 0.1, "32-true")])
def test_bf16_only_when_measured_faster_by_the_margin(monkeypatch, speedup, expected):
    monkeypatch.setattr(precision, "has", lambda feature: feature == "bf16")
    monkeypatch.setattr(precision, "measure_training_rates",
                        lambda cfg, steps=3: {"32-true": 10.0, "bf16-mixed": 10.0 * speedup})
    choice = choose_precision(_cfg())
    assert choice.precision == expected and choice.reason.startswith("measured")
    assert choice.images_per_s == {"32-true": 10.0, "bf16-mixed": 10.0 * speedup}


def test_no_measuring_without_bf16_instructions_or_with_several_processes_or_a_fixed_value(monkeypatch):
    def never(*_args, **_kwargs):
        raise AssertionError("measured")

    monkeypatch.setattr(precision, "measure_training_rates", never)
    monkeypatch.setattr(precision, "has", lambda feature: False)  # an AVX2-only CPU: bf16 ~450x slower there
    assert choose_precision(_cfg()).precision == "32-true"
    monkeypatch.setattr(precision, "has", lambda feature: feature == "bf16")
    assert choose_precision(_cfg("train.devices=2")).reason.startswith("several processes")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert choose_precision(_cfg()).precision == "32-true"
    monkeypatch.delenv("LOCAL_RANK")
    assert choose_precision(_cfg("train.precision=bf16-mixed")).precision == "bf16-mixed"


def test_the_run_records_the_choice_and_a_resume_keeps_it(tiny_run):
    chosen = json.loads(tiny_run.training_precision.read_text())
    saved = load_config(tiny_run.config).train.precision
    assert saved == chosen["precision"] != "auto"  # config.yaml holds the resolved value: resume reuses it
    if machine.has("bf16"):
        assert chosen["reason"].startswith("measured") and chosen["cpu_key"] == machine.cpu_key()
    manifest = json.loads(tiny_run.manifest.read_text())
    assert manifest["extra"]["training_precision"] == chosen
    assert f"Training precision `{chosen['precision']}`" in tiny_run.model_card.read_text()
