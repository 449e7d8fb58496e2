"""The triage page (SPEC B10, B11): upload an X-ray, read the calibrated risk score, set the threshold; with a
node store, the worklist too (worklist_view).

The threshold slider changes the decision, never the score; the alpha slider changes the heat map's
transparency only. Both work on results kept in the session, so they never rerun the model. Everything taken
from a file (its name, tag values, reasons) is shown in text components, never as markup; heat maps are sent
inline and never written to disk; each upload is deleted once scored."""

from __future__ import annotations

import logging
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd

from chestaid.store import Store
from chestaid.apps.page.display import heat_map_html, score_text, user_of
from chestaid.apps.page.inputs import clinical_inputs, plain
from chestaid.apps.page.notes import disclaimer, model_card, run_notes, title
from chestaid.apps.page.uploads import UploadFolder
from chestaid.core.errors import ChestaidError
from chestaid.explain.gradcam import overlay
from chestaid.inference.predictor import Predictor
from chestaid.inference.result import Scored

log = logging.getLogger(__name__)
THEME = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                          font_mono=["ui-monospace", "monospace"])  # no font fetched from another site


def patient_note(s: Scored) -> str:
    said = {"tag": "from the DICOM tags", "given": "as entered", "assumed": "unknown (neutral value assumed)"}
    return "Patient data: " + "; ".join(f"{key} {said[source]}" for key, source in s.data.sources.items()) + "."


