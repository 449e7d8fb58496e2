"""The store as a worklist, highest risk first (what `chestaid worklist` prints): one row per study, each with its
images; or one row per instance."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path

from chestaid.store import STATES, Decision, Store
from chestaid.core.errors import ChestaidError

COLUMNS = ["received", "PatientID", "AccessionNumber", "StudyInstanceUID", "SOPInstanceUID", "state", "reason",
           "risk", "top_finding", "flagged", "results", "study_complete"]


def _state(instance: dict) -> str:
    """The row's state; a scored instance whose results could not be made is its own state (the reason says why:
    the PACS study lacks its result)."""
    if Decision.of(instance).without_results:
        return "scored-without-results"
    return instance["state"]


def rows_of(root: str | Path, status: str | None = None, quiet_period: float = 60.0) -> list[dict]:
    """The worklist rows of the store at `root`; a study is complete after `quiet_period` s without a new image."""
    if status is not None and status not in (*STATES, "conflict"):
        raise ChestaidError(f"--status must be one of {', '.join(STATES)} or conflict, got {status!r}")
    store = Store.open(root)
    try:
        instances = store.instances(status) if status != "conflict" else []
        last = {}
        now = time.time()
        rows = []
        for i in instances:
            study = i["study_uid"]
            if study not in last:
                last[study] = store.last_received(study) or 0.0
            decided = Decision.of(i)
            rows.append({
                "received": datetime.fromtimestamp(i["received_at"], timezone.utc).isoformat(timespec="seconds"),
                "PatientID": i["patient_id"], "AccessionNumber": i["accession"], "StudyInstanceUID": study,
                "SOPInstanceUID": i["sop_uid"], "state": _state(i), "reason": i["reason"], "risk": i["risk"],
                "top_finding": i["top_finding"], "flagged": i["flagged"], "results": i["results"] or "",
                "study_complete": now - last[study] >= quiet_period, "SOPClassUID": i["sop_class"],
                "Modality": i["modality"], "calling_ae": i["calling_ae"],
                "scores": {name: {"risk": s.risk, "decision": int(s.decision)} for name, s in decided.scores.items()},
                "refusal": decided.refusal.value, "model": decided.model})
        if status in (None, "conflict"):  # kept, never scored: their own state, the reason names both studies
            rows += [{"received": datetime.fromtimestamp(c["received_at"], timezone.utc).isoformat(timespec="seconds"),
                      "PatientID": "", "AccessionNumber": "", "StudyInstanceUID": c["study_uid"],
                      "SOPInstanceUID": c["sop_uid"], "state": "conflict", "reason": c["reason"], "risk": None,
                      "top_finding": "", "flagged": "", "results": "", "study_complete": True, "SOPClassUID": "",
                      "Modality": "", "calling_ae": c["calling_ae"], "scores": {}, "model": None}
                     for c in store.conflicts()]
        return rows
    finally:
        store.close()


STUDY_COLUMNS = ["StudyInstanceUID", "PatientID", "AccessionNumber", "instances", "scored", "not_read", "risk",
                 "top_finding", "flagged", "result_version", "result_uid", "reported"]


def study_rows(root: str | Path) -> list[dict]:
    """The worklist by study, highest risk first: per study its instances, how many were scored and not read, the
    highest risk among them and its finding, every finding flagged on any image, its current study result (version,
    UID), and its images (`images`: each with its state, reason, view, risk and top finding, in the order received)."""
    store = Store.open(root)
    try:
        studies = {uid: rows for uid, rows in store.instances_by_study().items() if rows[0]["study_uid"]}
        results = {s["study_uid"]: s for s in store.studies()}
    finally:
        store.close()
    rows = []
    for uid, members in studies.items():
        scored = [i for i in members if i["state"] == "scored" and i["risk"] is not None]
        top = max(scored, key=lambda i: i["risk"], default=None)
        result = results.get(uid, {})
        reported = result.get("reported_at")
        rows.append({"StudyInstanceUID": uid, "PatientID": members[0]["patient_id"],
                     "AccessionNumber": members[0]["accession"], "instances": len(members), "scored": len(scored),
                     "not_read": sum(i["state"] == "not read" for i in members),
                     "risk": top["risk"] if top else None, "top_finding": top["top_finding"] if top else "",
                     "flagged": "|".join(sorted({f for i in scored for f in i["flagged"].split("|") if f})),
                     "result_version": result.get("version") or None, "result_uid": result.get("result_uid", ""),
                     "reported": datetime.fromtimestamp(reported, timezone.utc).isoformat(timespec="seconds")
                     if reported else "",
                     "images": [{"SOPInstanceUID": i["sop_uid"], "state": _state(i), "reason": i["reason"],
                                 "view": i["view"], "Modality": i["modality"], "risk": i["risk"],
                                 "top_finding": i["top_finding"], "flagged": i["flagged"]}
                                for i in sorted(members, key=lambda i: i["received_at"])]})
    return sorted(rows, key=lambda r: (r["risk"] is None, -(r["risk"] or 0)))
