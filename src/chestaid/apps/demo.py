"""`chestaid demo`: the whole system end to end on built-in synthetic data, resumable step by step.

OUT/demo_state.json              the settings and the steps already done (rewritten atomically after each step)
OUT/nih/{data,cache,run}         synthetic NIH layout → cache → trained, calibrated, explained, evaluated run
OUT/pneumonia/{data,cache,run}   the same for the pneumonia triage model (no boxes, so no localisation step)

Everything here is synthetic (phantom radiographs): the figures show that each part works, not how well a
model reads real chest X-rays.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from chestaid.core.errors import ChestaidError
from chestaid.core.fileio import write_json
from chestaid.core.run_paths import RunPaths

TASKS = ("nih", "pneumonia")
DEFAULT_IMAGES = {"nih": 2000, "pneumonia": 1200}
CONFIGS = {"nih": "demo", "pneumonia": "demo_pneumonia"}
TITLES = {"nih": "14-finding NIH model (DenseNet-121 + FPN + age/sex/view)", "pneumonia": "pneumonia triage model"}
STATE = "demo_state.json"
log = logging.getLogger(__name__)


@dataclass
class DemoStep:
    key: str  # "nih/train"
    title: str
    action: Callable[[], object]


def demo_settings(images: dict[str, int] | None = None, size: int = 128, epochs: int | None = None,
                  seed: int = 0) -> dict:
    """What a demo folder was made with; resuming needs the same."""
    return {"images": {**DEFAULT_IMAGES, **(images or {})}, "size": size, "epochs": epochs, "seed": seed}


def open_demo_dir(out: Path, settings: dict, force: bool = False) -> dict:
    """Resume the demo in `out`, start one in an empty or new folder, or refuse a folder holding other things.

    `force` removes only what a demo writes (nih/, pneumonia/, demo_state.json); other files stay."""
    state_file = out / STATE
    if force:
        for name in (*TASKS, STATE):
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    elif state_file.is_file():
        state = json.loads(state_file.read_text())
        if state.get("settings") != settings:
            raise ChestaidError(f"{out}: holds a demo made with other settings ({state.get('settings')}); "
                                "repeat its options to resume, or pass --force to start over")
        return state
    elif out.exists() and any(out.iterdir()):
        raise ChestaidError(f"{out}: folder is not empty and holds no demo; choose another --out or pass --force")
    out.mkdir(parents=True, exist_ok=True)
    state = {"settings": settings, "done": {}}
    write_json(state_file, state)
    return state


def _fresh(folder: Path) -> Path:
    """A demo-owned folder left half-made by an interruption is drawn again from scratch."""
    if folder.exists():
        shutil.rmtree(folder)
    return folder


def _train(task: str, cache: Path, run: Path, epochs: int | None, seed: int) -> None:
    from chestaid.core.config import load_config
    from chestaid.training.fit import newest_checkpoint
    from chestaid.workflows.train import train

    paths = RunPaths(run)
    if paths.config.is_file() and newest_checkpoint(paths) is not None:  # interrupted anywhere after a checkpoint
        train(load_config(None), None, run, resume=True)
        return
    overrides = [f"train.seed={seed}"] + ([f"train.epochs={epochs}"] if epochs else [])
    train(load_config(CONFIGS[task], overrides), cache, _fresh(run))


def task_steps(task: str, base: Path, settings: dict) -> list[DemoStep]:
    """The steps for one task, in order."""
    from chestaid.data.cache import prepare
    from chestaid.data.phantoms.synthetic import synth_nih, synth_pneumonia
    from chestaid.workflows.runs import calibrate_run, evaluate_run
    from chestaid.workflows.localisation import score_boxes

    n, size, seed = settings["images"][task], settings["size"], settings["seed"]
    data, cache, run = base / "data", base / "cache", base / "run"
    synth = synth_nih if task == "nih" else synth_pneumonia
    epochs = f", {settings['epochs']} epochs" if settings["epochs"] else ""
    steps = [
        DemoStep(f"{task}/synth", f"draw {n} synthetic {task} images ({size} px) in the real folder layout",
                 lambda: synth(_fresh(data), n, size, seed)),
        DemoStep(f"{task}/prepare", "decode them once into a cache (patient-level splits)",
                 lambda: prepare(data, cache, size=size)),
        DemoStep(f"{task}/train", f"train the {TITLES[task]} (config {CONFIGS[task]}{epochs})",
                 lambda: _train(task, cache, run, settings["epochs"], seed)),
        DemoStep(f"{task}/calibrate", "fit calibrators, decision thresholds and the input gate (never on test)",
                 lambda: calibrate_run(run)),
    ]
    if task == "nih":
        steps.append(DemoStep(f"{task}/explain", "score Grad-CAM maps against the planted boxes of the test split",
                              lambda: score_boxes(run, data)))
    steps.append(DemoStep(f"{task}/evaluate", "evaluate on the test split and write report.html",
                          lambda: evaluate_run(run)))
    return steps


def run_demo(out: str | Path, tasks: list[str], force: bool = False, images: dict[str, int] | None = None,
             size: int = 128, epochs: int | None = None, seed: int = 0) -> dict:
    """Run (or resume) the demo for `tasks`; returns the state with each step's seconds."""
    out = Path(out)
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise ChestaidError(f"unknown demo task(s) {unknown}; choose from {', '.join(TASKS)}")
    settings = demo_settings(images, size, epochs, seed)
    state = open_demo_dir(out, settings, force)
    steps = [step for task in tasks for step in task_steps(task, out / task, settings)]
    for number, step in enumerate(steps, 1):
        if step.key in state["done"]:
            log.info("[%d/%d] %s: done earlier (%.0f s)", number, len(steps), step.key, state["done"][step.key])
            continue
        log.info("\n[%d/%d] %s: %s", number, len(steps), step.key, step.title)
        start = time.perf_counter()
        step.action()
        state["done"][step.key] = round(time.perf_counter() - start, 1)
        write_json(out / STATE, state)
    return state


def summary(out: str | Path, tasks: list[str]) -> list[dict]:
    """Per task: where the run and report are, the headline test metrics and (NIH) the pointing game."""
    rows = []
    for task in tasks:
        paths = RunPaths(Path(out) / task / "run")
        result = json.loads(paths.split_metrics("test").read_text())
        metrics = result["summary"]
        rows.append({"task": task, "run": str(paths.root), "report": str(paths.report),
                     "test_auroc": metrics.get("roc_auc_macro", metrics.get("roc_auc")),
                     "pointing_game": paths.pointing_game(), "gate": result.get("input_gate", {})})
    return rows
