"""The triage page (SPEC B10, B11): upload an X-ray, read the calibrated risk score, set the threshold.

The threshold slider changes the decision, never the score; the alpha slider changes the heat map's
transparency only. Both work on results kept in the session, so they never rerun the model.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd
from PIL import Image

from chestaid.core.errors import ChestaidError
from chestaid.core.run_paths import RunPaths
from chestaid.data.provenance import manifest_of
from chestaid.explain.gradcam import CamExplainer, overlay
from chestaid.inference.predictor import Predictor
from chestaid.inference.result import Scored

DISCLAIMER = (
    "**chestaid supports triage and double-checking; it does not diagnose.** The number shown is a "
    "*calibrated risk score*, not a clinical probability. The heat map is a *qualitative explanation* of where "
    "the network looked, not a lesion mask. Every decision stays with a clinician.")
DISPLAY_SIZE = 448


def _run_notes(predictor: Predictor, run: Path) -> str:
    """What the clinician should know about the model; names the run, never a path on the server."""
    model = f"Model: run `{run.name}` ({predictor.task.name} task, {len(predictor.task.labels)} output(s)). "
    manifest = manifest_of(RunPaths(run))
    if manifest is None:
        model += "**Its training data is not recorded** (a run without manifest.json): unknown whether it ever saw a real X-ray. "
    elif manifest.synthetic:
        model += "**Trained on synthetic phantoms** (`chestaid synth`): a demonstration, not a model of real X-rays. "
    notes = []
    if not predictor.calibrated:
        notes.append("this run has **no calibration** (`chestaid calibrate RUN`): scores are raw sigmoid outputs")
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


def _title(predictor: Predictor) -> str:
    task = predictor.task
    return f"{task.labels[0]} triage" if task.binary else f"{task.num_outputs}-finding triage ({task.name})"


def _model_card(run: Path) -> str:
    card = RunPaths(run).model_card
    return card.read_text() if card.is_file() else "This run has no model card (it predates them)."


def _patient_note(s: Scored) -> str:
    said = {"tag": "from the DICOM tags", "given": "as entered", "assumed": "unknown (neutral value assumed)"}
    parts = [f"{key} {said[source]}" for key, source in s.data.sources.items()]
    return "Patient data: " + "; ".join(parts) + "."


def build_app(run: str | Path, device: str = "cpu", backend: str = "auto") -> gr.Blocks:
    run = Path(run).resolve()
    predictor = Predictor.load(run, device, backend=backend)
    explainer = CamExplainer(predictor)
    labels = list(predictor.task.labels)
    multi = len(labels) > 1
    tabular = predictor.cfg.model.tabular

    def decision_text(score: float, threshold: float, state: dict | None = None) -> str:
        outside = (f"⚠ **Scored outside the input gate** ({state['refused']}): not a result this model was made "
                   "for. ") if state and state["refused"] else ""
        if score >= threshold:
            return outside + f"**Above threshold ({threshold:.3f}): flag for priority reading.**"
        return outside + f"Below threshold ({threshold:.3f}): routine reading order."

    def shown(state: dict | None) -> bool:
        """A result is shown once scored, and for a refused image only after "score anyway"."""
        return bool(state) and (not state["refused"] or state["anyway"])

    def heat(state: dict, finding: str, alpha: float) -> np.ndarray:
        index = labels.index(finding)
        if index not in state["cams"]:
            state["cams"][index] = explainer.maps(state["image"][None], state["tabular"][None], [index])[0]
        picture = overlay(state["image"], state["cams"][index], alpha)
        if picture.shape[0] < DISPLAY_SIZE:  # small caches (demo runs) are enlarged for the eye only
            picture = np.asarray(Image.fromarray(picture).resize((DISPLAY_SIZE, DISPLAY_SIZE), Image.BILINEAR))
        return picture

    def table(state: dict) -> pd.DataFrame:
        order = np.argsort(-np.asarray(state["risk"]), kind="stable")
        return pd.DataFrame([{"finding": labels[i], "risk score": f"{float(state['risk'][i]):.3f}",
                              "threshold": f"{predictor.thresholds.values[labels[i]]:.3f}",
                              "decision": "flag" if state["decisions"][i] else "–"}
                             for i in order])

    def present(state: dict, finding: str, alpha: float, note: str) -> tuple:
        if not shown(state):
            refusal = (f"**Not scored: {state['refused']}.** This model was made for frontal chest X-rays like "
                       "its training images; the image gets no score and no place in a worklist.")
            return (state, "", gr.update(), refusal, None, None, gr.update(value=finding), note,
                    gr.update(visible=True))
        threshold = predictor.thresholds.values[finding]
        score = float(state["risk"][labels.index(finding)])
        return (state, f"{score:.3f}", gr.update(value=threshold), decision_text(score, threshold, state),
                heat(state, finding, alpha), table(state), gr.update(value=finding), note, gr.update(visible=False))

    def analyse(file, age, sex, view, alpha):
        empty = (None, "", gr.update(), "", None, None, gr.update())
        hide = gr.update(visible=False)
        if not file:
            return (*empty, "Upload a PNG, JPEG or DICOM chest X-ray first.", hide)
        given = {"age": age, "sex": sex, "view": view}  # patient_for treats "unknown" as not given
        try:
            scored, failed = predictor.score_files([file], patient=given if tabular else None, keep_images=True)
        except ChestaidError as e:
            return (*empty, f"⚠ {e}", hide)
        if failed:
            return (*empty, f"⚠ Could not read {Path(failed[0][0]).name}: {failed[0][1]}.", hide)
        s: Scored = scored[0]
        state = {"image": s.image, "tabular": s.tabular, "risk": s.risk, "decisions": s.decisions, "cams": {},
                 "refused": s.refusal, "anyway": False, "note": _patient_note(s) if tabular else ""}
        return present(state, labels[int(np.argmax(s.risk))], alpha, state["note"])

    def score_outside_gate(state, alpha):
        if not state:
            return (state, "", gr.update(), "", None, None, gr.update(), "", gr.update(visible=False))
        state = {**state, "anyway": True}
        return present(state, labels[int(np.argmax(state["risk"]))], alpha, state["note"])

    def select(state, finding, alpha):
        if not shown(state):
            return gr.update(), gr.update(), gr.update(), gr.update()
        score = float(state["risk"][labels.index(finding)])
        threshold = predictor.thresholds.values[finding]
        return (f"{score:.3f}", gr.update(value=threshold), decision_text(score, threshold, state),
                heat(state, finding, alpha))

    def decide(state, finding, threshold):
        if not shown(state):
            return gr.update()
        return decision_text(float(state["risk"][labels.index(finding)]), threshold, state)

    def restyle(state, finding, alpha):
        return heat(state, finding, alpha) if shown(state) else None

    def score_api(file, age, sex, view, score_anyway: bool = False) -> dict:
        given = {"age": age, "sex": sex, "view": view}
        scored, failed = predictor.score_files([file], patient=given if tabular else None)
        if failed:
            return {"error": f"{Path(failed[0][0]).name}: {failed[0][1]}"}
        s = scored[0]
        gate = {"fitted": predictor.gate is not None, "passed": not s.refused, "distance": s.distance,
                "threshold": predictor.gate.threshold if predictor.gate is not None else None}
        if s.refused and not score_anyway:
            return {"refused": s.refusal, "gate": gate, "run": run.name,
                    "note": "not scored: this model was made for frontal chest X-rays like its training images"}
        return {"gate": gate, **s.to_json(),
                "calibrated": predictor.calibrated, "run": run.name, "backend": predictor.backend,
                "note": "calibrated risk scores, not clinical probabilities; triage support, not a diagnosis"}

    with gr.Blocks(title="chestaid triage") as demo:
        gr.Markdown(f"# chestaid — {_title(predictor)}\n{DISCLAIMER}", elem_id="disclaimer")
        gr.Markdown(_run_notes(predictor, run), elem_id="run-notes")
        with gr.Accordion("Model card: what this model was trained on and is for", open=False):
            gr.Markdown(_model_card(run), elem_id="model-card")
        state = gr.State(None)
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.File(label="Chest X-ray (PNG, JPEG or DICOM)", type="filepath", elem_id="upload",
                                 file_types=[".png", ".jpg", ".jpeg", ".dcm", ".dicom"])
                age = gr.Number(label="Age (years, optional; empty = unknown)", value=None, minimum=0, maximum=120,
                                visible=tabular, elem_id="age")
                sex = gr.Radio(["unknown", "M", "F"], value="unknown", label="Sex", visible=tabular)
                view = gr.Radio(["unknown", "PA", "AP"], value="unknown", label="View", visible=tabular)
                button = gr.Button("Analyse", variant="primary", elem_id="analyse")
                message = gr.Markdown(elem_id="message")
                anyway = gr.Button("Score anyway (outside the input gate)", visible=False, elem_id="score-anyway")
            with gr.Column(scale=1):
                finding = gr.Dropdown(labels, value=labels[0], label="Finding (heat map and score)", visible=multi,
                                      elem_id="finding")
                score = gr.Textbox(label="Calibrated risk score" if predictor.calibrated else
                                   "Risk score (UNCALIBRATED: this run has no calibration)", interactive=False,
                                   elem_id="score")
                threshold = gr.Slider(0, 1, value=predictor.thresholds.values[labels[0]], step=0.001,
                                      label="Decision threshold (changes the decision, never the score)",
                                      elem_id="threshold")
                decision = gr.Markdown(elem_id="decision")
                alpha = gr.Slider(0, 1, value=0.4, step=0.05, label="Heat-map opacity (display only)", elem_id="alpha")
                heatmap = gr.Image(label="Grad-CAM heat map: a qualitative explanation, not a lesion mask",
                                   type="numpy", interactive=False, elem_id="heatmap", height=420)
        findings_table = gr.Dataframe(label="Findings by calibrated risk score", visible=multi, interactive=False,
                                      elem_id="findings")
        shown_outputs = [state, score, threshold, decision, heatmap, findings_table, finding, message, anyway]
        button.click(analyse, [upload, age, sex, view, alpha], shown_outputs, api_name=False)
        anyway.click(score_outside_gate, [state, alpha], shown_outputs, api_name=False)
        finding.input(select, [state, finding, alpha], [score, threshold, decision, heatmap], api_name=False)
        threshold.change(decide, [state, finding, threshold], [decision], api_name=False)
        alpha.change(restyle, [state, finding, alpha], [heatmap], api_name=False)
        api_out = gr.JSON(visible=False)
        api_anyway = gr.Checkbox(False, visible=False, label="score anyway")
        gr.Button(visible=False).click(score_api, [upload, age, sex, view, api_anyway], [api_out], api_name="score")
    return demo


def serve(run: str | Path, host: str = "127.0.0.1", port: int = 7860, device: str = "cpu", backend: str = "auto",
          max_upload_mb: int = 64) -> None:
    """Start the page; bound to 127.0.0.1 unless told otherwise. Larger uploads are refused with a message."""
    build_app(run, device, backend).launch(server_name=host, server_port=port, max_file_size=f"{max_upload_mb}mb",
                                           show_error=False, quiet=False)