def build_app(run: str | Path, device: str = "cpu", backend: str = "auto", uploads: UploadFolder | None = None,
              store: str | Path | None = None, refresh_s: float = 2.0) -> gr.Blocks:
    """The page for `run`; uploads are deleted from `uploads` once scored; `store` adds the node's worklist."""
    run = Path(run).resolve()
    predictor = Predictor.load(run, device, backend=backend)
    explainer = predictor.explainer()
    labels = list(predictor.task.labels)
    multi = len(labels) > 1
    tabular = predictor.cfg.model.tabular
    node = Store.open(store) if store is not None else None

    def audit(request, action: str, sop_uid: str) -> None:
        if node is not None:
            node.audit(user_of(request), action, sop_uid)

    def score_one(file, age, sex, view, request) -> tuple[Scored | None, str]:
        """Score one upload and release it (deleted when no request holds it); (result, "") or (None, the one-line reason)."""
        try:
            if not file:
                return None, "No file: upload a PNG, JPEG or DICOM chest X-ray first."
            if uploads is not None and not uploads.holds(file):
                return None, "That file is not an upload of this page (upload it again)."
            if not Path(file).is_file():
                return None, "That upload is gone (each upload is deleted once scored): upload it again."
            given = clinical_inputs(age, sex, view)
            scored, failed = predictor.score_files([file], patient=given if tabular else None,
                                                   keep_images=True)
        except ChestaidError as e:
            return None, plain(e)
        finally:
            if uploads is not None:
                uploads.release(file)  # deleted once no other request holds the same (identical) upload
        if failed:
            return None, f"Could not read {plain(Path(failed[0][0]).name, 80)}: {plain(failed[0][1])}."
        s = scored[0]
        sop = s.data.ids.get("SOPInstanceUID", "")
        log.info("scored an upload%s", f" (SOPInstanceUID {sop})" if sop else "")
        audit(request, "score", sop)
        return s, ""

    def decision_text(score: float, threshold: float, state: dict | None = None) -> str:
        outside = (f"⚠ Scored outside the input gate ({plain(state['refused'])}): not a result this model was made "
                   "for. ") if state and state["refused"] else ""
        if score >= threshold:
            return outside + f"Above threshold ({threshold:.3f}): flag for priority reading."
        return outside + f"Below threshold ({threshold:.3f}): routine reading order."

    def shown(state: dict | None) -> bool:
        """A result is shown once scored, and for a refused image only after "score anyway"."""
        return bool(state) and (not state["refused"] or state["anyway"])

    def heat(state: dict, finding: str, alpha: float) -> str:
        index = labels.index(finding)
        if index not in state["cams"]:
            state["cams"][index] = explainer.maps(state["image"][None], state["tabular"][None], [index])[0]
        return heat_map_html(overlay(state["image"], state["cams"][index], alpha), finding)

    def table(state: dict) -> pd.DataFrame:
        order = np.argsort(-np.asarray(state["risk"]), kind="stable")
        return pd.DataFrame([{"finding": labels[i], "risk score": score_text(float(state["risk"][i])),
                              "threshold": f"{predictor.thresholds.values[labels[i]]:.3f}",
                              "decision": "flag" if state["decisions"][i] else "–"} for i in order])

    def present(state: dict, finding: str, alpha: float, note: str) -> tuple:
        if not shown(state):
            refusal = (f"Not scored: {plain(state['refused'])}. This model was made for frontal chest X-rays like "
                       "its training images; the image gets no score and no place in a worklist.")
            return (state, "", gr.update(), refusal, "", None, gr.update(value=finding), note,
                    gr.update(visible=True))
        threshold = predictor.thresholds.values[finding]
        score = float(state["risk"][labels.index(finding)])
        return (state, score_text(score), gr.update(value=threshold), decision_text(score, threshold, state),
                heat(state, finding, alpha), table(state), gr.update(value=finding), note, gr.update(visible=False))

    def analyse(file, age, sex, view, alpha, request: gr.Request):
        empty = (None, "", gr.update(), "", "", None, gr.update())
        s, why = score_one(file, age, sex, view, request)
        if s is None:
            return (*empty, f"⚠ {why}", gr.update(visible=False))
        state = {"image": s.image, "tabular": s.tabular, "risk": s.risk, "decisions": s.decisions, "cams": {},
                 "refused": s.refusal, "anyway": False, "note": patient_note(s) if tabular else ""}
        return present(state, labels[int(np.argmax(s.risk))], alpha, state["note"])

    def score_outside_gate(state, alpha):
        if not state:
            return (state, "", gr.update(), "", "", None, gr.update(), "", gr.update(visible=False))
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
        return decision_text(float(state["risk"][labels.index(finding)]), threshold, state) if shown(state) \
            else gr.update()

    def restyle(state, finding, alpha):
        return heat(state, finding, alpha) if shown(state) else ""

    def score_api(file, age, sex, view, score_anyway: bool = False, request: gr.Request = None) -> dict:
        s, why = score_one(file, age, sex, view, request)
        if s is None:
            return {"error": why}
        gate = {"fitted": predictor.gate is not None, "passed": not s.refused, "distance": s.distance,
                "threshold": predictor.gate.threshold if predictor.gate is not None else None}
        if s.refused and not score_anyway:
            return {"refused": plain(s.refusal), "gate": gate, "run": run.name,
                    "note": "not scored: this model was made for frontal chest X-rays like its training images"}
        return {"gate": gate, **s.to_json(),
                "calibrated": predictor.calibrated, "run": run.name, "backend": predictor.backend,
                "score": predictor.score_name,
                "note": f"{predictor.score_name}s, not clinical probabilities; triage support, not a diagnosis"}

    with gr.Blocks(title="chestaid triage", analytics_enabled=False, delete_cache=(60, 300)) as demo:
        gr.Markdown(f"# chestaid — {title(predictor)}\n{disclaimer(predictor)}", elem_id="disclaimer")
        gr.Markdown(run_notes(predictor, run), elem_id="run-notes")
        with gr.Accordion("Model card: what this model was trained on and is for", open=False):
            gr.Markdown(model_card(run), elem_id="model-card")
        with gr.Tabs(elem_id="tabs"):  # one tab bar: the upload and, with a store, the worklist
            with gr.Tab("Upload", elem_id="tab-upload"):
                state = gr.State(None)
                with gr.Row():
                    with gr.Column(scale=1):
                        upload = gr.File(label="Chest X-ray (PNG, JPEG or DICOM)", type="filepath", elem_id="upload",
                                         file_types=[".png", ".jpg", ".jpeg", ".dcm", ".dicom"])
                        age = gr.Textbox(label="Age in years (empty = unknown; a DICOM's own PatientAge wins)",
                                         value="", placeholder="unknown", max_lines=1, max_length=8, visible=tabular,
                                         elem_id="age")
                        sex = gr.Radio(["unknown", "M", "F"], value="unknown", label="Sex", visible=tabular)
                        view = gr.Radio(["unknown", "PA", "AP"], value="unknown", label="View", visible=tabular)
                        button = gr.Button("Analyse", variant="primary", elem_id="analyse")
                        message = gr.Textbox(label="Message", interactive=False, max_lines=4, elem_id="message")
                        anyway = gr.Button("Score anyway (outside the input gate)", visible=False,
                                           elem_id="score-anyway")
                    with gr.Column(scale=1):
                        finding = gr.Dropdown(labels, value=labels[0], label="Finding (heat map and score)",
                                              visible=multi, elem_id="finding")
                        score = gr.Textbox(label="Calibrated risk score" if predictor.calibrated else
                                           "Uncalibrated score (this run has not been calibrated: not a risk)",
                                           interactive=False,
                                           elem_id="score")
                        threshold = gr.Slider(0, 1, value=predictor.thresholds.values[labels[0]], step=0.001,
                                              label="Decision threshold (changes the decision, never the score)",
                                              elem_id="threshold")
                        decision = gr.Textbox(label="Decision", interactive=False, max_lines=4, elem_id="decision")
                        alpha = gr.Slider(0, 1, value=0.4, step=0.05, label="Heat-map opacity (display only)",
                                          elem_id="alpha")
                        gr.Markdown("Grad-CAM heat map: a qualitative explanation, not a lesion mask")
                        heatmap = gr.HTML(elem_id="heatmap")
                findings_table = gr.Dataframe(label=f"Findings by {predictor.score_name}", visible=multi,
                                              interactive=False, elem_id="findings")
            if node is not None:
                from chestaid.apps.page.worklist_view import worklist_tab
                from chestaid.inference.identity import run_identity

                worklist_tab(node, predictor, explainer, run_identity(run, predictor.backend), refresh_s)
                from chestaid.apps.page.monitor_view import monitor_tab

                monitor_tab(node.root)
        shown_outputs = [state, score, threshold, decision, heatmap, findings_table, finding, message, anyway]
        button.click(analyse, [upload, age, sex, view, alpha], shown_outputs, api_name=False)
        anyway.click(score_outside_gate, [state, alpha], shown_outputs, api_name=False)
        finding.input(select, [state, finding, alpha], [score, threshold, decision, heatmap], api_name=False)
        threshold.change(decide, [state, finding, threshold], [decision], api_name=False)
        alpha.change(restyle, [state, finding, alpha], [heatmap], api_name=False)
        api_out = gr.JSON(visible=False)
        api_anyway = gr.Checkbox(False, visible=False, label="score anyway")
        api_fields = [gr.Textbox(visible=False, label=name) for name in ("age", "sex", "view")]  # checked here
        gr.Button(visible=False).click(score_api, [upload, *api_fields, api_anyway], [api_out], api_name="score")
    return demo
