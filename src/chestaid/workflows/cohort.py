"""A run's local cohort: an NIH or Kaggle folder, or a node's store (its instances with clinicians' verdicts),
decoded into RUN/cohort_cache at the run's size; and the guard that keeps a run from being evaluated on the very
cohort it was calibrated on."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from chestaid.core.errors import ChestaidError
from chestaid.core.run_paths import RunPaths
from chestaid.data.cache import Cache, prepare
from chestaid.inference.predictor import Predictor
from chestaid.workflows.verdicts import is_store, verdict_cache


def cohort_cache(paths: RunPaths, predictor: Predictor, cohort: str | Path) -> Cache:
    """A cache of the local cohort under RUN/cohort_cache, at the training cache's size (rebuilt per cohort)."""
    cache_dir = paths.cohort_cache
    if is_store(cohort):  # the node's instances with clinicians' verdicts
        return verdict_cache(cohort, cache_dir, list(predictor.task.labels), predictor.image_size,
                             predictor.task.name)
    meta = cache_dir / "meta.json"
    if meta.is_file() and Cache.open(cache_dir).meta.get("source") != str(Path(cohort).resolve()):
        shutil.rmtree(cache_dir)
    prepare(cohort, cache_dir, size=predictor.image_size)  # the training cache's size, recorded by train
    return Cache.open(cache_dir)


def refuse_calibration_cohort(paths: RunPaths, cache: Cache) -> None:
    """A run calibrated on a whole local cohort must not be evaluated on that cohort (any split of it): its
    thresholds were chosen on those very cases."""
    if not paths.calibration.is_file():
        return
    info = json.loads(paths.calibration.read_text())
    if info.get("split") != "whole cohort":
        return
    same = str(cache.meta.get("source")) == str(info.get("fitted_on"))
    if same or cache.root.resolve() == paths.cohort_cache.resolve():
        raise ChestaidError(f"{cache.root}: the run was calibrated on this cohort ({info['fitted_on']}), all of it: "
                            "evaluate it on other cases")
