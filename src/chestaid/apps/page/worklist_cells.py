"""The cells of the page's worklist: plain text from the store's rows (never markup), one row per study with its
images, and per image its header line, findings and verdicts."""

from __future__ import annotations

import re
from datetime import datetime, timezone

import gradio as gr
import pandas as pd

from chestaid.store import Decision, Store
from chestaid.apps.page.display import score_text
from chestaid.apps.page.inputs import plain
from chestaid.inference.identity import describe_model, same_model

STUDY_COLUMNS = ["risk", "top finding", "flagged", "PatientID", "AccessionNumber", "StudyDate", "images", "result",
                 "reviewed", "received", "StudyInstanceUID"]
STUDY_WIDTHS = ["80px", "140px", "180px", "110px", "120px", "100px", "220px", "90px", "150px", "150px", "300px"]
IMAGE_COLUMNS = ["view", "state", "risk", "top finding", "reason", "model", "SOPInstanceUID"]
FINDING_COLUMNS = ["finding", "risk score", "threshold", "decision"]


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
    return pd.DataFrame(rows, columns=FINDING_COLUMNS)


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


def study_members(node: Store) -> dict[str, list[dict]]:
    """The store's instances but the ignored ones, by study (an instance without a study UID is its own), each
    study's in the order received."""
    return {uid: sorted(rows, key=lambda i: i["received_at"]) for uid, rows in node.instances_by_study().items()}


def images_summary(members: list[dict]) -> str:
    """"2 images: 1 scored, 1 not read" and so on."""
    counts: dict[str, int] = {}
    for i in members:
        counts[i["state"]] = counts.get(i["state"], 0) + 1
    return f"{len(members)} image(s): " + ", ".join(f"{n} {state}" for state, n in counts.items())


def studies_frame(node: Store) -> pd.DataFrame:
    """One row per study, highest study risk (the highest of its scored images) first, as plain text cells."""
    results = {s["study_uid"]: s for s in node.studies()}
    rows = []
    for uid, members in study_members(node).items():
        scored = [i for i in members if i["state"] == "scored" and i["risk"] is not None]
        top = max(scored, key=lambda i: i["risk"], default=None)
        reviewed = [i for i in members if i.get("reviewed_by")]
        result = results.get(uid)
        rows.append({"risk": score_text(top["risk"]) if top else "", "top finding": plain(top["top_finding"], 60)
                     if top else "", "flagged": plain(", ".join(sorted({f for i in scored for f in
                                                                         i["flagged"].split("|") if f})), 120),
                     "PatientID": plain(members[0]["patient_id"], 64),
                     "AccessionNumber": plain(members[0]["accession"], 64), "StudyDate": study_date(members[0]),
                     "images": images_summary(members),
                     "result": f"v{result['version']}" if result and result["version"] else "",
                     "reviewed": plain(reviewed[-1]["reviewed_by"], 64) if reviewed else "",
                     "received": _when(members[-1]["received_at"]), "StudyInstanceUID": plain(uid, 64),
                     "_risk": top["risk"] if top else -1.0})
    rows.sort(key=lambda r: -r["_risk"])
    return pd.DataFrame(rows, columns=STUDY_COLUMNS)


def images_frame(members: list[dict], own: dict) -> pd.DataFrame:
    """A study's images, in the order received: view, state, risk, top finding, reason, model."""
    rows = [{"view": view_of(i), "state": i["state"], "risk": score_text(i["risk"]),
             "top finding": plain(i["top_finding"], 60), "reason": plain(i["reason"], 160),
             "model": plain(model_cell(i, own), 100), "SOPInstanceUID": plain(i["sop_uid"], 64)} for i in members]
    return pd.DataFrame(rows, columns=IMAGE_COLUMNS)


def notifications_frame(node: Store) -> pd.DataFrame:
    """The open critical notifications, oldest first: study, accession, findings, since when, contact reached."""
    rows = [{"since": _when(n["created_at"]), "StudyInstanceUID": plain(n["study_uid"], 64),
             "AccessionNumber": plain(n["summary"].get("accession", ""), 64),
             "findings": plain(", ".join(n["summary"].get("findings", {})), 120), "contact": n["contact"] + 1}
            for n in node.notifications(open_only=True)]
    return pd.DataFrame(rows, columns=["since", "StudyInstanceUID", "AccessionNumber", "findings", "contact"])


def tier_text(node: Store) -> str:
    """The likely-normal tier's state as the page says it (live, shadow — recorded, never applied — or off, why)."""
    tier = node.tier()
    if tier is None:
        return "none (no likely_normal section in the site's rules)"
    said = {"live": "LIVE: studies whose every finding is below the rule-out point go to 'likely normal'",
            "shadow": "shadow: recorded, never applied (chestaid triage report shows its evidence)",
            "off": "OFF"}.get(tier["state"], tier["state"])
    return f"{said}{': ' + plain(tier['reason'], 300) if tier['reason'] else ''} (since {_when(tier['at'])})"


def nodes_text(node: Store) -> str:
    """The node processes sharing the store, each alive or gone (what a gone one claimed is the others' now)."""
    found = node.nodes()
    if not found:
        return "no node registered (a node on a shared store registers when it starts)"
    return "; ".join(f"{plain(n['name'], 80)} on {plain(n['host'], 64)}: "
                     + ("alive" if n["alive"] else f"GONE since {_when(n['seen_at'])} (its work taken over)")
                     for n in found)
