"""The node's worklist on the page (`chestaid serve RUN --store DIR`): one row per study, highest risk first,
refreshed as studies arrive; open a study for its images (each with its state and reason: scored, not read,
refused …) and its highest-risk image; open an image for its picture, per-finding risk scores and decisions, the
heat map on demand, and "mark reviewed"; verdicts per image or for the whole study (given to each of its read
images). Every open, heat map, review and verdict is audited in the store (time, user, action, SOPInstanceUID)."""

from __future__ import annotations

import html
import logging

import gradio as gr
import numpy as np
import pandas as pd

from chestaid.store import PRIORITY, PRIORITY_VERDICTS, VERDICTS, Store
from chestaid.apps.page.display import heat_map_html, picture_html, score_text, user_of
from chestaid.apps.page.inputs import plain
from chestaid.apps.page.worklist_cells import (FINDING_COLUMNS, STUDY_WIDTHS, _cleared, _when, findings_frame,
                                               header_text, heat_map_refusal, images_frame, images_summary,
                                               nodes_text, notifications_frame, study_members, studies_frame,
                                               tier_text, verdict_id, verdicts_text)

log = logging.getLogger(__name__)
NO_VERDICT = "Give a verdict on at least one finding (present, absent or can't tell), or on the priority."


def worklist_tab(node: Store, predictor, explainer, own: dict, refresh_s: float = 2.0) -> None:
    """Add the Worklist tab to the Blocks being built; `own` is the page's run identity."""
    labels = list(predictor.task.labels)

    def _given(chosen: tuple, priority: str | None) -> dict[str, str]:
        """The grid's verdicts (blank: none) and the priority's, as the store takes them."""
        given = {finding: verdict for finding, verdict in zip(labels, chosen) if verdict}
        return {**given, PRIORITY: priority} if priority else given

    def refresh():
        return studies_frame(node), notifications_frame(node), tier_text(node), nodes_text(node) if node.shared else ""

    def acknowledge(study_uid: str, request: gr.Request):
        study_uid = (study_uid or "").strip()
        waited = node.acknowledge(study_uid, user_of(request)) if study_uid else None
        if waited is None:
            return "This study has no open critical notification.", notifications_frame(node)
        log.info("worklist: study %s: critical notification acknowledged after %.0f s", study_uid, waited)
        return (f"Critical notification acknowledged after {waited / 60:.1f} min; no one else will be called.",
                notifications_frame(node))

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
            return (sop_uid, "No such image in the worklist.", "", pd.DataFrame(columns=FINDING_COLUMNS), "",
                    *_cleared(labels), "")
        node.audit(user_of(request), "view", sop_uid)
        log.info("worklist: opened SOPInstanceUID %s", sop_uid)
        image, _why = predictor.read(str(node.file_of(instance)))
        picture = picture_html(np.asarray(image), "the image") if image is not None else ""
        return (sop_uid, summary(instance), picture, findings_frame(instance, own), "", *_cleared(labels),
                verdicts_text(node, sop_uid))

    def pick(frame: pd.DataFrame, evt: gr.SelectData, request: gr.Request):
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        return open_one(str(frame.iloc[row]["SOPInstanceUID"]), request)

    def open_study(study_uid: str, request: gr.Request):
        """The study's images, and its highest-risk scored image opened (else its first)."""
        study_uid = (study_uid or "").strip()
        members = study_members(node).get(study_uid) if study_uid else None
        if not members:
            return (study_uid, images_frame([], own), "No such study in the worklist.", *open_one("", request))
        scored = [i for i in members if i["state"] == "scored" and i["risk"] is not None]
        first = max(scored, key=lambda i: i["risk"]) if scored else members[0]
        return (study_uid, images_frame(members, own), f"Study {plain(study_uid, 64)}: {images_summary(members)}",
                *open_one(first["sop_uid"], request))

    def pick_study(frame: pd.DataFrame, evt: gr.SelectData, request: gr.Request):
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        return open_study(str(frame.iloc[row]["StudyInstanceUID"]), request)

    def save_study_verdict(study_uid: str, priority: str | None, request: gr.Request, *chosen: str | None):
        """The same verdicts for every read image of the study (a verdict on a study maps onto its read images)."""
        read = [i["sop_uid"] for i in study_members(node).get((study_uid or "").strip(), []) if i["state"] == "scored"]
        if not read:
            return "Open a study with a read image first."
        given = _given(chosen, priority)
        if not given:
            return NO_VERDICT
        for sop_uid in read:
            node.add_verdicts(sop_uid, given, user_of(request), "page (study)")
        log.info("worklist: study %s: %d verdict(s) saved on %d read image(s)", study_uid, len(given), len(read))
        return f"Study verdicts saved on its {len(read)} read image(s).\n" + verdicts_text(node, read[0])

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
        given = _given(chosen, priority)
        if not given:
            return NO_VERDICT
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
            return "Open an image first.", studies_frame(node)
        log.info("worklist: SOPInstanceUID %s marked reviewed", sop_uid)
        return summary(node.instance(sop_uid)), studies_frame(node)

    with gr.Tab("Worklist", elem_id="tab-worklist"):
        gr.Markdown(f"Studies sent to the DICOM node, highest {predictor.score_name} first; refreshed every "
                    f"{refresh_s:g} s. Scores support triage; they are not a diagnosis.")
        open_notices = gr.Dataframe(notifications_frame(node), label="Open critical notifications (acknowledge: "
                                    "open the study, then 'Acknowledge critical finding')", interactive=False,
                                    elem_id="notifications", wrap=True, max_height=200)
        tier = gr.Textbox(tier_text(node), label="Likely-normal tier", interactive=False, elem_id="tier-status",
                          max_lines=2)
        nodes = gr.Textbox(nodes_text(node) if node.shared else "", label="Nodes sharing this store",
                           interactive=False, elem_id="nodes-status", max_lines=3, visible=node.shared)
        table = gr.Dataframe(studies_frame(node), interactive=False, elem_id="worklist", wrap=True,
                             column_widths=STUDY_WIDTHS, max_height=420)
        with gr.Row():
            study_uid = gr.Textbox(label="StudyInstanceUID", max_lines=1, elem_id="worklist-study", scale=3)
            open_study_button = gr.Button("Open study", elem_id="worklist-open-study", scale=1)
        with gr.Row():
            study_status = gr.Textbox(label="Study", interactive=False, elem_id="study-status", scale=3)
            ack_button = gr.Button("Acknowledge critical finding", variant="stop", elem_id="notification-ack", scale=1)
        images = gr.Dataframe(images_frame([], own), label="Its images (select one to open it)", interactive=False,
                              elem_id="study-images", wrap=True, max_height=240)
        with gr.Row():
            chosen = gr.Textbox(label="SOPInstanceUID", max_lines=1, elem_id="worklist-uid", scale=3)
            open_button = gr.Button("Open image", elem_id="worklist-open", scale=1)
        status = gr.Textbox(label="Image", interactive=False, elem_id="worklist-status")
        with gr.Row():
            with gr.Column():
                image = gr.HTML(elem_id="worklist-image")
            with gr.Column():
                findings = gr.Dataframe(pd.DataFrame(columns=FINDING_COLUMNS), label=f"Per finding: {predictor.score_name} and "
                                        "decision", interactive=False, elem_id="worklist-findings")
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
                with gr.Row():
                    save_button = gr.Button("Save verdict (this image)", elem_id="verdict-save")
                    save_study_button = gr.Button("Save verdict for the whole study (its read images)",
                                                  elem_id="verdict-save-study")
                verdicts = gr.Textbox(label="Verdicts (latest counts; every one is kept)", interactive=False,
                                      elem_id="verdicts", lines=3)
        opened = [chosen, status, image, findings, heat, *grid, priority, verdicts]
        gr.Timer(refresh_s).tick(refresh, None, [table, open_notices, tier, nodes], api_name=False, show_progress="hidden")
        ack_button.click(acknowledge, [study_uid], [study_status, open_notices], api_name=False)
        open_button.click(open_one, [chosen], opened, api_name=False)
        chosen.submit(open_one, [chosen], opened, api_name=False)
        study_opened = [study_uid, images, study_status, *opened]
        table.select(pick_study, [table], study_opened, api_name=False)
        open_study_button.click(open_study, [study_uid], study_opened, api_name=False)
        study_uid.submit(open_study, [study_uid], study_opened, api_name=False)
        images.select(pick, [images], opened, api_name=False)
        save_study_button.click(save_study_verdict, [study_uid, priority, *grid], [verdicts], api_name=False)
        heat_button.click(heat_map, [chosen], [heat], api_name=False)
        review_button.click(review, [chosen], [status, table], api_name=False)
        complete_button.click(complete_study, [chosen], [status], api_name=False)
        save_button.click(save_verdict, [chosen, priority, *grid], [verdicts], api_name=False)
