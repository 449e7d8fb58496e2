"""The public API: what `import chestaid` offers and what every command of the CLI calls.

It sits between the apps (the CLI, the page, the node) and the workflows in the layer contract
(pyproject.toml): the CLI parses arguments and calls these functions; nothing here prints. Importing it is light
(no torch, no matplotlib backend, no warning filter or logging handler); each function loads what it needs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from chestaid.core.errors import ChestaidError

if TYPE_CHECKING:
    import pandas as pd

    from chestaid.data.cache import PrepareReport
    from chestaid.inference.predictor import Predictor
    from chestaid.workflows.gate_fit import GateFit
    from chestaid.workflows.verdicts import VerdictImport
    from chestaid.workflows.predict import Worklist


def load(run: str | Path, device: str = "cpu", backend: str = "auto") -> "Predictor":
    """Load a run directory for scoring: its model, calibration, thresholds and input gate.

    backend: "auto" (on the CPU, the fastest variant `chestaid export` recorded as passing parity for this CPU;
    else torch), or "torch", "onnx", "openvino", "openvino-bf16", "openvino-int8"; `.task.labels`: the findings."""
    from chestaid.inference.predictor import Predictor

    return Predictor.load(run, device, backend=backend)  # a path that is not a run: RunPaths.require's one line


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
              calib_fraction: float = 0.5, seed: int = 0, bins: int = 15, out: str | Path | None = None,
              since: str | None = None, until: str | None = None) -> dict:
    """Fit calibrators, thresholds and the input gate on validation data (or a local `cohort`: an NIH or Kaggle
    folder, or a node's store, whose instances with clinicians' verdicts are the cases), never on test
    (`chestaid calibrate`). `data`: a cache other than the run's; `calib_fraction` of validation (by patient)
    fits, the rest chooses; `bins` for the ECE that chooses. `out`: a new run version with its lineage, `run`
    untouched. `since`/`until` (YYYY-MM-DD): a store's cases received on those days."""
    from functools import partial

    from chestaid.workflows.runs import calibrate_run

    if not 0.1 <= calib_fraction <= 0.9:
        raise ChestaidError(f"calib_fraction must be within 0.1-0.9, got {calib_fraction}")
    if not 2 <= bins <= 100:
        raise ChestaidError(f"bins must be within 2-100, got {bins}")
    if out is not None:
        from chestaid.workflows.recalibrate import recalibrate_into

        if cohort is None:
            raise ChestaidError("out= (a new run version) needs a local cohort= to recalibrate on")
        step = partial(calibrate_run, data=data, cohort=cohort, fraction=calib_fraction, seed=seed, bins=bins,
                       since=since, until=until)
        return recalibrate_into(run, cohort, out, step)
    return calibrate_run(run, data, cohort, calib_fraction, seed, bins, since=since, until=until)


def thresholds(run: str | Path, policy: str, params: dict[str, float] | None = None, *,
               data: str | Path | None = None):
    """Refit the decision thresholds on validation data (never test), without retraining (`chestaid thresholds`):
    policy youden | f1-precision | seed000 | sensitivity, with e.g. params={"target": 0.9}."""
    from chestaid.workflows.runs import fit_thresholds

    return fit_thresholds(run, policy, params or {}, data)


def evaluate(run: str | Path, split: str = "test", *, data: str | Path | None = None,
             label_map: dict[str, str] | str | None = None, since: str | None = None,
             until: str | None = None, by_study: bool = False) -> dict:
    """Every metric on the test split (or "val"), plots and RUN/report.html (`chestaid evaluate`); calibrates
    first when the run has not been. Returns the metrics, including `summary`.

    `data`: a cache of the run's own task, or another dataset's: when its task differs or `label_map`
    ({model label: data label}, or "A=B,C=D") is given, the run is scored on that cache's test split (split="all": all of it)
    on the shared labels only, into RUN/external/<cache name>-<path digest>/ (external validation; nothing is fitted).
    A node's store as `data`: its labelled cases (`since`/`until`, `by_study`): chestaid.workflows.local_validation."""
    from chestaid.workflows.external import evaluate_external, is_external, parse_label_map
    from chestaid.workflows.local_validation import evaluate_on_store
    from chestaid.workflows.runs import evaluate_run
    from chestaid.workflows.verdicts import is_store

    if is_store(data):  # a node's store: its instances with clinicians' verdicts
        return evaluate_on_store(run, data, since, until, by_study)
    if since or until or by_study:
        raise ChestaidError("since/until/by_study choose a node's store's cases (data=STORE)")
    label_map = parse_label_map(label_map) if isinstance(label_map, str) else label_map
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
    from chestaid.store import Store

    if not Path(store).is_dir():
        raise ChestaidError(f"{store}: no such node store (chestaid node RUN --store DIR makes one)")
    return Store.open(store)


