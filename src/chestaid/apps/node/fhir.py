"""FHIR R4 out: per scored image a transaction Bundle — a preliminary DiagnosticReport (LOINC 36554-4 "XR Chest
Single view"), the model as a Device, and one Observation per finding (the score as valueQuantity, the decision
as interpretation POS/NEG, the method naming the algorithm, derivedFrom the imaging study) — POSTed to
`--fhir-url` from the durable outbox.

Exactly once: every resource is created conditionally (`ifNoneExist` on an identifier derived from the source
SOPInstanceUID and the run), so a bundle sent again after an outage or a lost answer creates nothing new. The
patient is referenced by the identifier the DICOM header held (PatientID, its issuer when given) and the study
by its Study Instance UID; no free text about the patient beyond them.
"""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request

from chestaid.apps.node.results import FINDING_CODES, Algorithm, derived_uid
from chestaid.inference.calibration import score_name

LOINC, SCT, UCUM = "http://loinc.org", "http://snomed.info/sct", "http://unitsofmeasure.org"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
CHESTAID_CODES = "urn:chestaid:finding"  # a run's own labels where no SNOMED CT code is known
URN_UID = "urn:ietf:rfc:3986"
RADIOLOGY = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD"}]}


def uid_identifier(value: str) -> dict:
    return {"system": URN_UID, "value": f"urn:oid:{value}"}


def finding_concept(label: str) -> dict:
    if label in FINDING_CODES:
        code, _, meaning = FINDING_CODES[label]
        return {"coding": [{"system": SCT, "code": code, "display": meaning}], "text": label}
    return {"coding": [{"system": CHESTAID_CODES, "code": label, "display": label.replace("_", " ")}], "text": label}


def patient_of(source) -> dict | None:
    """The patient as the DICOM header identifies it (PatientID, its issuer when given); None without one."""
    patient_id = str(source.get("PatientID", "") or "")
    issuer = str(source.get("IssuerOfPatientID", "") or "")
    return ({"identifier": {"value": patient_id, **({"system": f"urn:dicom:issuer:{issuer}"} if issuer else {})}}
            if patient_id else None)


def study_of(source) -> dict:
    return {"identifier": uid_identifier(str(source.StudyInstanceUID)), "type": "ImagingStudy"}


def device_entry(algorithm: Algorithm) -> tuple[str, dict]:
    """(its reference, the bundle entry) of the model as a Device, created once per run."""
    device_key = derived_uid("chestaid", "device", algorithm.run_name, algorithm.weights_sha256)
    device_ref = f"urn:uuid:{_uuid(device_key)}"
    scores = score_name(algorithm.calibrated)
    return device_ref, bundle_entry(device_ref, "Device", {
        "resourceType": "Device", "identifier": [uid_identifier(device_key)],
        "deviceName": [{"name": f"chestaid {algorithm.run_name}"[:64], "type": "model-name"}],
        "version": [{"value": algorithm.version}],
        "note": [{"text": f"weights sha256 {algorithm.weights_sha256}; its numbers are {scores}s, not "
                          "probabilities; triage support, not a diagnosis"}]}, device_key)


def finding_entries(key: str, algorithm: Algorithm, labels: list[str], risk, decisions, patient: dict | None,
                    study: dict, device_ref: str, status: str = "preliminary",
                    update: bool = False) -> tuple[list[dict], list[dict]]:
    """(the references, the bundle entries) of one Observation per finding, keyed under `key`."""
    scores = score_name(algorithm.calibrated)
    references, entries = [], []
    for k, label in enumerate(labels):
        obs_key = derived_uid(key, label)
        ref = f"urn:uuid:{_uuid(obs_key)}"
        references.append({"reference": ref})
        entries.append(bundle_entry(ref, "Observation", {
            "resourceType": "Observation", "identifier": [uid_identifier(obs_key)], "status": status,
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                      "code": "imaging"}]}],
            "code": finding_concept(label), **({"subject": patient} if patient else {}),
            "valueQuantity": {"value": round(float(risk[k]), 6), "unit": scores, "system": UCUM, "code": "1"},
            "interpretation": [{"coding": [{"system": INTERPRETATION, "code": "POS" if decisions[k] else "NEG"}],
                                "text": f"{'present' if decisions[k] else 'absent'} at the run's threshold"}],
            "method": {"text": f"chestaid {algorithm.version}, run {algorithm.run_name} ({scores})"},
            "device": {"reference": device_ref}, "derivedFrom": [study]}, obs_key, update))
    return references, entries


def report_bundle(source, algorithm: Algorithm, labels: list[str], risk, decisions) -> tuple[dict, str]:
    """The transaction Bundle of one scored image (`source`: its DICOM header), and the UID that keys it (its
    DiagnosticReport's identifier, the outbox's result UID)."""
    key = derived_uid("chestaid", "fhir", str(source.SOPInstanceUID), algorithm.run_name, algorithm.weights_sha256)
    patient, study = patient_of(source), study_of(source)
    device_ref, device = device_entry(algorithm)
    observations, entries = finding_entries(key, algorithm, labels, risk, decisions, patient, study, device_ref)
    report_ref = f"urn:uuid:{_uuid(key)}"
    report = bundle_entry(report_ref, "DiagnosticReport", {
        "resourceType": "DiagnosticReport", "identifier": [uid_identifier(key)], "status": "preliminary",
        "category": [RADIOLOGY], "code": {"coding": [{"system": LOINC, "code": "36554-4",
                                                     "display": "XR Chest Single view"}]},
        **({"subject": patient} if patient else {}), "imagingStudy": [study], "result": observations,
        "conclusion": f"Preliminary, unverified machine result ({score_name(algorithm.calibrated)}s): triage "
                      "support, not a diagnosis."}, key)
    return {"resourceType": "Bundle", "type": "transaction", "entry": [device, *entries, report]}, key


def _uuid(uid: str) -> str:
    import uuid

    return str(uuid.uuid5(uuid.NAMESPACE_OID, uid))


def bundle_entry(full_url: str, kind: str, resource: dict, key: str, update: bool = False) -> dict:
    """A transaction entry keyed by its identifier: a conditional create (`ifNoneExist`: sent twice, made once),
    or with `update` a conditional update (PUT `kind?identifier=…`: made once, replaced by a later version)."""
    search = f"identifier={URN_UID}|urn:oid:{key}"
    request = ({"method": "PUT", "url": f"{kind}?{search}"} if update
               else {"method": "POST", "url": kind, "ifNoneExist": search})
    return {"fullUrl": full_url, "resource": resource, "request": request}


def post_bundle(url: str, bundle_json: bytes, timeout: float, context=None) -> None:
    """POST a transaction Bundle to the FHIR server's base; raises OSError unless it answers 2xx."""
    request = urllib.request.Request(url.rstrip("/"), data=bundle_json, method="POST",
                                     headers={"Content-Type": "application/fhir+json",
                                              "Accept": "application/fhir+json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            response.read()
    except urllib.error.HTTPError as e:  # its body may quote the resource (a patient identifier): not kept
        raise OSError(f"HTTP {e.code} from {url}") from e
    except http.client.HTTPException as e:
        raise OSError(f"no valid HTTP answer from {url} ({type(e).__name__})") from e


def bundle_bytes(bundle: dict) -> bytes:
    return json.dumps(bundle, indent=1).encode()
