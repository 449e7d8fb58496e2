"""chestaid: DenseNet-121 chest X-ray classifiers that support triage; they do not diagnose.

The public API mirrors the command line. Importing chestaid is light and changes nothing in your process
(no matplotlib backend, Pillow limit, warning filter or logging handler is touched); torch loads on first use.

>>> import chestaid
>>> predictor = chestaid.load("runs/nih")                      # doctest: +SKIP
>>> result = predictor.predict("chest.dcm")                    # or a 2-D numpy array, with age=, sex=, view=
>>> result.risk["Effusion"], result.decision["Effusion"]       # doctest: +SKIP
(0.41, True)
>>> cam = result.heatmap("Effusion")                           # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from chestaid.core.errors import ChestaidError

if TYPE_CHECKING:
    from chestaid.data.cache import PrepareReport
    from chestaid.inference.prediction import Prediction
    from chestaid.inference.predictor import Predictor

from chestaid.core.version import __version__
__all__ = ["ChestaidError", "Prediction", "Predictor", "__version__", "calibrate", "compare", "evaluate", "load",
           "open_worklist", "prepare", "thresholds", "train"]


def load(run: str | Path, device: str = "cpu", backend: str = "auto") -> "Predictor":
    """Load a run directory for scoring: its model, calibration, thresholds and input gate.

    backend: "auto" (on the CPU, the fastest variant `chestaid export` recorded as passing parity for this CPU;
    else torch), or one of "torch", "onnx", "openvino", "openvino-bf16", "openvino-int8". `predictor.task.labels` lists the findings, in output order."""
    from chestaid.inference.predictor import Predictor
    from chestaid.core.run_paths import RunPaths

    if not RunPaths(run).config.is_file():
        raise ChestaidError(f"{run}: not a chestaid run (no config.yaml)")
    return Predictor.load(run, device, backend=backend)


def prepare(source: str | Path | None = None, out: str | Path | None = None, *, table: str | Path | None = None,
            task: str | None = None, labels: list[str] | None = None, size: int = 256, workers: int | None = None,
            fractions: tuple[float, float, float] = (0.72, 0.08, 0.20), seed: int = 0) -> "PrepareReport":
    """Decode images once into a resumable cache at `out` with patient-level splits (`chestaid prepare`).

    Give an NIH or Kaggle pneumonia folder as `source`, or your own CSV as `table` (docs/own_data.md); `task`
    and `labels` then name the task and choose its label columns.

    >>> report = chestaid.prepare(table="studies.csv", out="cache", size=256)   # doctest: +SKIP
    >>> report.task.labels, report.cached, report.skipped                       # doctest: +SKIP
    """
    from chestaid.data.cache import prepare as prepare_cache
    from chestaid.data.table import read_table

    if out is None or (source is None) == (table is None):
        raise ChestaidError("prepare needs out= and one of source= (a folder) or table= (a CSV)")
    data = source if table is None else read_table(table, task, labels)
    return prepare_cache(data, out, size, workers, fractions, seed)


def train(data: str | Path | None, out: str | Path, config: str | Path | None = None,
          overrides: dict[str, Any] | None = None, resume: bool = False, force: bool = False) -> Path:
    """Train into the run directory `out` (`chestaid train`); returns it. `config` is a YAML file or a bundled
    name ("demo", "nih_densenet_fpn", ...); `overrides` are dotted keys, e.g. {"train.epochs": 2}. The task is
    the data's; `resume=True` continues `out` from its newest checkpoint (data and config come from the run),
    whenever it was interrupted; `force=True` starts over in `out` (removing only what train wrote there).

    >>> run = chestaid.train("cache", "runs/mine", config="demo", overrides={"train.epochs": 1})  # doctest: +SKIP
    """
    from chestaid.core.config import load_config
    from chestaid.workflows.train import train as run_train

    if not resume and out is None:
        raise ChestaidError("train needs out= (the run directory to create), or resume=True with out= the run")
    cfg = load_config(None if resume else config, overrides or {})
    return run_train(cfg, data, out, resume=resume, force=force).root


def calibrate(run: str | Path, cohort: str | Path | None = None, *, data: str | Path | None = None,
              calib_fraction: float = 0.5, seed: int = 0, bins: int = 15) -> dict:
    """Fit calibrators, thresholds and the input gate on validation data (or a local `cohort`), never on test
    (`chestaid calibrate`). `data`: a cache other than the run's; `calib_fraction` of validation (by patient)
    fits, the rest chooses; `bins` for the ECE that chooses."""
    from chestaid.workflows.runs import calibrate_run

    if not 0.1 <= calib_fraction <= 0.9:
        raise ChestaidError(f"calib_fraction must be within 0.1-0.9, got {calib_fraction}")
    if not 2 <= bins <= 100:
        raise ChestaidError(f"bins must be within 2-100, got {bins}")
    return calibrate_run(run, data, cohort, calib_fraction, seed, bins)


def thresholds(run: str | Path, policy: str, params: dict[str, float] | None = None, *,
               data: str | Path | None = None):
    """Refit the decision thresholds on validation data (never test), without retraining (`chestaid thresholds`):
    policy youden | f1-precision | seed000 | sensitivity, with e.g. params={"target": 0.9}."""
    from chestaid.workflows.runs import fit_thresholds

    return fit_thresholds(run, policy, params or {}, data)


def evaluate(run: str | Path, split: str = "test", *, data: str | Path | None = None,
             label_map: dict[str, str] | None = None) -> dict:
    """Every metric on the test split (or "val"), plots and RUN/report.html (`chestaid evaluate`); calibrates
    first when the run has not been. Returns the metrics, including `summary`.

    `data`: a cache of the run's own task, or another dataset's: when its task differs or `label_map`
    ({model label: data label}) is given, the run is scored on that cache's test split (split="all": all of it)
    on the shared labels only, into RUN/external/<cache name>-<path digest>/ (external validation; nothing is fitted)."""
    from chestaid.workflows.external import evaluate_external, is_external
    from chestaid.workflows.runs import evaluate_run

    if data is not None and (label_map or split == "all"):
        return evaluate_external(run, data, label_map, split)
    if split not in ("test", "val"):
        raise ChestaidError(f"split must be test, val or (with data=) all, got {split!r}")
    if data is not None:
        from chestaid.core.config import load_config
        from chestaid.core.run_paths import RunPaths

        if is_external(load_config(RunPaths(run).config).require_task(), data, label_map):
            return evaluate_external(run, data, label_map, split)
    return evaluate_run(run, split, data)


def compare(run_a: str | Path, run_b: str | Path, split: str = "test", *, resamples: int = 2000,
            seed: int = 0) -> dict:
    """Run B against run A on the same evaluated images (`chestaid compare`): per finding each AUC, B − A with its
    paired DeLong interval clustered by patient, z, p and Holm's p; McNemar on the decisions; the mean-AUROC
    difference with a paired patient-bootstrap interval. Writes RUN_A/compare/<B>/comparison.{json,html}."""
    from chestaid.workflows.compare import compare_runs

    return compare_runs(run_a, run_b, split, resamples, seed)


def open_worklist(store: str | Path):
    """The DICOM node's store (`chestaid node RUN --store DIR`) for reading: `.instances(state=None)` lists every
    received instance with its state, reason, risk and top finding; `.outbox()` the results and their sending
    state; `.close()` when done."""
    from chestaid.apps.node.store import Store

    if not Path(store).is_dir():
        raise ChestaidError(f"{store}: no such node store (chestaid node RUN --store DIR makes one)")
    return Store.open(store)


def __getattr__(name: str) -> Any:  # the classes load torch: only when asked for
    if name == "Predictor":
        from chestaid.inference.predictor import Predictor

        return Predictor
    if name == "Prediction":
        from chestaid.inference.prediction import Prediction

        return Prediction
    raise AttributeError(f"module 'chestaid' has no attribute {name!r}")
