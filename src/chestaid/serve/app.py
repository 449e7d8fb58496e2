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

from chestaid.data.cache import trained_on_synthetic
from chestaid.errors import ChestaidError
from chestaid.explain.gradcam import CamExplainer, overlay
from chestaid.predictor import Predictor, Scored

DISCLAIMER = (
    "**chestaid supports triage and double-checking; it does not diagnose.** The number shown is a "
    "*calibrated risk score*, not a clinical probability. The heat map is a *qualitative explanation* of where "
    "the network looked, not a lesion mask. Every decision stays with a clinician.")
MAX_FILE_SIZE = "64mb"
DISPLAY_SIZE = 448


def _run_notes(predictor: Predictor, run: Path) -> str:
    model = f"Model: run `{run}` ({predictor.cfg.task} task, {len(predictor.task.labels)} output(s)). "
    if trained_on_synthetic(predictor.cfg.data.path):
        model += "**Trained on synthetic phantoms** (`chestaid synth`): a demonstration, not a model of real X-rays. "
    notes = []
    if not predictor.calibrated:
        notes.append("this run has **no calibration** (`chestaid calibrate RUN`): scores are raw sigmoid outputs")
    if not predictor.thresholded:
        notes.append("this run has **no fitted thresholds** (`chestaid thresholds RUN`): the default is 0.5")
    return model + (("⚠ " + "; ".join(notes) + ".") if notes else (
        f"Calibrated on {predictor.calibration.info.get('fitted_on', '?')}; thresholds: policy "
        f"`{predictor.thresholds.policy}` fitted on validation data."))


def build_app(run: str | Path, device: str = "cpu") -> gr.Blocks:
    run = Path(run).resolve()
    predictor = Predictor.load(run, device)
    explainer = CamExplainer(predictor)
    labels = list(predictor.task.labels)
    multi = len(labels) > 1
    tabular = predictor.cfg.model.tabular

    def decision_text(score: float, threshold: float) -> str:
        if score >= threshold:
            return f"**Above threshold ({threshold:.3f}): flag for priority reading.**"
        return f"Below threshold ({threshold:.3f}): routine reading order."

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

    def analyse(file, age, sex, view, alpha):
        empty = (None, "", gr.update(), "", None, None, gr.update())
        if not file:
            return (*empty, "Upload a PNG, JPEG or DICOM chest X-ray first.")
        given = {"age": age, "sex": sex, "view": view}  # patient_for treats "unknown" as not given
        try:
            scored, failed = predictor.score_files([file], patient=given if tabular else None, keep_images=True)
        except ChestaidError as e:
            return (*empty, f"⚠ {e}")
        if failed:
            return (*empty, f"⚠ Could not read {Path(failed[0][0]).name}: {failed[0][1]}.")
        s: Scored = scored[0]
        state = {"image": s.image, "tabular": s.tabular, "risk": s.risk, "decisions": s.decisions, "cams": {}}
        top = labels[int(np.argmax(s.risk))]
        threshold = predictor.thresholds.values[top]
        score = float(s.risk[labels.index(top)])
        note = f"Assumed (not given): {', '.join(s.assumed)}." if tabular and s.assumed else ""
        return (state, f"{score:.3f}", gr.update(value=threshold), decision_text(score, threshold),
                heat(state, top, alpha), table(state), gr.update(value=top)) + (note,)

    def select(state, finding, alpha):
        if not state:
            return gr.update(), gr.update(), gr.update(), gr.update()
        score = float(state["risk"][labels.index(finding)])
        threshold = predictor.thresholds.values[finding]
        return f"{score:.3f}", gr.update(value=threshold), decision_text(score, threshold), heat(state, finding, alpha)

    def decide(state, finding, threshold):
        if not state:
            return ""
        return decision_text(float(state["risk"][labels.index(finding)]), threshold)

    def restyle(state, finding, alpha):
        return heat(state, finding, alpha) if state else None

    def score_api(file, age, sex, view) -> dict:
        given = {"age": age, "sex": sex, "view": view}
        scored, failed = predictor.score_files([file], patient=given if tabular else None)
        if failed:
            return {"error": f"{Path(failed[0][0]).name}: {failed[0][1]}"}
        s = scored[0]
        return {"findings": {name: {"raw_score": float(s.raw[i]), "risk_score": float(s.risk[i]),
                                    "threshold": predictor.thresholds.values[name], "decision": int(s.decisions[i])}
                             for i, name in enumerate(labels)},
                "patient": s.patient, "assumed": s.assumed, "calibrated": predictor.calibrated, "run": str(run),
                "note": "calibrated risk scores, not clinical probabilities; triage support, not a diagnosis"}

    with gr.Blocks(title="chestaid triage") as demo:
        gr.Markdown(f"# chestaid — {'14-finding' if multi else 'pneumonia'} triage\n{DISCLAIMER}", elem_id="disclaimer")
        gr.Markdown(_run_notes(predictor, run), elem_id="run-notes")
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
        button.click(analyse, [upload, age, sex, view, alpha],
                     [state, score, threshold, decision, heatmap, findings_table, finding, message], api_name=False)
        finding.input(select, [state, finding, alpha], [score, threshold, decision, heatmap], api_name=False)
        threshold.change(decide, [state, finding, threshold], [decision], api_name=False)
        alpha.change(restyle, [state, finding, alpha], [heatmap], api_name=False)
        api_out = gr.JSON(visible=False)
        gr.Button(visible=False).click(score_api, [upload, age, sex, view], [api_out], api_name="score")
    return demo


def serve(run: str | Path, host: str = "127.0.0.1", port: int = 7860, device: str = "cpu") -> None:
    """Start the page; bound to 127.0.0.1 unless told otherwise."""
    build_app(run, device).launch(server_name=host, server_port=port, max_file_size=MAX_FILE_SIZE,
                                  show_error=False, quiet=False)
