"""The node's worklist on the page (`chestaid serve RUN --store DIR`): highest risk first, refreshed as studies
arrive, state and reason for the ones not scored; open one for its image, per-finding risk scores and
decisions, the heat map on demand, and "mark reviewed". Every open, heat map and review is audited in the store
(time, user, action, SOPInstanceUID)."""

from __future__ import annotations

import html
import re
import logging
from datetime import datetime, timezone

import gradio as gr
import numpy as np
import pandas as pd

from chestaid.store import PRIORITY, PRIORITY_VERDICTS, VERDICTS, Decision, Store
from chestaid.apps.page.display import heat_map_html, picture_html, score_text, user_of
from chestaid.apps.page.inputs import plain
from chestaid.inference.identity import describe_model, same_model

log = logging.getLogger(__name__)
COLUMNS = ["risk", "top finding", "flagged", "PatientID", "AccessionNumber", "StudyDate", "view", "state", "reason",
           "model", "reviewed", "received", "SOPInstanceUID"]
COLUMN_WIDTHS = ["80px", "140px", "180px", "110px", "120px", "100px", "60px", "90px", "240px", "200px", "150px",
                 "150px", "300px"]


def _when(t: float | None) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC") if t else ""


def model_of(instance: dict) -> dict | None:
    """The identity of the run that scored an instance (chestaid.inference.identity), None when not recorded."""
    return Decision.of(instance).model


def model_cell(instance: dict, own: dict) -> str:
    """"this page's model", or which other model scored the row (or that nobody recorded it)."""
    theirs = model_of(instance)
    if instance["state"] == "queued":
        return ""
    return "this page's model" if same_model(theirs, own) else f"OTHER: {describe_model(theirs)}"


def findings_frame(instance: dict, own: dict) -> pd.DataFrame:
    """Per finding the stored score, the threshold of the run that made it (never the page's for another run's
    scores: "unknown" when not recorded) and the decision."""
    decided = Decision.of(instance)
    thresholds = (decided.model or {}).get("thresholds") or {}
    ordered = sorted(decided.scores.items(), key=lambda item: -item[1].risk)
    rows = [{"finding": name, "risk score": score_text(v.risk),
             "threshold": f"{thresholds[name]:.3f}" if name in thresholds else "unknown",
             "decision": "flag" if v.decision else "–"} for name, v in ordered]
    return pd.DataFrame(rows, columns=["finding", "risk score", "threshold", "decision"])


def study_date(instance: dict) -> str:
    """StudyDate as YYYY-MM-DD when it is a date, else as sent (plain)."""
    text = instance.get("study_date") or ""
    return f"{text[:4]}-{text[4:6]}-{text[6:8]}" if len(text) == 8 and text.isdigit() else plain(text, 16)


def view_of(instance: dict) -> str:
    """ViewPosition as sent (older stores: the one recorded with the scores)."""
    if instance.get("view"):
        return plain(instance["view"], 16)
    return plain(str(Decision.of(instance).meta.get("view", "")), 16)


def header_text(instance: dict) -> str:
    """Whose image it is: the line on top of an opened study and of its verdicts."""
    return (f"Patient ID {plain(instance['patient_id'], 64) or '(none)'} · accession "
            f"{plain(instance['accession'], 64) or '(none)'} · study date {study_date(instance) or '(none)'} · view "
            f"{view_of(instance) or '(none)'}")


def heat_map_refusal(instance: dict | None, own: dict) -> str:
    """Why no heat map is made for this row ("" when one may be): only scored rows, and only with the model
    that scored them."""
    if instance is None or instance["state"] != "scored":
        return "Open a scored study first."
    if not same_model(model_of(instance), own):
        return (f"Scored by another model ({describe_model(model_of(instance))}), not this page's: its heat map is "
                "not made with a different model.")
    return ""


def _cleared(labels: list[str]) -> tuple:
    """The verdict grid and the priority, emptied: nothing pre-selected when a study opens (no anchoring on the
    model's call)."""
    return tuple(gr.update(value=None) for _ in range(len(labels) + 1))


def verdict_id(finding: str) -> str:
    """The element id of a finding's verdict in the grid (letters, digits and _ only)."""
    return "verdict-of-" + re.sub(r"[^A-Za-z0-9]", "_", finding)