def predict(run: str | Path, inputs: list[str | Path], out: str | Path = "worklist.csv", *,
            cam: str | Path | None = None, cam_finding: str | None = None, cam_rows: str | int = "all",
            device: str = "cpu", backend: str = "auto", batch_size: int = 16, decode_workers: int | None = None,
            devices: int = 1, age: float | None = None, sex: str | None = None,
            view: str | None = None) -> "Worklist":
    """Score files and folders into the worklist CSV `out`, highest calibrated risk first (`chestaid predict`);
    refused and unreadable files are listed apart with the reason. `cam`: a folder for heat-map overlays of the
    rows `cam_rows` names (all, flagged, or the N highest-risk). age/sex/view fill only what a file's DICOM tags
    lack. Returns the Worklist (scored, skipped, refused, heat maps, the backend that scored)."""
    from chestaid.workflows.predict import parse_cam_rows, predict_worklist

    if sex is not None and sex.upper() not in ("M", "F"):
        raise ChestaidError(f"sex must be M or F, got {sex!r}")
    if view is not None and view.upper() not in ("PA", "AP"):
        raise ChestaidError(f"view must be PA or AP, got {view!r}")
    rows = parse_cam_rows(cam_rows) if isinstance(cam_rows, str) else cam_rows
    patient = {"age": age, "sex": sex.upper() if sex else None, "view": view.upper() if view else None}
    return predict_worklist(run, inputs, out, cam, cam_finding, device, batch_size, patient, cam_rows=rows,
                            backend=backend, decode_workers=decode_workers, devices=devices)


def export(run: str | Path, data: str | Path | None = None, *, onnx_only: bool = False) -> dict:
    """Write RUN/model.onnx (checked against torch) and, unless `onnx_only`, the OpenVINO variants this CPU runs,
    each checked for parity on the test split of the run's cache (or `data`) and timed (`chestaid export`).
    Returns {"onnx": {path, max_abs_logit_difference, image_size}, "backends": the record or None,
    "parity_limit", "parity_bounds"}."""
    from chestaid.inference.backends import PARITY_BOUNDS
    from chestaid.inference.onnx_backend import PARITY_LIMIT, export_onnx
    from chestaid.workflows.export import export_backends

    onnx = export_onnx(run)
    record = None if onnx_only else export_backends(run, data)
    return {"onnx": onnx, "backends": record, "parity_limit": PARITY_LIMIT, "parity_bounds": PARITY_BOUNDS}


def localise(run: str | Path, data: str | Path, *, boxes: str | Path | None = None, split: str = "test",
            target_layers: list[str] | None = None, threshold: float = 0.5, out: str | Path | None = None,
            box_frame: int | None = 1024, method: str = "gradcam") -> "pd.DataFrame":
    """Grad-CAM localisation against NIH-format boxes (`chestaid explain`; not named explain, which is the
    package of Grad-CAM itself): pointing game and IoBB per finding into RUN/explain/ (or `out`); the table's
    `attrs["warnings"]` say when the boxes' frame looks wrong."""
    from chestaid.workflows.localisation import score_boxes

    return score_boxes(run, data, boxes, split, target_layers, threshold, out=out, box_frame=box_frame,
                       method=method)


def stats(path: str | Path, *, plot: str | Path | None = None, balance: str = "none", seed: int = 0) -> dict:
    """Label frequencies, patients and age/sex/view of an NIH CSV, an NIH or Kaggle folder or a cache
    (`chestaid stats`); `balance` shows a recipe's effect on the train part, `plot` writes the figures there."""
    from chestaid.workflows.describe import describe_data

    return describe_data(path, plot, balance, seed)


