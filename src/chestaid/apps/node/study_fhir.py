"""FHIR R4 out, per study: one DiagnosticReport per study (LOINC 18748-4 "Diagnostic imaging study": a study may
hold one view or several), with one Observation per finding carrying the study's result (the highest score of its
read images, present when any of them is), the model as a Device, and a conclusion that lists the images not read
and why. A transaction Bundle POSTed from the durable outbox.

Exactly once per study: the report and its observations are keyed by the study and the run, and written by
conditional update (PUT `DiagnosticReport?identifier=…`), so a bundle sent again after an outage or a lost answer
changes nothing, and an amended study result (an image after the first was sent) replaces the report — status
"amended" — instead of adding a second one. An amended version supersedes an older one not yet sent (the writer
`replaces`), so the server never ends on an older version.

With the site's triage rules, the bundle also holds a **Task** (status requested, intent order) whose `priority`
(stat / urgent / routine) is the study's level and whose `focus` is the imaging study: FHIR worklists key on a Task's
priority, and chestaid must not rewrite the order itself (the clinician's ServiceRequest keeps its own priority).
"""

from __future__ import annotations

import uuid

# FHIR request-priority codes of the levels
TASK_PRIORITY = {"critical": "stat", "urgent": "urgent", "routine": "routine", "likely normal": "routine"}

from chestaid.apps.node.fhir import (LOINC, RADIOLOGY, bundle_bytes, bundle_entry, device_entry, finding_entries,
                                     patient_of, study_of, uid_identifier)
from chestaid.apps.node.result_types import Kind, ResultObject, StudyResult
from chestaid.apps.node.results import derived_uid
from chestaid.inference.calibration import score_name


def study_report_bundle(result: StudyResult) -> tuple[dict, str]:
    """The transaction Bundle of one study result, and the UID of this version (the outbox's result UID)."""
    algorithm, first = result.algorithm, result.images[0].source
    study_uid = str(first.StudyInstanceUID)
    key = derived_uid("chestaid", "fhir-study", study_uid, algorithm.run_name, algorithm.weights_sha256)
    version_uid = derived_uid(key, str(result.version), *sorted(result.covered))
    status = "preliminary" if result.version == 1 else "amended"
    patient, study = patient_of(first), study_of(first)
    device_ref, device = device_entry(algorithm)
    entries, observations = [device], []
    if result.risk is not None:
        observations, found = finding_entries(key, algorithm, result.labels, result.risk, result.decisions, patient,
                                              study, device_ref, status, update=True)
        entries += found
    not_read = [f"{i.source.get('SOPInstanceUID', '?')} {i.state}: {i.reason}" for i in result.images
                if i.risk is None]
    scores = score_name(algorithm.calibrated)
    conclusion = (f"Preliminary, unverified machine result ({scores}s, version {result.version}): triage support, "
                  f"not a diagnosis. {len(result.scored)} of {len(result.covered)} image(s) read; per finding the "
                  "highest score of the read images."
                  + (f" {result.not_analysed}." if result.not_analysed else "")
                  + (" Not read: " + "; ".join(not_read) if not_read else ""))
    entries.append(bundle_entry(f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_OID, version_uid)}", "DiagnosticReport", {
        "resourceType": "DiagnosticReport", "identifier": [uid_identifier(key)], "status": status,
        "category": [RADIOLOGY], "code": {"coding": [{"system": LOINC, "code": "18748-4",
                                                     "display": "Diagnostic imaging study"}]},
        **({"subject": patient} if patient else {}), "imagingStudy": [study],
        **({"result": observations} if observations else {}),  # FHIR JSON has no empty arrays
        "conclusion": conclusion[:4000]}, key, update=True))
    if result.triage is not None:  # what a FHIR worklist keys on: a reading Task with the study's priority
        t = result.triage
        task_key = derived_uid(key, "task")
        entries.append(bundle_entry(f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_OID, task_key)}", "Task", {
            "resourceType": "Task", "identifier": [uid_identifier(task_key)], "status": "requested",
            "intent": "order", "priority": TASK_PRIORITY[t.level],
            "code": {"text": "Read this imaging study (chestaid triage)"}, "focus": study,
            **({"for": patient} if patient else {}),
            "description": (f"Triage level {t.level} under the site's rules {t.rules}"
                            + (f", raised by {', '.join(t.raised)}" if t.raised else "")
                            + (f"; ordered {t.ordered}, never lowered" if t.ordered else "")
                            + f"; model {algorithm.run_name}")[:1000]}, task_key, update=True))
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}, version_uid


def write(result: StudyResult) -> ResultObject:
    bundle, uid = study_report_bundle(result)
    return ResultObject(Kind.STUDY_FHIR, uid, "FHIR Bundle", bundle_bytes(bundle), ".json")
