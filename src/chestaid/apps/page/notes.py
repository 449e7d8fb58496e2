"""What the page says about the run it serves: title, notes on calibration/thresholds/gate, the model card.
The run's own files are trusted text (Markdown); nothing here comes from an uploaded file."""

from __future__ import annotations

from pathlib import Path

from chestaid.core.run_paths import RunPaths
from chestaid.data.provenance import manifest_of
from chestaid.inference.predictor import Predictor

DISCLAIMER = (
    "**chestaid supports triage and double-checking; it does not diagnose.** The number shown is a "
    "*{score}*, not a clinical probability. The heat map is a *qualitative explanation* of where "
    "the network looked, not a lesion mask. Every decision stays with a clinician.")


def disclaimer(predictor: Predictor) -> str:
    """The page's first words: what the number is (calibrated risk score, or uncalibrated score)."""
    return DISCLAIMER.format(score=predictor.score_name)


def run_notes(predictor: Predictor, run: Path) -> str:
    """What the clinician should know about the model; names the run, never a path on the server."""
    model = f"Model: run `{run.name}` ({predictor.task.name} task, {len(predictor.task.labels)} output(s)). "
    manifest = manifest_of(RunPaths(run))
    if manifest is None:
        model += "**Its training data is not recorded** (a run without manifest.json): unknown whether it ever saw a real X-ray. "
    elif manifest.extra.get("imported"):
        imported = manifest.extra["imported"]
        datasets = imported.get("datasets")
        model += (f"**Imported, not trained by chestaid**: published weights `{imported.get('file')}`, trained by "
                  f"their authors on {', '.join(datasets) if datasets else 'data the file does not state'}. ")
    elif manifest.synthetic:
        model += "**Trained on synthetic phantoms** (`chestaid synth`): a demonstration, not a model of real X-rays. "
    notes = []
    if not predictor.calibrated:
        notes.append("this run has **no calibration** (`chestaid calibrate RUN`): its scores are **uncalibrated** "
                     "(sigmoid outputs that rank images; they are not risks)")
    if not predictor.thresholded:
        notes.append("this run has **no fitted thresholds** (`chestaid thresholds RUN`): the default is 0.5")
    if predictor.gate is None:
        notes.append("this run has **no input gate** (`chestaid calibrate RUN` fits one): any image is scored, "
                     "chest X-ray or not")
    return model + (("⚠ " + "; ".join(notes) + ".") if notes else (
        f"Calibrated on {Path(str(predictor.calibration.info.get('fitted_on', '?'))).name}; thresholds: policy "
        f"`{predictor.thresholds.policy}` fitted on validation data. Input gate: DICOM tags, and images unlike "
        f"the training images (beyond the {predictor.gate.info.get('percentile', '?')}th percentile of validation) "
        "are refused."))


def title(predictor: Predictor) -> str:
    task = predictor.task
    return f"{task.labels[0]} triage" if task.binary else f"{task.num_outputs}-finding triage ({task.name})"


def model_card(run: Path) -> str:
    card = RunPaths(run).model_card
    return card.read_text() if card.is_file() else "This run has no model card (it predates them)."