def verdicts_text(node: Store, sop_uid: str) -> str:
    """The instance's verdicts as plain text: the latest per finding, then how many were given in all."""
    history = node.verdict_history(sop_uid)
    instance = node.instance(sop_uid)
    whose = header_text(instance) + "\n" if instance else ""
    if not history:
        return whose + "No verdict yet."
    latest = {h["finding"]: h for h in history}
    lines = [f"{plain(f, 64)}: {h['verdict']} ({plain(h['user'], 64)}, {_when(h['at'])})" for f, h in latest.items()]
    return whose + "\n".join(lines + [f"{len(history)} verdict(s) given in all"])


def worklist_frame(node: Store, own: dict) -> pd.DataFrame:
    """Every instance but the ignored ones, highest risk first, as plain text cells."""
    rows = [{"risk": score_text(i["risk"]), "top finding": plain(i["top_finding"], 60),
             "flagged": plain(i["flagged"].replace("|", ", "), 120), "PatientID": plain(i["patient_id"], 64),
             "AccessionNumber": plain(i["accession"], 64), "StudyDate": study_date(i), "view": view_of(i),
             "state": i["state"],
             "reason": plain(i["reason"], 160), "model": plain(model_cell(i, own), 100),
             "reviewed": f"{plain(i['reviewed_by'], 64)} {_when(i['reviewed_at'])}" if i.get("reviewed_by") else "",
             "received": _when(i["received_at"]), "SOPInstanceUID": plain(i["sop_uid"], 64)}
            for i in node.instances() if i["state"] != "ignored"]
    return pd.DataFrame(rows, columns=COLUMNS)