def synth(layout: str, out: str | Path, n: int, size: int = 256, seed: int = 0, *, enrich: bool = True,
          per_folder: int = 10_000, family: str = "a") -> Path:
    """Synthetic phantom radiographs in the real NIH (`layout="nih"`) or Kaggle (`"pneumonia"`) layout
    (`chestaid synth`); returns the folder. Phantoms, not radiographs: for demos and tests."""
    from chestaid.data.phantoms.synthetic import synth_nih, synth_pneumonia

    if layout == "nih":
        return synth_nih(out, n, size, seed, enrich, per_folder, family=family)
    if layout == "pneumonia":
        return synth_pneumonia(out, n, size, seed)
    raise ChestaidError(f"layout must be nih or pneumonia, got {layout!r}")


def import_xrv(source: str | Path, out: str | Path, trust_pickle: bool = False) -> Path:
    """A torchxrayvision DenseNet-121 (a file, or a name with torchxrayvision installed) as a backbone file for
    `model.weights` (`chestaid weights import-xrv`); a pickle is read only with `trust_pickle`."""
    from chestaid.models.xrv_import import import_xrv as convert
    return convert(source, out, trust_pickle)


def import_model(source: str | Path, run: str | Path, task: str | None = None, labels: list[str] | None = None,
                 trust_pickle: bool = False, size: int | None = None) -> Path:
    """A published classifier as a complete run directory `run` (`chestaid weights import-xrv SOURCE --as-run
    RUN`): a torchxrayvision file or weights name, or a CheXNet-style state dict, classifier included, its outputs
    mapped by name onto `task` ("nih", "pneumonia" or "A,B,…"; default nih when covered). `labels`: the file's
    output order when it does not say (["chexnet"]: CheXNet's). Its scores are uncalibrated until `calibrate`
    runs on local cases; it has no input gate until `fit_gate`."""
    from chestaid.workflows.import_run import import_as_run
    return import_as_run(source, run, task, labels, trust_pickle, size).root


def fit_gate(run: str | Path, images: list[str | Path] | str | Path, percentile: float = 99.0,
             seed: int = 0) -> "GateFit":
    """Fit the run's input gate on unlabelled local images (files or folders; `chestaid gate fit`): half fit
    it, half set its conformal threshold, refused when too few to promise the rate (1 − percentile/100)."""
    from chestaid.workflows.gate_fit import fit_gate_from_images
    if not 50 <= percentile < 100:
        raise ChestaidError(f"percentile must be within 50-100, got {percentile}")
    given = [images] if isinstance(images, (str, Path)) else list(images)
    return fit_gate_from_images(run, given, percentile, seed)


def import_verdicts(store: str | Path, csv: str | Path, user: str = "import") -> "VerdictImport":
    """Append clinicians' verdicts from a CSV to a node's store (`chestaid verdicts import`; the columns:
    chestaid.workflows.verdicts). Append-only and audited."""
    from chestaid.workflows.verdicts import import_verdicts as run_import
    return run_import(store, csv, user)


def export_verdicts(store: str | Path, out: str | Path, findings: list[str] | None = None) -> tuple[Path, int, int]:
    """The store's latest verdicts as a table `prepare --table` reads (`chestaid verdicts export`); returns
    (out, rows, instances left out)."""
    from chestaid.workflows.verdicts import export_verdicts as run_export
    return run_export(store, out, findings)


def monitor(store: str | Path, window: str = "200", level: float = 0.01, run: str | Path | None = None,
            html: str | Path | None = None) -> dict:
    """Drift and performance of a node's store per model and window (`chestaid monitor`), Holm at `level`."""
    from chestaid.workflows.monitor import monitor as run_monitor, write_html
    result = run_monitor(store, window, level, run)
    if html is not None:
        write_html(result, html)
    return result


def is_lead_process() -> bool:
    """Whether this process writes and reports (global rank 0; always, outside a multi-process run)."""
    from chestaid.training.fit import is_global_zero
    return is_global_zero()


def with_interval(summary: dict, key: str) -> str:
    """A figure with its 95% interval as the CLI and the reports print it, e.g. "0.912 (0.871–0.948)"."""
    from chestaid.evaluation.bootstrap import with_interval as text
    return text(summary, key)


def triage_report(store: str | Path, rules: str | Path) -> dict:
    """The likely-normal tier's shadow evidence on a store (`chestaid triage report`): workflows.triage_report."""
    from chestaid.workflows.triage_report import triage_report as report
    return report(store, rules)
