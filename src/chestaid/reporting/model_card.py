"""RUN/model_card.md: what the model is, what it was trained on and what it is for, written from the run's
config, its manifest (RUN/manifest.json: the training data), train_log.csv and (once they exist) its
calibration, thresholds, gate and test
metrics. Nothing in it is typed by hand; what the files do not say, the card says is unknown.

Written by `train`, and again by `calibrate` and `evaluate`; shown on the web page.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd

from chestaid.core.version import __version__
from chestaid.core.config import RunConfig, load_config
from chestaid.evaluation.bootstrap import with_interval
from chestaid.core.fileio import write_text
from chestaid.core.manifest import Manifest
from chestaid.core.run_paths import RunPaths
from chestaid.core.tasks import headline_metrics
from chestaid.data.provenance import manifest_of
from chestaid.models.backbone import backbone_spec

INTENDED_USE = (
    "Triage support and double-checking: ranking frontal chest radiographs so that a clinician looks at the "
    "likeliest positives first. **It does not diagnose.** Its numbers are {scores}, not clinical "
    "probabilities; its heat maps are qualitative, and every decision stays with a clinician.")
# What is known about the public datasets whose folder layouts chestaid reads (applies to real data only).
DATASET_FACTS = {
    "kaggle": "The Kaggle *Chest X-Ray Images (Pneumonia)* set (Kermany et al., 2018): paediatric patients aged "
              "one to five, from one centre (Guangzhou Women and Children's Medical Center). The model has not seen "
              "adults; expect it to be miscalibrated on them.",
    "nih": "NIH ChestX-ray14 (Wang et al., 2017): frontal radiographs from one hospital (NIH Clinical Center); "
           "labels were text-mined from radiology reports, not read from the images, and are noisy.",
}


def write_model_card(run: str | Path) -> Path:
    """(Re)write RUN/model_card.md from what the run directory holds now."""
    paths = RunPaths(run)
    cfg, manifest = load_config(paths.config), manifest_of(paths)
    scores = "calibrated risk scores" if paths.calibration.is_file() else (
        "**uncalibrated scores** (`chestaid calibrate` has not run: they rank images, they are not risks)")
    text = "\n".join([f"# Model card: {paths.root.name}", "", *_imported(paths, manifest),
                      f"chestaid {__version__}, {time.strftime('%Y-%m-%d')}: generated from the run's files.", "",
                      "## Intended use", "", INTENDED_USE.format(scores=scores), "",
                      *_task(cfg), *_data(manifest), *_model(cfg, paths, manifest), *_fitted(paths),
                      *_evaluation(paths)])
    write_text(paths.model_card, text + "\n")
    return paths.model_card


def _imported(paths: RunPaths, manifest: Manifest | None) -> list[str]:
    """The card's first lines for a run imported from published weights: not trained by chestaid, on what data,
    and whether its scores have been calibrated on local cases."""
    lines = []
    recalibrated = manifest.extra.get("recalibrated") if manifest is not None else None
    if recalibrated:
        cohort = recalibrated["cohort"]
        period = f" received from {cohort['from']} to {cohort['to']}" if cohort.get("from") else ""
        lines += [f"**Recalibrated on {cohort.get('images', '?')} local cases**{period} "
                  f"(`{Path(cohort['source']).name}`), from run `{recalibrated['parent_run']}` (same weights; its "
                  f"calibration {str(recalibrated.get('parent_calibration_sha256'))[:12]}… replaced here).", ""]
    imported = manifest.extra.get("imported") if manifest is not None else None
    if not imported:
        return lines
    datasets = imported.get("datasets")
    trained_on = (f"trained by their authors on {', '.join(datasets)} (as torchxrayvision's registry states)"
                  if datasets else "trained on data the file does not state")
    lines += [f"**Imported, not trained by chestaid**: {imported.get('family')} weights `{imported.get('file')}` "
             f"(sha256 {str(imported.get('sha256'))[:16]}…), {trained_on}."]
    if paths.calibration.is_file():
        info = json.loads(paths.calibration.read_text())
        cases = int(info.get("calib_images", 0)) + int(info.get("val_report_images", 0))
        lines.append(f"Its scores are **calibrated on {cases} local cases** of `{Path(str(info.get('fitted_on', '?'))).name}` "
                     f"({info.get('calib_images')} fitted the calibrators, {info.get('val_report_images')} chose them).")
    else:
        lines.append("Its scores are **uncalibrated** until `chestaid calibrate RUN --cohort …` has run on local "
                     "cases: they rank images but are not risks, and its decisions stand at 0.5.")
    return lines + [""]


def _task(cfg: RunConfig) -> list[str]:
    task = cfg.require_task()
    return ["## Task", "", f"`{task.name}`, {task.kind}: {', '.join(task.labels)}.", ""]


def _data(manifest: Manifest | None) -> list[str]:
    lines = ["## Training data", ""]
    if manifest is None:
        return lines + ["Not recorded: the run has no manifest.json (it predates them) and its training cache is "
                        "not available here, so nothing is known about the data.", ""]
    data = manifest.data
    if data.get("layout") == "imported":
        datasets = data.get("datasets")
        return lines + ["Not trained by chestaid: " + (f"the weights' authors trained them on {', '.join(datasets)}."
                        if datasets else "the weights file does not say what they were trained on.")
                        + " Nothing about those images (counts, ages, sexes, views) is recorded here.", ""]
    if manifest.synthetic:
        lines.append("**Synthetic phantoms** drawn by `chestaid synth`: a demonstration, not a model of real "
                     "X-rays. Do not use it on patients.")
    elif data.get("layout") in DATASET_FACTS:
        lines.append(DATASET_FACTS[data["layout"]])
    elif data.get("layout") == "table":
        lines.append(f"A table of the user's own images (`{data.get('source_name')}`); chestaid knows nothing "
                     "about where they come from beyond that table.")
    else:
        lines.append("The data's origin was not recorded.")
    splits = data.get("splits", {})
    lines += ["", f"- {data.get('images', 0):,} images of {data.get('patients', 0):,} patients cached at "
                  f"{data.get('cache_size')} px (" + ", ".join(
                      f"{s} {splits.get(s, {}).get('images', 0):,} images / {splits.get(s, {}).get('patients', 0):,} "
                      "patients" for s in ("train", "val", "test")) + "; split by patient)."]
    age = data.get("age", {})
    lines.append(f"- Age: median {age['median']:.0f}, range {age['min']:.0f}–{age['max']:.0f} years "
                 f"(known for {age['known']:,} images)." if age.get("known") else "- Age: not recorded.")
    for column, names in (("sex", {"M": "male", "F": "female"}), ("view", {"PA": "PA", "AP": "AP"})):
        counts = data.get(column, {})
        total = sum(counts.values()) or 1
        lines.append(f"- {column.capitalize()}: " + ", ".join(
            f"{names.get(k, 'unknown')} {v / total:.0%}" for k, v in counts.items()) + ".")
    lines.append("- Positives in train: " + ", ".join(
        f"{name} {count:,}" for name, count in data.get("positives_train", {}).items()) + ".")
    return lines + [""]


def _model(cfg: RunConfig, paths: RunPaths, manifest: Manifest | None) -> list[str]:
    m = cfg.model
    imported = manifest.extra.get("imported") if manifest is not None else None
    start = f"published weights `{imported['file']}`" if imported else {
        "imagenet": "ImageNet", "none": "random initialisation"}.get(m.weights, f"`{Path(m.weights).name}`")
    parent = manifest.weights.get("parent") if manifest is not None else None
    if parent:
        start += f" (the weights of run `{parent['run']}`" + (
            f", imported from `{parent['imported']}`)" if parent.get("imported") else ")")
    parts = [backbone_spec(m.backbone).title] + (["Feature Pyramid Network"] if m.fpn else []) + (
        ["patient age/sex/view fusion"] if m.tabular else [])
    lines = ["## Model", "", f"{' + '.join(parts)}, started from {start}. Input: one grey image resized to "
             f"{cfg.data.cache_size} px, centre crop {cfg.data.augment.crop:g}, {cfg.data.image_size} px to the "
             "network. Expected: frontal chest radiographs (PNG/JPEG, or DICOM CR/DX)."]
    if paths.train_log.is_file():
        log = pd.read_csv(paths.train_log)
        best = log[log["best"].astype(bool)].tail(1)
        if len(best):
            row = best.iloc[0]
            lines.append(f"Trained {len(log)} epoch(s); the kept weights are epoch {int(row['epoch'])}'s "
                         f"(validation {cfg.train.monitor}: {row['monitor']:.3f}).")
    chosen = manifest.extra.get("training_precision") if manifest is not None else None
    if chosen:
        rates = ", ".join(f"{k} {v:g} images/s" for k, v in chosen.get("images_per_s", {}).items())
        lines.append(f"Training precision `{chosen['precision']}` "
                     f"({chosen['reason']}{'; ' + rates if rates else ''}).")
    return lines + [""]


def _fitted(paths: RunPaths) -> list[str]:
    lines = ["## Calibration, thresholds and input gate", ""]
    if paths.calibration.is_file():
        info = json.loads(paths.calibration.read_text())
        where = (f"{int(info.get('calib_images', 0)) + int(info.get('val_report_images', 0))} local cases of"
                 if info.get("split") == "whole cohort" else "validation data of")
        lines.append(f"- Calibrated on {where} `{Path(str(info.get('fitted_on', '?'))).name}` (never a test split).")
        lines += _steep(info.get("findings", {}))
    else:
        lines.append("- **Not calibrated**: scores are plain sigmoid outputs (`chestaid calibrate`).")
    if paths.thresholds.is_file():
        lines.append(f"- Thresholds: policy `{json.loads(paths.thresholds.read_text())['policy']}`, fitted on "
                     "validation data.")
    else:
        lines.append("- **No fitted thresholds**: decisions at 0.5.")
    if paths.gate.is_file():
        from chestaid.inference.gate import DistanceGate

        info = DistanceGate.load(paths.gate).info
        fitted = info.get("fit_split", "train")
        where = "the training images" if fitted == "train" else f"{fitted} ({info.get('train_images')} images)"
        lines.append(f"- Input gate: DICOM tags (CR/DX chest only) and a distance from {where}, its threshold at the "
                     f"{info.get('percentile', 99):g}th percentile of {info.get('val_images')} held-out images; "
                     "images unlike them are refused.")
    else:
        lines.append("- **No input gate**: any image is scored" + (" (`chestaid gate fit RUN --images DIR` fits "
                     "one on local images)." if not load_config(paths.config).data.path else "."))
    return lines + [""]


def _steep(findings: dict) -> list[str]:
    """A line naming the findings whose calibrator multiplies logit differences by STEEP_GAIN or more."""
    from chestaid.fitting.calibration import STEEP_GAIN, gain

    steep = {name: g for name, params in findings.items() if (g := gain(params)) is not None and g >= STEEP_GAIN}
    if not steep:
        return []
    named = ", ".join(f"{name} ({g:.0f}x)" for name, g in sorted(steep.items(), key=lambda item: -item[1]))
    return [f"- **Steep calibration** for {named}: the calibrator multiplies logit differences that much, as when "
            "validation data are (nearly) separable for a finding. A small change in an image, or in the arithmetic "
            "(reduced-precision backends), can then move that finding's risk score a lot; more validation data "
            "would give a gentler fit."]


def _evaluation(paths: RunPaths) -> list[str]:
    result = paths.split_metrics("test")
    if not result.is_file():
        return ["## Evaluation", "", "Not evaluated yet (`chestaid evaluate RUN`)."]
    summary = json.loads(result.read_text())["summary"]
    keys = headline_metrics(summary)
    return ["## Evaluation", "", f"On the held-out test split ({summary.get('n', '?')} images): " +
            ", ".join(f"{k} {with_interval(summary, k)}" for k in keys)
            + ". In brackets: 95% confidence intervals resampling patients. Per finding: report.html."]