def worklist_tab(node: Store, predictor, explainer, own: dict, refresh_s: float = 2.0) -> None:
    """Add the Worklist tab to the Blocks being built; `own` is the page's run identity."""
    labels = list(predictor.task.labels)

    def refresh():
        return worklist_frame(node, own)

    def summary(instance: dict) -> str:
        reviewed = (f"reviewed by {plain(instance['reviewed_by'], 64)} at {_when(instance['reviewed_at'])}"
                    if instance.get("reviewed_by") else "not reviewed")
        reason = f"; {plain(instance['reason'])}" if instance["reason"] else ""
        top = (f"; top finding {plain(instance['top_finding'], 60)} at {score_text(instance['risk'])}"
               if instance["state"] == "scored" else "")
        verdicts = len(node.verdict_history(instance["sop_uid"]))
        said = f"{verdicts} verdict(s) recorded" if verdicts else "no verdict yet"
        return f"{header_text(instance)}\n{instance['state']}{top}{reason}; {reviewed}; {said}."

    def open_one(sop_uid: str, request: gr.Request):
        sop_uid = (sop_uid or "").strip()
        instance = node.instance(sop_uid) if sop_uid else None
        if instance is None or instance["state"] == "ignored":
            return sop_uid, "No such study in the worklist.", "", None, "", *_cleared(labels), ""
        node.audit(user_of(request), "view", sop_uid)
        log.info("worklist: opened SOPInstanceUID %s", sop_uid)
        image, _why = predictor.read(str(node.file_of(instance)))
        picture = picture_html(np.asarray(image), "the image") if image is not None else ""
        return (sop_uid, summary(instance), picture, findings_frame(instance, own), "", *_cleared(labels),
                verdicts_text(node, sop_uid))

    def pick(frame: pd.DataFrame, evt: gr.SelectData, request: gr.Request):
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        return open_one(str(frame.iloc[row]["SOPInstanceUID"]), request)

    def heat_map(sop_uid: str, request: gr.Request):
        instance = node.instance(sop_uid) if sop_uid else None
        refusal = heat_map_refusal(instance, own)
        if refusal:
            return html.escape(refusal)
        scored, failed = predictor.score_files([str(node.file_of(instance))], keep_images=True)
        if failed or not scored:
            return ""
        s = scored[0]
        index = labels.index(instance["top_finding"]) if instance["top_finding"] in labels else s.top
        from chestaid.explain.gradcam import overlay

        cam = explainer.maps(s.image[None], s.tabular[None], [index])[0]
        node.audit(user_of(request), "heat_map", sop_uid)
        return heat_map_html(overlay(s.image, cam, 0.4), labels[index])

    def save_verdict(sop_uid: str, priority: str | None, request: gr.Request, *chosen: str | None):
        """`request` before the grid's values: gradio inserts it at its position among the positional inputs."""
        if not sop_uid or node.instance(sop_uid) is None:
            return "Open a study first."
        given = {finding: verdict for finding, verdict in zip(labels, chosen) if verdict}
        if priority:
            given[PRIORITY] = priority
        if not given:
            return "Give a verdict on at least one finding (present, absent or can't tell), or on the priority."
        node.add_verdicts(sop_uid, given, user_of(request), "page")
        log.info("worklist: SOPInstanceUID %s: %d verdict(s) saved", sop_uid, len(given))
        return verdicts_text(node, sop_uid)

    def complete_study(sop_uid: str, request: gr.Request):
        instance = node.instance(sop_uid) if sop_uid else None
        if instance is None or not instance["study_uid"] or not node.force_study(instance["study_uid"]):
            return "Open a study first."
        node.audit(user_of(request), "complete_study", sop_uid)
        log.info("worklist: study of SOPInstanceUID %s completed by hand", sop_uid)
        return (f"{header_text(instance)}\nStudy completed now: the node makes its study result within seconds "
                "(an image arriving later makes a new version that supersedes it).")

    def review(sop_uid: str, request: gr.Request):
        user = user_of(request)
        if not sop_uid or not node.review(sop_uid, user):
            return "Open a study first.", worklist_frame(node, own)
        log.info("worklist: SOPInstanceUID %s marked reviewed", sop_uid)
        return summary(node.instance(sop_uid)), worklist_frame(node, own)

    with gr.Tab("Worklist", elem_id="tab-worklist"):
        gr.Markdown(f"Studies sent to the DICOM node, highest {predictor.score_name} first; refreshed every "
                    f"{refresh_s:g} s. Scores support triage; they are not a diagnosis.")
        table = gr.Dataframe(worklist_frame(node, own), interactive=False, elem_id="worklist", wrap=True,
                             column_widths=COLUMN_WIDTHS, max_height=420)
        with gr.Row():
            chosen = gr.Textbox(label="SOPInstanceUID", max_lines=1, elem_id="worklist-uid", scale=3)
            open_button = gr.Button("Open", elem_id="worklist-open", scale=1)
        status = gr.Textbox(label="Study", interactive=False, elem_id="worklist-status")
        with gr.Row():
            with gr.Column():
                image = gr.HTML(elem_id="worklist-image")
            with gr.Column():
                findings = gr.Dataframe(label=f"Per finding: {predictor.score_name} and decision", interactive=False,
                                        elem_id="worklist-findings")
                heat_button = gr.Button("Show heat map (qualitative explanation)", elem_id="worklist-heat")
                heat = gr.HTML(elem_id="worklist-heatmap")
                review_button = gr.Button("Mark reviewed", variant="primary", elem_id="worklist-review")
                complete_button = gr.Button("Study complete: make its study result now", elem_id="study-complete")
                gr.Markdown("Your verdicts: one per finding you read, all saved in one step (blank: no verdict). "
                            "Nothing is pre-selected; the model's call is in the table above.")
                with gr.Group(elem_id="verdict-grid"):
                    grid = [gr.Radio(list(VERDICTS), value=None, label=finding, elem_id=verdict_id(finding))
                            for finding in labels]
                priority = gr.Radio(list(PRIORITY_VERDICTS), value=None, label="Priority appropriate?",
                                    elem_id="verdict-priority")
                save_button = gr.Button("Save verdict", elem_id="verdict-save")
                verdicts = gr.Textbox(label="Verdicts (latest counts; every one is kept)", interactive=False,
                                      elem_id="verdicts", lines=3)
        opened = [chosen, status, image, findings, heat, *grid, priority, verdicts]
        gr.Timer(refresh_s).tick(refresh, None, table, api_name=False, show_progress="hidden")
        open_button.click(open_one, [chosen], opened, api_name=False)
        chosen.submit(open_one, [chosen], opened, api_name=False)
        table.select(pick, [table], opened, api_name=False)
        heat_button.click(heat_map, [chosen], [heat], api_name=False)
        review_button.click(review, [chosen], [status, table], api_name=False)
        complete_button.click(complete_study, [chosen], [status], api_name=False)
        save_button.click(save_verdict, [chosen, priority, *grid], [verdicts], api_name=False)
