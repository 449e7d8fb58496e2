"""A run's local cohort: an NIH or Kaggle folder, or a node's store (its instances with clinicians' verdicts),
decoded at the run's size outside the run (workflows.local_cases: STORE/caches/, or chestaid's cache folder for a
cohort folder); and the guard that keeps a run from being evaluated on the very cohort it was calibrated on."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from chestaid.core.errors import ChestaidError
from chestaid.core.run_paths import RunPaths
from chestaid.data.cache import Cache, prepare
from chestaid.inference.predictor import Predictor
from chestaid.workflows.local_cases import folder_cohort_cache_dir, local_cases, store_cases_cache
from chestaid.workflows.verdicts import is_store


def cohort_cache(predictor: Predictor, cohort: str | Path, since: str | None = None, until: str | None = None,
                 only: list[str] | None = None) -> tuple[Cache, list[str]]:
    """A cache of the local cohort at the training cache's size, and the content digests of its cases (a store's;
    [] for a folder). Never inside a run. `only`: exactly these cases of a store (a refit of what a version was
    calibrated on, whatever verdicts came since)."""
    labels = list(predictor.task.labels)
    if is_store(cohort):  # the node's instances with clinicians' verdicts
        cases, left_out = local_cases(cohort, labels, since, until, set(only) if only else None)
        if len(cases) < 4:
            said = ", ".join(f"{n} {why.replace('_', ' ')}" for why, n in left_out.items() if n)
            raise ChestaidError(f"{cohort}: {len(cases)} case(s) with a present/absent verdict on each of "
                                f"{', '.join(labels)}{f' ({said})' if said else ''}: too few to calibrate on")
        cache = store_cases_cache(cohort, cases, labels, predictor.image_size, predictor.task.name, "calibrate")
        return cache, sorted(cases["case"])
    if since or until:
        raise ChestaidError("--since/--until choose a store's cases by the day they arrived; a cohort folder is "
                            "taken whole")
    cache_dir = folder_cohort_cache_dir(cohort)
    meta = cache_dir / "meta.json"
    if meta.is_file() and Cache.open(cache_dir).meta.get("source") != str(Path(cohort).resolve()):
        shutil.rmtree(cache_dir)
    prepare(cohort, cache_dir, size=predictor.image_size, for_training=False)  # the training cache's size
    return Cache.open(cache_dir), []


def refuse_calibration_cohort(paths: RunPaths, cache: Cache) -> None:
    """A run calibrated on a whole local cohort folder must not be evaluated on that cohort (any split of it): its
    thresholds were chosen on those very cases. (A store's cases are told apart by content:
    workflows.local_validation.)"""
    if not paths.calibration.is_file():
        return
    info = json.loads(paths.calibration.read_text())
    if info.get("split") != "whole cohort":
        return
    same = str(cache.meta.get("source")) == str(info.get("fitted_on"))
    if same or str(cache.root.resolve()) == str(info.get("cohort_cache")):
        raise ChestaidError(f"{cache.root}: the run was calibrated on this cohort ({info['fitted_on']}), all of it: "
                            "evaluate it on other cases")
