"""`chestaid evaluate RUN --data OTHER_CACHE [--label-map model=data,…] [--split all]`: a run scored on another
dataset, only on the labels both share (external validation). The run's own calibration and thresholds are used
as they are (nothing is fitted on the other data); results go to RUN/external/<cache name>-<path digest>/ and never replace the
run's own test metrics."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np

from chestaid.core.errors import ChestaidError
from chestaid.core.fileio import write_json, write_text
from chestaid.core.run_paths import RunPaths
from chestaid.data.cache import Cache
from chestaid.evaluation import metrics as M
from chestaid.evaluation.bootstrap import wilson_interval
from chestaid.evaluation.discrimination import auc_table
from chestaid.evaluation.predictions import predictions_table
from chestaid.evaluation.reviewer import reviewer_figures
from chestaid.evaluation.subgroups import subgroup_report
from chestaid.inference.predictor import Predictor
from chestaid.reporting.external_report import write_external_report


def parse_label_map(text: str | None) -> dict[str, str] | None:
    """'Pneumonia=PNEUMONIA,Effusion=Effusion' → {model label: data label}; None for None."""
    if not text:
        return None
    pairs = [item.split("=", 1) for item in text.split(",") if item.strip()]
    if any(len(p) != 2 or not p[0].strip() or not p[1].strip() for p in pairs):
        raise ChestaidError(f"--label-map expects model=data pairs separated by commas, got {text!r}")
    return {model.strip(): data.strip() for model, data in pairs}


def _mapping(model_labels: tuple[str, ...], data_labels: tuple[str, ...], label_map: dict[str, str] | None,
             cache: Cache) -> dict[str, str]:
    mapping = label_map or {n: n for n in model_labels if n in data_labels}
    unknown = [m for m in mapping if m not in model_labels] + [d for d in mapping.values() if d not in data_labels]
    if unknown:
        raise ChestaidError(f"--label-map names {unknown}, not labels of the run ({', '.join(model_labels)}) or of "
                            f"{cache.root} ({', '.join(data_labels)})")
    if not mapping:
        raise ChestaidError(f"{cache.root}: shares no label with the run ({', '.join(model_labels)} vs "
                            f"{', '.join(data_labels)}); give --label-map model=data")
    return mapping


def evaluate_external(run: str | Path, data: str | Path, label_map: dict[str, str] | None = None,
                      split: str = "test") -> dict:
    """Score `run` on the `split` (test or all) of the cache `data`, on the shared labels; see the docstring."""
    paths, predictor = RunPaths(run), Predictor.load(run)
    if not (predictor.calibrated and predictor.thresholded):
        raise ChestaidError(f"{paths.root}: calibrate it on its own validation data first (chestaid calibrate RUN); "
                            "nothing is fitted on external data")
    cache = Cache.open(data)
    mapping = _mapping(predictor.task.labels, cache.task.labels, label_map, cache)
    if split not in ("test", "all"):
        raise ChestaidError(f"an external evaluation uses the other data's test split or all of it, not {split!r}")
    logits, features, rows = predictor.cache_outputs(cache, None if split == "all" else "test")
    if not len(rows):
        raise ChestaidError(f"{cache.root}: no {split} images")
    index = [predictor.task.labels.index(m) for m in mapping]
    labels = tuple(mapping)
    raw = logits[:, index]
    y = rows[list(mapping.values())].to_numpy(dtype=int)
    risk = predictor.risk_scores(logits)[:, index]
    decisions = predictor.decisions(predictor.risk_scores(logits))[:, index]
    thresholds = np.array([predictor.thresholds.values[m] for m in labels])
    patients = rows["patient_id"].astype(str).to_numpy()
    aucs = auc_table(y, raw, patients, labels)
    per_finding = []
    for i, name in enumerate(labels):
        pos, neg = int(y[:, i].sum()), int(len(y) - y[:, i].sum())
        tp, tn = int((decisions[:, i] & (y[:, i] == 1)).sum()), int((~decisions[:, i] & (y[:, i] == 0)).sum())
        sens = wilson_interval(tp / pos, pos, 0.95) if pos else (None, None)
        spec = wilson_interval(tn / neg, neg, 0.95) if neg else (None, None)
        per_finding.append({"finding": name, "data_label": mapping[name], "positives": pos, "negatives": neg,
                            **aucs[name], "ece": M.ece(y[:, i], risk[:, i]),
                            "sensitivity": tp / pos if pos else None, "sensitivity_ci": list(sens),
                            "specificity": tn / neg if neg else None, "specificity_ci": list(spec)})
    distances = predictor.distances(features)
    refused = None if distances is None else int((distances > predictor.gate.threshold).sum())
    target = SimpleNamespace(rows=rows, logits=raw, y=y)
    out = paths.external_for(cache.root)
    result = {"external": True, "run": paths.root.name, "data": str(cache.root), "data_task": cache.task.name,
              "split": split, "images": int(len(rows)), "patients": int(len(set(patients))), "label_map": mapping,
              "per_finding": per_finding, "input_gate": {"fitted": distances is not None, "refused": refused,
                                                         "images": int(len(rows))},
              "note": "the run's own calibration and thresholds, fitted on its own validation data",
              **reviewer_figures(y, raw, risk, labels)}
    write_json(out / "metrics.json", result)
    write_json(out / "subgroups.json", subgroup_report(y, raw, decisions, rows, labels))
    table = predictions_table(target, risk, decisions, labels, thresholds)
    write_text(out / "predictions.csv", table.to_csv(index=False, float_format="%.17g"))
    result["report"] = str(write_external_report(out / "report.html", result))
    return result


def is_external(predictor_task, data: str | Path | None, label_map) -> bool:
    """Whether `evaluate --data` means another dataset: a label map was given or the cache's task differs."""
    if data is None:
        return False
    if label_map:
        return True
    return Cache.open(data).task != predictor_task
