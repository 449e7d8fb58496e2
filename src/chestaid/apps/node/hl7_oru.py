"""HL7 v2.5.1 out, per study: one ORU^R01 a RIS's reading worklist can sort by — the study's triage level as the
order's priority (TQ1-9, table 0485: S stat, A ASAP, R routine), one OBX per finding (the study's score, "A" when
flagged), the level as a coded OBX, the model and the rules by name, the images not read. Made once per study
version and sent over MLLP from the durable outbox (apps/node/mllp.py).

The patient and the order are identified as the DICOM header does (PatientID with its issuer, AccessionNumber as the
filler order number, StudyInstanceUID); the name is carried in PID-5 because v2.5.1 requires it, and never logged.
The message control ID is derived from the study version, so a RIS can recognise a resend.
"""

from __future__ import annotations

import hashlib
import time

from chestaid.apps.node.result_types import Kind, ResultObject, StudyResult
from chestaid.apps.node.results import FINDING_CODES, derived_uid
from chestaid.inference.calibration import score_name
from chestaid.inference.triage_rules import Level

SCT = "SCT"  # HL7's name for SNOMED CT (table 0396)
LOCAL = "99CHESTAID"


def escape(value: object) -> str:
    """A field value with HL7's delimiters escaped and no line breaks."""
    text = str(value if value is not None else "")
    for char, code in (("\\", "\\E\\"), ("|", "\\F\\"), ("^", "\\S\\"), ("&", "\\T\\"), ("~", "\\R\\")):
        text = text.replace(char, code)
    return " ".join(text.split())


def _name(source) -> str:
    name = source.get("PatientName")
    if not name:
        return "UNKNOWN"
    parts = [escape(getattr(name, p, "") or "") for p in ("family_name", "given_name", "middle_name",
                                                            "name_suffix", "name_prefix")]
    return "^".join(parts).rstrip("^") or "UNKNOWN"


def _finding(label: str) -> str:
    if label in FINDING_CODES:
        code, _, meaning = FINDING_CODES[label]
        return f"{code}^{escape(meaning)}^{SCT}"
    return f"{escape(label.upper()[:20])}^{escape(label.replace('_', ' '))}^{LOCAL}"


def _fields(values: dict[int, str], first: int = 1) -> str:
    """A segment's fields from `first` on (field number → its text), empty ones between them."""
    return "|".join(values.get(n, "") for n in range(first, max(values) + 1))


def oru_message(result: StudyResult, made_at: float | None = None) -> tuple[str, str]:
    """(the ER7 text of the ORU^R01 of one study result, its message control ID)."""
    algorithm, first = result.algorithm, result.images[0].source
    study_uid = str(first.StudyInstanceUID)
    uid = derived_uid("chestaid", "hl7", study_uid, str(result.version), *sorted(result.covered),
                      algorithm.run_name, algorithm.weights_sha256)
    control = hashlib.sha256(uid.encode()).hexdigest()[:20].upper()
    when = time.strftime("%Y%m%d%H%M%S", time.gmtime(made_at or time.time())) + "+0000"
    patient_id = escape(first.get("PatientID", "") or "UNKNOWN")
    issuer = escape(first.get("IssuerOfPatientID", "") or "")
    accession = escape(first.get("AccessionNumber", "") or "")
    triage = result.triage
    level = Level(triage.level) if triage else None
    status = "P" if result.version == 1 else "C"  # preliminary; a corrected (amended) result after a late image
    scores = score_name(algorithm.calibrated)
    segments = [
        "MSH|^~\\&|" + _fields({3: "CHESTAID", 4: escape(algorithm.run_name[:20]), 5: "RIS", 7: when,
                                 9: "ORU^R01^ORU_R01", 10: control, 11: "P", 12: "2.5.1", 15: "AL", 16: "NE",
                                 18: "UNICODE UTF-8"}, 3),
        "PID|" + _fields({1: "1", 3: patient_id + (f"^^^{issuer}" if issuer else ""), 5: _name(first),
                          8: escape(first.get("PatientSex", "") or "")}),
        "ORC|" + _fields({1: "RE", 3: f"{accession}^CHESTAID"}),
        "OBR|" + _fields({1: "1", 3: f"{accession}^CHESTAID", 4: "18748-4^Diagnostic imaging study^LN",
                          7: escape(first.get("StudyDate", "") or ""), 20: escape(study_uid[:199]), 22: when,
                          24: "CR", 25: status})]
    if level is not None:
        code, text = level.hl7
        segments.append("TQ1|" + _fields({1: "1", 9: f"{code}^{text}^HL70485"}))
    obx = []
    if triage is not None:
        obx.append(f"CWE|TRIAGE^Triage level under the site's rules^{LOCAL}||{triage.level.upper().replace(' ', '_')}^"
                   f"{escape(triage.level)}^{LOCAL}||||||{status}")
        obx.append(f"ST|RULES^Triage rules version^{LOCAL}||{escape(triage.rules[:150])}||||||{status}")
        if triage.tier_off:
            obx.append(f"ST|TIER^Likely-normal tier^{LOCAL}||{escape(('off: ' + triage.tier_off)[:150])}||||||{status}")
    if result.risk is not None:
        for k, label in enumerate(result.labels):
            obx.append(f"NM|{_finding(label)}||{float(result.risk[k]):.6f}|1^{escape(scores)}^UCUM||"
                       f"{'A' if result.decisions[k] else 'N'}|||{status}")
    model = (f"chestaid {algorithm.version} run {algorithm.run_name} weights sha256 {algorithm.weights_sha256[:16]} "
             f"({scores}s, not probabilities; triage support, not a diagnosis)")
    obx.append(f"ST|MODEL^Algorithm^{LOCAL}||{escape(model[:150])}||||||{status}")
    not_read = [f"{i.source.get('SOPInstanceUID', '?')} {i.state}: {i.reason}" for i in result.images
                if i.risk is None]
    if not_read or result.not_analysed:
        obx.append(f"ST|NOTREAD^Images not read^{LOCAL}||{escape(('; '.join(not_read) or result.not_analysed)[:150])}"
                   f"||||||{status}")
    segments += [f"OBX|{n}|{body}" for n, body in enumerate(obx, 1)]
    return "\r".join(segments) + "\r", control


def write(result: StudyResult) -> ResultObject:
    text, control = oru_message(result)
    uid = derived_uid("chestaid", "hl7", control)
    return ResultObject(Kind.STUDY_HL7, uid, "HL7 ORU^R01", text.encode(), ".hl7")
